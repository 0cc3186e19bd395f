"""What every converter shares: the options of the converted head (activation, `--sparsify`, logit-scale
cap), assembling the SparseCLIPModel from converted weights, and saving it with the Hub code.

The logit bias (SigLIP-style OpenCLIP models have one) is carried as `config.logit_bias`, a constant
the model adds to its logits: it changes neither softmax direction (zero-shot classification and
retrieval rankings are unchanged) and only matters for sigmoid probabilities.
"""

import math
import os
from dataclasses import dataclass, field

import torch

from ..configuration_sparse_clip import SparseCLIPConfig
from ..constants import HUB_CODE_FILES
from ..modeling_sparse_clip import SparseCLIPModel
from .key_maps import check_shapes
from .sparse_head import choose_activation, signed_rotation_heads

# A log logit scale above this is a linear value passed by mistake: exp(10) = 22,026, far beyond any
# CLIP (OpenCLIP caps at ln 100 = 4.605, the paper at ln 50 = 3.912).
LOG_SCALE_LIMIT = 10.0


def check_log_logit_scale(value: float | None, flag: str = "--logit_scale_max") -> None:
    """Refuse a logit-scale cap that is obviously linear (the flags are in log space, like the parameter)."""
    if value is not None and value > LOG_SCALE_LIMIT:
        raise ValueError(
            f"{flag} {value:g} looks like a linear scale; pass its log (ln {value:g} = {math.log(value):.3f}). "
            "Logit-scale flags are in log space, like the model parameter."
        )


@dataclass
class ConversionOptions:
    """How the converted head is built (the `--activation/--sparsify/--logit_scale_max/--seed` flags)."""

    activation: str = field(
        default="auto",
        metadata={"help": "auto (relu when the projection is wider than both towers, the paper's format; else none), relu or none."},
    )
    sparsify: int | None = field(
        default=None,
        metadata={"help": "Build a wide ReLU head of this width from the dense projection (signed random rotation; see modeling_sparse_clip/conversion/sparse_head.py)."},
    )
    logit_scale_max: float | None = field(
        default=None,
        metadata={"help": "Cap of the logit scale, in LOG space (paper: ln 50 = 3.912). Default: max(ln 100, checkpoint value)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the --sparsify rotation."})

    def __post_init__(self):
        check_log_logit_scale(self.logit_scale_max)


def assemble_sparse_clip(
    text_config: dict,
    vision_config: dict,
    weights: dict[str, torch.Tensor],
    options: ConversionOptions,
    logit_bias: float | None = None,
    what: str = "checkpoint",
) -> SparseCLIPModel:
    """A SparseCLIPModel holding `weights` (SparseCLIP key names, dense projections as in the source)."""
    embed_dim, vision_width = weights["visual_projection.weight"].shape
    text_embed_dim, text_width = weights["text_projection.weight"].shape
    if embed_dim != text_embed_dim:
        raise ValueError(f"{what}: image projection width {embed_dim} != text projection width {text_embed_dim}.")
    activation = choose_activation(options.activation, embed_dim, (vision_width, text_width), options.sparsify)
    projection_dim = embed_dim
    if options.sparsify is not None:
        weights["visual_projection.weight"], weights["text_projection.weight"] = signed_rotation_heads(
            weights["visual_projection.weight"], weights["text_projection.weight"], options.sparsify, seed=options.seed
        )
        projection_dim = options.sparsify

    scale = float(weights["logit_scale"])
    cap = options.logit_scale_max if options.logit_scale_max is not None else max(math.log(100.0), scale)
    if scale > cap:
        if options.sparsify is None:
            raise ValueError(
                f"{what}: its log logit scale {scale:.4f} (scale {math.exp(scale):.1f}) is above --logit_scale_max "
                f"{cap:.4f}; the converted logits would differ from the source. Leave --logit_scale_max unset or raise it."
            )
        print(f"--sparsify: clamping the log logit scale {scale:.4f} to the cap {cap:.4f} for fine-tuning.")
        weights["logit_scale"] = torch.tensor(cap)
        scale = cap

    extra = {"logit_bias": float(logit_bias)} if logit_bias is not None else {}
    config = SparseCLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=projection_dim,
        activation=activation,
        logit_scale_init_value=scale,
        logit_scale_max=cap,
        **extra,
    )
    model = SparseCLIPModel(config)
    check_shapes(weights, model.state_dict(), what)
    model.load_state_dict(weights, strict=True)
    print(
        f"Converted {what}: activation={activation}, projection_dim={projection_dim}, "
        f"logit scale {math.exp(scale):.2f} (cap {math.exp(cap):.1f})" + (f", logit_bias {logit_bias:.4f} (in config)" if extra else "")
    )
    return model.eval()


def save_converted(model: SparseCLIPModel, processor, output_dir: str | os.PathLike) -> None:
    """Weights + config + the two Hub code files + processor into `output_dir`."""
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    missing = [f for f in HUB_CODE_FILES if not os.path.isfile(os.path.join(output_dir, f))]
    if missing:
        raise RuntimeError(f"save_pretrained did not write the Hub code {missing}; is modeling_sparse_clip imported?")
    print(f"Saved to {output_dir}")


def publish_converted(output_dir: str | os.PathLike, repo_id: str) -> None:
    """Push a saved conversion (weights, config, Hub code, processor, model card) as one commit."""
    from ..publishing import push_sparse_clip_to_hub

    result = push_sparse_clip_to_hub(output_dir, repo_id)
    print(f"Pushed to {result.repo_url} (commit {result.commit_oid})")
