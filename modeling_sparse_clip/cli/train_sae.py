"""`sparse-clip-train-sae`: train a post-hoc SAE (TopK or ReLU+L1) on a dense model's image AND text embeddings.

    sparse-clip-train-sae --dense_model outputs/dense --width 4096 --kind topk --k 32 --output_dir outputs/sae_topk

The SAE folder (sae.safetensors + sae_config.json, naming its dense model) is then evaluated next to
the models with `sparse-clip-bench --models ... --sae outputs/sae_topk`: the paper's "dense model +
post-hoc SAE" baseline (Tables 1 and 3a). Use the sparse model's width for a like-for-like comparison.
Training data: the embedded corpus's train split by default (never the held-out sets), or any
image-text dataset the data package loads (`load_dataset` id, local folder, webdataset shards).
The library call is `modeling_sparse_clip.sae.train_sae_baseline`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from transformers import HfArgumentParser

from ..constants import DATA_CACHE_DIR
from ..sae import train_sae_baseline
from . import run_command


@dataclass
class SAEBaselineArguments:
    dense_model: str = field(metadata={"help": "Folder of the dense model (activation='none') whose embeddings the SAE reads."})
    width: int = field(metadata={"help": "Number of SAE features: the sparse model's projection width for a fair comparison."})
    output_dir: str = field(metadata={"help": "Where to save sae.safetensors + sae_config.json."})
    kind: str = field(default="topk", metadata={"help": "topk or relu_l1."})
    k: int = field(default=32, metadata={"help": "Features kept per input (topk)."})
    l1_coefficient: float = field(default=1e-3, metadata={"help": "L1 weight (relu_l1)."})
    dataset: str = field(default="embedded", metadata={"help": "`embedded` (the corpus train split) or a dataset the data package loads."})
    split: str = field(default="train")
    image_column: str = field(default="image")
    text_column: str = field(default="text")
    max_examples: int | None = field(default=None, metadata={"help": "Use at most this many image-text rows (seeded)."})
    data_cache_dir: str = field(default=str(DATA_CACHE_DIR))
    epochs: int = field(default=50)
    batch_size: int = field(default=256)
    learning_rate: float = field(default=1e-3)
    encode_batch_size: int = field(default=64)
    device: str | None = field(default=None)
    seed: int = field(default=0)
    progress: bool = field(default=True)


def run(argv) -> dict:
    (args,) = HfArgumentParser(SAEBaselineArguments).parse_args_into_dataclasses(args=argv)
    report = train_sae_baseline(**asdict(args))
    print(json.dumps({k: v for k, v in report.items() if k not in ("history", "arguments")}, indent=2))
    return report


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()
