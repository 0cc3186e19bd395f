"""What every converter shares: the target arguments, assembling the SparseCLIPModel from converted
weights (activation, `--sparsify` head, logit scale and bias), saving with the Hub code, publishing.

The logit bias (SigLIP-style OpenCLIP models have one) is carried as `config.logit_bias`, a constant
the model adds to its logits: it changes neither softmax direction (zero-shot classification and
retrieval rankings are unchanged) and only matters for sigmoid probabilities.
"""

import math
import os
from dataclasses import dataclass, field

import torch

from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel

from .key_maps import check_shapes
from .sparse_head import choose_activation, signed_rotation_heads

HUB_CODE_FILES = ("configuration_sparse_clip.py", "modeling_sparse_clip.py")


@dataclass
class SparseCLIPTargetArguments:
    output_dir: str = field(metadata={"help": "Folder to write the SparseCLIP model, processor and Hub code to."})
    activation: str = field(
        default="auto",
        metadata={"help": "auto (relu when the projection is wider than both towers, the paper's format; else none), relu or none."},
    )
    sparsify: int | None = field(
        default=None,
        metadata={"help": "Build a wide ReLU head of this width from the dense projection (signed random rotation; see conversion/sparse_head.py)."},
    )
    logit_scale_max: float | None = field(
        default=None,
        metadata={"help": "Cap of the log logit scale (paper: ln 50 = 3.912). Default: max(ln 100, checkpoint value)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the --sparsify rotation."})
    verify: bool = field(default=False, metadata={"help": "Run the source library and the converted model on real images/captions and compare."})
    verify_tolerance: float = field(default=1e-4, metadata={"help": "Largest max-abs difference --verify accepts."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub repo id to publish the converted model and processor (with code) to."})


def assemble_sparse_clip(
    text_config: dict,
    vision_config: dict,
    weights: dict[str, torch.Tensor],
    args: SparseCLIPTargetArguments,
    logit_bias: float | None = None,
    what: str = "checkpoint",
) -> SparseCLIPModel:
    """A SparseCLIPModel holding `weights` (SparseCLIP key names, dense projections as in the source)."""
    embed_dim, vision_width = weights["visual_projection.weight"].shape
    text_embed_dim, text_width = weights["text_projection.weight"].shape
    if embed_dim != text_embed_dim:
        raise ValueError(f"{what}: image projection width {embed_dim} != text projection width {text_embed_dim}.")
    activation = choose_activation(args.activation, embed_dim, (vision_width, text_width), args.sparsify)
    projection_dim = embed_dim
    if args.sparsify is not None:
        weights["visual_projection.weight"], weights["text_projection.weight"] = signed_rotation_heads(
            weights["visual_projection.weight"], weights["text_projection.weight"], args.sparsify, seed=args.seed
        )
        projection_dim = args.sparsify

    scale = float(weights["logit_scale"])
    cap = args.logit_scale_max if args.logit_scale_max is not None else max(math.log(100.0), scale)
    if scale > cap:
        if args.sparsify is None:
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


def save_converted(model: SparseCLIPModel, processor, output_dir: str) -> None:
    """Weights + config + the two Hub code files + processor into `output_dir`."""
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    missing = [f for f in HUB_CODE_FILES if not os.path.isfile(os.path.join(output_dir, f))]
    if missing:
        raise RuntimeError(f"save_pretrained did not write the Hub code {missing}; is modeling_sparse_clip imported?")
    print(f"Saved to {output_dir}")


def publish(model: SparseCLIPModel, processor, repo_id: str) -> None:
    """Push weights, config, Hub code and processor to `repo_id` (after verification passed)."""
    from .publish import push_sparse_clip_to_hub

    push_sparse_clip_to_hub(model, repo_id, processor=processor)  # one commit, with code, processor and card
    print(f"Pushed to {repo_id}")
