"""`sparse-clip-train`: train or fine-tune a Sparse CLIP with `transformers.Trainer`.

    sparse-clip-train embedded_sparse                                    # a shipped recipe, by name
    sparse-clip-train path/to/recipe.json --learning_rate 1e-3           # a recipe file; flags after it override it
    torchrun --nproc_per_node 8 -m modeling_sparse_clip.cli.train paper_vit_b32
    accelerate launch -m modeling_sparse_clip.cli.train --vision_tower ... --text_tower ... --output_dir ...

Arguments: `ModelArguments`, `DataArguments` and `SparseCLIPTrainingArguments` (every `TrainingArguments`
flag), see `modeling_sparse_clip.training.arguments`. The logit-scale init and cap are in log space:
`--logit_scale_init_value 2.303 --logit_scale_max 4.605` (ln 10, ln 100). The library call is
`modeling_sparse_clip.training.train`.
"""

from ..training.arguments import parse_args
from ..training.sparse_clip import train
from . import run_command


def run(argv):
    return train(*parse_args(argv))


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()
