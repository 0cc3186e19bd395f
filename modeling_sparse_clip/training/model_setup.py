"""The model a training run starts from: new (two towers, named or any folder/Hub id) or fine-tuned, which
tower parameters train, its processor, and the gather its loss uses across ranks."""

from __future__ import annotations

from typing import Callable

import torch
from transformers import AutoModel, AutoProcessor, CLIPTextConfig, CLIPVisionConfig

from ..modeling_sparse_clip import SparseCLIPModel
from .arguments import BUILTIN_TOWERS, ModelArguments


def builtin_tower(name: str) -> torch.nn.Module:
    """One of `BUILTIN_TOWERS`: pretrained (from PyPI packages) or a randomly initialised CLIP tower."""
    from .. import pretrained_towers

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


def load_tower(name: str) -> torch.nn.Module:
    """A named tower (`BUILTIN_TOWERS`) or any transformers model folder / Hub id."""
    return builtin_tower(name) if name in BUILTIN_TOWERS else AutoModel.from_pretrained(name)


def default_processor(args: ModelArguments):
    """The processor named by the arguments, else the one that goes with the model or the towers."""
    if args.processor_name_or_path:
        return AutoProcessor.from_pretrained(args.processor_name_or_path)
    if args.model_name_or_path:
        return AutoProcessor.from_pretrained(args.model_name_or_path)
    if args.vision_tower == "efficientnet_lite0" and args.text_tower == "all-MiniLM-L6-v2":
        from ..pretrained_towers import embedded_processor

        return embedded_processor(image_size=args.image_size, max_length=args.max_text_length)
    if args.vision_tower in BUILTIN_TOWERS and args.vision_tower.startswith("clip-"):
        from ..conversion.clip_processing import build_clip_processor  # OpenAI CLIP's BPE + preprocessing

        return build_clip_processor(image_size=args.image_size, context_length=args.max_text_length)
    raise ValueError("Cannot tell which processor to use: pass --processor_name_or_path (a CLIPProcessor folder or Hub id).")


def set_trainable(tower: torch.nn.Module, spec: str, name: str) -> None:
    """`all` (leave as is), `none` (frozen, and always in eval mode) or comma-separated fragments of the
    parameter names that stay trainable."""
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


def sparse_gather_fn(activation: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The cross-rank gather that sends only non-zeros, for a model with this activation."""
    from .. import sparse_gather

    # relu/topk outputs pass no gradient where they are zero, so sending gradients only at the
    # non-zeros is exact for everything upstream (67x fewer bytes at 1% density, see benchmarks)
    if activation in ("relu", "topk"):
        return sparse_gather.sparse_all_gather_with_sparse_grad
    return sparse_gather.sparse_all_gather_with_grad


def build_model(args: ModelArguments):
    """The model (new or fine-tuned) and its processor."""
    if args.model_name_or_path:
        model = SparseCLIPModel.from_pretrained(args.model_name_or_path)
    else:
        if not (args.vision_tower and args.text_tower):
            raise ValueError("Give --model_name_or_path, or both --vision_tower and --text_tower.")
        model = SparseCLIPModel.from_towers(
            vision=load_tower(args.vision_tower),
            text=load_tower(args.text_tower),
            projection_dim=args.projection_dim,
            expansion_factor=args.expansion_factor,
            activation=args.activation,
            topk_k=args.topk_k,
            l1_coefficient=args.l1_coefficient,
            logit_scale_init_value=args.logit_scale_init_value,
            logit_scale_max=args.logit_scale_max,
            text_pooling=args.text_pooling,
            vision_pooling=args.vision_pooling,
        )
    set_trainable(model.vision_model, args.vision_trainable, "vision")
    set_trainable(model.text_model, args.text_trainable, "text")
    return model, default_processor(args)


__all__ = ["build_model", "builtin_tower", "default_processor", "load_tower", "set_trainable", "sparse_gather_fn"]
