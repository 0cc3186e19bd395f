"""Configuration of Sparse CLIP (Qin et al., ICLR 2026, arXiv 2601.20075).

A Hub file: it imports only transformers (and the standard library) so that
`trust_remote_code=True` users need nothing but transformers.
"""

import math

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

ACTIVATIONS = ("relu", "topk", "none")
POOLINGS = ("pooler", "mean", "cls")


class SparseCLIPConfig(PreTrainedConfig):
    r"""
    Two towers of any registered transformers architecture, two wide bias-free projections, a
    sparsity activation and a capped learnable logit scale.

    Args:
        text_config / vision_config (`dict` or `PreTrainedConfig`): the towers (default: CLIP text and
            vision; e.g. `BertConfig` or `TimmWrapperConfig` work too).
        projection_dim (`int`): width of the shared (sparse) embedding, e.g. 16,384 for the paper's
            ViT-B/32 runs. Give this or `expansion_factor`.
        expansion_factor (`float`): convenience: `projection_dim = expansion_factor * min(tower widths)`
            (512 -> 16,384 at 32x for ViT-B/32, 768 -> 55,296 at 72x for ViT-L/14, as in the paper).
        activation (`str`): `relu` (the paper), `topk` (keep the `topk_k` largest pre-activations per
            row, zero the rest; ablation) or `none` (dense baseline, a plain linear projection).
        topk_k (`int`): k for `activation="topk"`.
        l1_coefficient (`float`): adds `l1_coefficient * mean_rows ||activations||_1` (averaged over
            both modalities) to the loss: the paper's L1 ablation. 0 disables it.
        logit_scale_init_value (`float`): initial value of the log logit scale (CLIP: ln(1/0.07)).
        logit_scale_max (`float`): the cap, in log space like the parameter (OpenCLIP: ln 100; paper
            "Sparse": ln 50, "Sparse+": ln 40). The effective scale `exp(min(param, cap))` never
            exceeds `exp(logit_scale_max)`; lower caps give sparser embeddings.
        text_pooling / vision_pooling (`str`): `pooler` (the tower's `pooler_output`: CLIP's EOS/CLS
            token, timm's global pool), `mean` (attention-masked mean of `last_hidden_state`, what
            sentence-transformers use for MiniLM) or `cls` (first token).
        text_embed_dim / vision_embed_dim (`int`): tower output widths; filled in by the model.
        logit_bias (`float`): a constant added to the logits (OpenCLIP checkpoints that have one); it changes
            no softmax and no ranking, only the reported logits.
    """

    model_type = "sparse_clip"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_text_model"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
    }

    text_config: PreTrainedConfig | dict | None = None
    vision_config: PreTrainedConfig | dict | None = None
    projection_dim: int | None = None
    expansion_factor: int | float | None = None
    activation: str = "relu"
    topk_k: int | None = None
    l1_coefficient: float = 0.0
    logit_scale_init_value: float = 2.6592
    logit_scale_max: float = math.log(100.0)
    text_pooling: str = "pooler"
    vision_pooling: str = "pooler"
    text_embed_dim: int | None = None
    vision_embed_dim: int | None = None
    logit_bias: float | None = None
    initializer_factor: float = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.text_embed_dim is None:
            self.text_embed_dim = getattr(self.text_config, "hidden_size", None)
        if self.vision_embed_dim is None:
            self.vision_embed_dim = getattr(self.vision_config, "hidden_size", None)
        if self.projection_dim is None and self.expansion_factor is not None:
            widths = [w for w in (self.text_embed_dim, self.vision_embed_dim) if w]
            if not widths:
                raise ValueError(
                    "expansion_factor needs a tower width: give projection_dim, or text_embed_dim/"
                    "vision_embed_dim for towers whose config has no `hidden_size` (e.g. timm)."
                )
            self.projection_dim = int(round(self.expansion_factor * min(widths)))
        if self.projection_dim is None:
            self.projection_dim = 512 * 32
        self._check_values()

    def _check_values(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is unknown; use one of {ACTIVATIONS}.")
        if not isinstance(self.projection_dim, int) or self.projection_dim <= 0:
            raise ValueError(f"projection_dim must be a positive integer, got {self.projection_dim!r}.")
        if self.activation == "topk":
            if not isinstance(self.topk_k, int) or not 0 < self.topk_k <= self.projection_dim:
                raise ValueError(
                    f"activation='topk' needs 0 < topk_k <= projection_dim ({self.projection_dim}), "
                    f"got topk_k={self.topk_k!r}."
                )
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}.")
        if self.logit_scale_max < self.logit_scale_init_value:
            raise ValueError(
                f"logit_scale_max ({self.logit_scale_max:.4f}, i.e. a cap of "
                f"{math.exp(self.logit_scale_max):.1f}) is below logit_scale_init_value "
                f"({self.logit_scale_init_value:.4f}); both are in log space: lower the init or raise the cap."
            )
        for name in ("text_pooling", "vision_pooling"):
            if getattr(self, name) not in POOLINGS:
                raise ValueError(f"{name}={getattr(self, name)!r} is unknown; use one of {POOLINGS}.")

    @property
    def logit_scale_cap(self) -> float:
        """The cap on the effective (linear) logit scale, e.g. 50.0."""
        return math.exp(self.logit_scale_max)


__all__ = ["SparseCLIPConfig"]
