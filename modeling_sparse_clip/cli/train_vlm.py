"""`sparse-clip-train-vlm`: train the sparse-feature VLM (frozen Sparse CLIP image activations -> MLP
adapter -> small Llama) on the embedded corpus.

    sparse-clip-train-vlm vlm_embedded                                   # after `make main`; ~6 min on 2 cores
    sparse-clip-train-vlm vlm_embedded --num_train_epochs 2 --output_dir /tmp/vlm

Arguments: `VLMModelArguments`, `VLMDataArguments`, `VLMTrainingArguments` in
`modeling_sparse_clip.training.vlm`, whose `train` is the library call.
"""

from ..training.vlm import parse_args, train
from . import run_command


def run(argv):
    return train(*parse_args(argv))


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()
