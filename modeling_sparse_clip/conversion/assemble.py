"""What every converter shares: the options of the converted head (activation, `--signed_rotation_head`,
logit-scale cap), assembling the SparseCLIPModel from converted weights, and saving it with the Hub code.

The logit bias (SigLIP-style OpenCLIP models have one) is carried as `config.logit_bias`, a constant
the model adds to its logits: it changes neither softmax direction (zero-shot classification and
retrieval rankings are unchanged) and only matters for sigmoid probabilities.
"""

import math
import os
import warnings
from dataclasses import dataclass, field

import torch

from ..atomic import atomic_dir
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
    """How the converted head is built (the `--activation/--signed_rotation_head/--logit_scale_max/--seed` flags)."""

    activation: str = field(
        default="auto",
        metadata={"help": "auto (what the source computes: none for a plain CLIP at any width; relu only when its config says "
                  "sparse_clip_activation=relu), relu or none (explicit: the converted model then differs from the source)."},
    )
    signed_rotation_head: int | None = field(
        default=None,
        metadata={"help": "Replace the dense projection by a ReLU head of this width, [QP; -QP] (Q a random rotation): an exact "
                  "linear re-encoding of the dense embedding that starts at 50%% density, a starting point for sparsification "
                  "fine-tuning, NOT the dense model (--verify prints the drift). See modeling_sparse_clip/conversion/sparse_head.py."},
    )
    sparsify: int | None = field(default=None, metadata={"help": "Deprecated alias of --signed_rotation_head."})
    logit_scale_max: float | None = field(
        default=None,
        metadata={"help": "Cap of the logit scale, in LOG space (paper: ln 50 = 3.912). Default: max(ln 100, checkpoint value)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the --signed_rotation_head rotation."})

    def __post_init__(self):
        check_log_logit_scale(self.logit_scale_max)
        if self.sparsify is not None:
            if self.signed_rotation_head not in (None, self.sparsify):
                raise ValueError(f"--sparsify {self.sparsify} and --signed_rotation_head {self.signed_rotation_head} disagree; give only --signed_rotation_head.")
            warnings.warn("--sparsify is deprecated: it is --signed_rotation_head (an exact linear re-encoding, not sparse yet).", FutureWarning, stacklevel=2)
            self.signed_rotation_head, self.sparsify = self.sparsify, None


def assemble_sparse_clip(
    text_config: dict,
    vision_config: dict,
    weights: dict[str, torch.Tensor],
    options: ConversionOptions,
    logit_bias: float | None = None,
    what: str = "checkpoint",
    declared_activation: str | None = None,
) -> SparseCLIPModel:
    """A SparseCLIPModel holding `weights` (SparseCLIP key names, dense projections as in the source).

    declared_activation: what the source's config says its head computes (None: nothing, a dense CLIP).
    """
    embed_dim, vision_width = weights["visual_projection.weight"].shape
    text_embed_dim, text_width = weights["text_projection.weight"].shape
    if embed_dim != text_embed_dim:
        raise ValueError(f"{what}: image projection width {embed_dim} != text projection width {text_embed_dim}.")
    rotation = options.signed_rotation_head
    activation = choose_activation(options.activation, declared_activation, rotation, what)
    projection_dim = embed_dim
    if rotation is not None:
        weights["visual_projection.weight"], weights["text_projection.weight"] = signed_rotation_heads(
            weights["visual_projection.weight"], weights["text_projection.weight"], rotation, seed=options.seed
        )
        projection_dim = rotation

    scale = float(weights["logit_scale"])
    cap = options.logit_scale_max if options.logit_scale_max is not None else max(math.log(100.0), scale)
    if scale > cap:
        if rotation is None:
            raise ValueError(
                f"{what}: its log logit scale {scale:.4f} (scale {math.exp(scale):.1f}) is above --logit_scale_max "
                f"{cap:.4f}; the converted logits would differ from the source. Leave --logit_scale_max unset or raise it."
            )
        print(f"--signed_rotation_head: clamping the log logit scale {scale:.4f} to the cap {cap:.4f} for fine-tuning.")
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


PROCESSOR_CODE_FILE = "processing_open_clip.py"  # OpenCLIPTokenizer / OpenCLIPImageProcessor (Hub code)


def save_converted(model: SparseCLIPModel, processor, output_dir: str | os.PathLike, quiet: bool = False) -> None:
    """Weights + config + the Hub code files (model and processor) + processor into `output_dir`."""
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    missing = [f for f in HUB_CODE_FILES if not os.path.isfile(os.path.join(output_dir, f))]
    if missing:
        raise RuntimeError(f"save_pretrained did not write the Hub code {missing}; is modeling_sparse_clip imported?")
    if not quiet:
        print(f"Saved to {output_dir}")


def write_converted(model: SparseCLIPModel, processor, output_dir: str | os.PathLike, verify=None) -> None:
    """Save into a temporary folder beside `output_dir`, run `verify(tmp_folder)` on it, and only then move it
    into place: a failed save or a failed `--verify` leaves nothing under `output_dir` (an existing folder there
    is replaced only by a complete, verified one)."""
    with atomic_dir(output_dir) as tmp:
        save_converted(model, processor, tmp, quiet=True)
        if verify is not None:
            verify(str(tmp))
    print(f"Saved to {output_dir}" + (" (verified)" if verify is not None else ""))


def publish_converted(output_dir: str | os.PathLike, repo_id: str) -> None:
    """Push a saved conversion (weights, config, Hub code, processor, model card) as one commit."""
    from ..publishing import push_sparse_clip_to_hub

    result = push_sparse_clip_to_hub(output_dir, repo_id)
    print(f"Pushed to {result.repo_url} (commit {result.commit_oid})")
