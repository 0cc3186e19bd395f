"""Sparse CLIP: CLIP with a ReLU after a very wide final projection (Qin et al., ICLR 2026).

A Hub file: it imports only torch, transformers and `configuration_sparse_clip` (one-level
relative import), because `save_pretrained`/`push_to_hub` copy it flat next to the weights.
"""

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_sparse_clip import SparseCLIPConfig


# ----------------------------------------------------------------------------------------------
# Loss: symmetric InfoNCE over the GLOBAL batch (OpenCLIP's gather-with-grad + local-loss).
# ----------------------------------------------------------------------------------------------
def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `features` (equal batch sizes), keeping gradients to all of them.

    `torch.distributed.nn.functional.all_gather` reduce-scatters the gradient in backward, so each
    rank receives the gradient that every rank's loss sends to its own rows.
    """
    rank, world = _world()
    if world == 1:
        return features
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(features.contiguous()), dim=0)


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    gather_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Symmetric CLIP loss of L2-normalised embeddings; local rows against all ranks' columns.

    With one process this is the plain CLIP loss. Under torch.distributed each rank scores its own
    rows against the whole global batch; averaging the ranks' gradients (DDP) then gives exactly
    the gradient of the single-process loss on the global batch.
    """
    gather_fn = gather_fn or all_gather_with_grad
    rank, world = _world()
    all_images = gather_fn(image_embeds) if world > 1 else image_embeds
    all_texts = gather_fn(text_embeds) if world > 1 else text_embeds
    logits_per_image = logit_scale * image_embeds @ all_texts.t()
    logits_per_text = logit_scale * text_embeds @ all_images.t()
    labels = torch.arange(image_embeds.shape[0], device=image_embeds.device) + rank * image_embeds.shape[0]
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------
@dataclass
class SparseCLIPOutput(ModelOutput):
    """`CLIPOutput`'s fields, plus the sparse activations and their per-modality L0.

    loss: contrastive loss (+ L1 term when `l1_coefficient > 0`), when `return_loss=True`.
    logits_per_image / logits_per_text: scaled cosine similarities (image x text and transpose).
    text_embeds / image_embeds: L2-normalised embeddings (post-activation), like `CLIPOutput`.
    text_activations / image_activations: the un-normalised post-activation features.
    text_l0 / image_l0: mean number of non-zero dimensions per row in this batch.
    logit_scale: the effective (capped, linear) logit scale used.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
    text_activations: torch.FloatTensor | None = None
    image_activations: torch.FloatTensor | None = None
    text_l0: torch.FloatTensor | None = None
    image_l0: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None

    def to_tuple(self) -> tuple[Any]:
        return tuple(
            self[k] if k not in ["text_model_output", "vision_model_output"] else getattr(self, k).to_tuple()
            for k in self.keys()
        )


# ----------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------
def sparsify(x: torch.Tensor, activation: str, topk_k: int | None = None) -> torch.Tensor:
    """The sparsity activation applied after the wide projection."""
    if activation == "relu":
        return F.relu(x)
    if activation == "topk":
        values, indices = x.topk(topk_k, dim=-1)
        return torch.zeros_like(x).scatter(-1, indices, values)
    if activation == "none":
        return x
    raise ValueError(f"unknown activation {activation!r}")


def _tower_width(tower: nn.Module) -> int:
    width = getattr(tower.config, "hidden_size", None)
    if width is None and hasattr(tower, "timm_model"):
        width = tower.timm_model.num_features
    if width is None:
        raise ValueError(
            f"Cannot tell the output width of {type(tower).__name__}; set text_embed_dim/vision_embed_dim in the config."
        )
    return int(width)


def _pool(outputs, how: str, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    if how == "pooler":
        if outputs.pooler_output is None:
            raise ValueError("This tower returns no pooler_output; use pooling 'mean' or 'cls' in the config.")
        return outputs.pooler_output
    hidden = outputs.last_hidden_state
    if hidden.dim() == 4:  # a conv feature map (B, C, H, W): pool over space
        return hidden.mean(dim=(2, 3)) if how == "mean" else hidden[:, :, 0, 0]
    if how == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------
class SparseCLIPPreTrainedModel(PreTrainedModel):
    config_class = SparseCLIPConfig
    config: SparseCLIPConfig
    base_model_prefix = "sparse_clip"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    @torch.no_grad()
    def _init_weights(self, module):
        # Only our own layers: the towers initialise (or load) themselves.
        if isinstance(module, SparseCLIPModel):
            factor = self.config.initializer_factor
            nn.init.normal_(module.text_projection.weight, std=factor * module.text_embed_dim**-0.5)
            nn.init.normal_(module.visual_projection.weight, std=factor * module.vision_embed_dim**-0.5)
            module.logit_scale.fill_(self.config.logit_scale_init_value)


class SparseCLIPModel(SparseCLIPPreTrainedModel):
    """Two towers -> wide bias-free projections -> sparsity activation; capped logit scale."""

    def __init__(self, config: SparseCLIPConfig, vision_model: nn.Module | None = None, text_model: nn.Module | None = None):
        super().__init__(config)
        self.text_model = text_model if text_model is not None else AutoModel.from_config(config.text_config)
        self.vision_model = vision_model if vision_model is not None else AutoModel.from_config(config.vision_config)
        # Share the sub-configs so that attention/dtype settings stay in sync (as VisionTextDualEncoder does).
        self.config.text_config._attn_implementation = self.text_model.config._attn_implementation
        self.config.vision_config._attn_implementation = self.vision_model.config._attn_implementation
        self.text_model.config = self.config.text_config
        self.vision_model.config = self.config.vision_config

        self.text_embed_dim = config.text_embed_dim or _tower_width(self.text_model)
        self.vision_embed_dim = config.vision_embed_dim or _tower_width(self.vision_model)
        config.text_embed_dim, config.vision_embed_dim = self.text_embed_dim, self.vision_embed_dim
        self.projection_dim = config.projection_dim

        self.text_projection = nn.Linear(self.text_embed_dim, self.projection_dim, bias=False)
        self.visual_projection = nn.Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    # -- the cap ------------------------------------------------------------------------------
    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the parameter in place to the cap. Training loops call it after every optimiser step
        (as OpenCLIP's does), so momentum never carries it above the cap; `SparseCLIPTrainer` does it
        for you, a hand-written loop adds `model.clamp_logit_scale_()` after `optimizer.step()`."""
        self.logit_scale.clamp_(max=self.config.logit_scale_max)

    def effective_logit_scale(self) -> torch.Tensor:
        """exp(min(logit_scale, cap)): the linear scale the loss and logits use."""
        return self.logit_scale.clamp(max=self.config.logit_scale_max).exp()

    # -- activation checkpointing: transformers towers use the standard switch, timm towers their own --
    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None, every_n_layers: int = 1):
        for tower in (self.text_model, self.vision_model):
            if hasattr(tower, "timm_model"):
                tower.timm_model.set_grad_checkpointing(enable)
        kwargs = {} if gradient_checkpointing_func is None else {"gradient_checkpointing_func": gradient_checkpointing_func}
        try:
            super()._set_gradient_checkpointing(enable=enable, every_n_layers=every_n_layers, **kwargs)
        except ValueError:  # raised when no submodule has a transformers switch (e.g. two timm towers)
            if not any(hasattr(t, "timm_model") for t in (self.text_model, self.vision_model)):
                raise

    # -- features -------------------------------------------------------------------------------
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Tower outputs with `.pooler_output` = projected, post-activation, un-normalised features."""
        extra = {k: v for k, v in (("position_ids", position_ids), ("token_type_ids", token_type_ids)) if v is not None}
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra, **kwargs)
        outputs.pooler_output = self.project_text(_pool(outputs, self.config.text_pooling, attention_mask))
        return outputs

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """Tower outputs with `.pooler_output` = projected, post-activation, un-normalised features."""
        outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        outputs.pooler_output = self.project_image(_pool(outputs, self.config.vision_pooling))
        return outputs

    def pool_text_tower(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None) -> torch.Tensor:
        """The pooled text-tower output that the projection reads (what a frozen-tower cache stores)."""
        extra = {k: v for k, v in (("position_ids", position_ids), ("token_type_ids", token_type_ids)) if v is not None}
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra)
        return _pool(outputs, self.config.text_pooling, attention_mask)

    def pool_image_tower(self, pixel_values) -> torch.Tensor:
        """The pooled vision-tower output that the projection reads (what a frozen-tower cache stores)."""
        return _pool(self.vision_model(pixel_values=pixel_values, return_dict=True), self.config.vision_pooling)

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled text-tower output -> wide projection -> sparsity activation."""
        return sparsify(self.text_projection(pooled), self.config.activation, self.config.topk_k)

    def project_image(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled vision-tower output -> wide projection -> sparsity activation."""
        return sparsify(self.visual_projection(pooled), self.config.activation, self.config.topk_k)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        image_tower_embeds: torch.FloatTensor | None = None,
        text_tower_embeds: torch.FloatTensor | None = None,
        gather_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> SparseCLIPOutput | tuple:
        """`image_tower_embeds` / `text_tower_embeds`: pooled tower outputs computed beforehand (frozen
        towers, cached once): they replace `pixel_values` / `input_ids` and skip the towers.
        `gather_fn`: how the loss gathers the global batch across ranks (default: dense
        `all_gather_with_grad`; the trainer may pass a sparse gather)."""
        if image_tower_embeds is not None and text_tower_embeds is not None:
            return self.forward_from_activations(
                self.project_image(image_tower_embeds), self.project_text(text_tower_embeds),
                return_loss=return_loss, return_dict=return_dict, gather_fn=gather_fn,
            )
        tower_kwargs = {}
        if output_attentions:
            tower_kwargs["output_attentions"] = True
        if output_hidden_states:
            tower_kwargs["output_hidden_states"] = True
        vision_outputs = self.get_image_features(pixel_values=pixel_values, **tower_kwargs)
        text_outputs = self.get_text_features(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            token_type_ids=token_type_ids,
            **tower_kwargs,
        )
        return self.forward_from_activations(
            vision_outputs.pooler_output,
            text_outputs.pooler_output,
            return_loss=return_loss,
            vision_model_output=vision_outputs,
            text_model_output=text_outputs,
            return_dict=return_dict,
            gather_fn=gather_fn,
        )

    def forward_from_activations(
        self,
        image_activations: torch.Tensor,
        text_activations: torch.Tensor,
        return_loss: bool | None = None,
        vision_model_output=None,
        text_model_output=None,
        return_dict: bool | None = None,
        gather_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> SparseCLIPOutput | tuple:
        """Logits, loss and L0 from post-activation features (shared by `forward` and cached-tower training)."""
        image_embeds = F.normalize(image_activations, dim=-1)
        text_embeds = F.normalize(text_activations, dim=-1)
        scale = self.effective_logit_scale()
        logits_per_text = scale * text_embeds @ image_embeds.t()
        if self.config.logit_bias is not None:
            logits_per_text = logits_per_text + self.config.logit_bias
        logits_per_image = logits_per_text.t()

        loss = None
        if return_loss:
            loss = contrastive_loss(image_embeds, text_embeds, scale, gather_fn)
            if self.config.l1_coefficient > 0:
                l1 = (image_activations.abs().sum(-1).mean() + text_activations.abs().sum(-1).mean()) / 2
                loss = loss + self.config.l1_coefficient * l1

        output = SparseCLIPOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_model_output,
            vision_model_output=vision_model_output,
            text_activations=text_activations,
            image_activations=image_activations,
            text_l0=(text_activations != 0).sum(-1).float().mean().detach(),
            image_l0=(image_activations != 0).sum(-1).float().mean().detach(),
            logit_scale=scale.detach(),
        )
        if return_dict is False:
            return output.to_tuple()
        return output

    # -- publishing ------------------------------------------------------------------------------
    def push_to_hub(self, repo_id: str, *args, token=None, private=None, create_pr: bool = False, **kwargs):
        """With the sparse-clip package installed: one commit with weights, config, code, processor
        (`processor=`) and a generated model card with metrics (`benchmark_json=`); see
        `modeling_sparse_clip.publishing`. Without it (a Hub copy of this file): transformers' own push."""
        try:
            from modeling_sparse_clip.publishing import PUBLISH_OPTIONS, push_sparse_clip_to_hub
        except ImportError:
            push_sparse_clip_to_hub = None
        if push_sparse_clip_to_hub is None or args or set(kwargs) - set(PUBLISH_OPTIONS):  # options only transformers knows
            return super().push_to_hub(repo_id, *args, token=token, private=private, create_pr=create_pr, **kwargs)
        return push_sparse_clip_to_hub(self, repo_id, token=token, private=bool(private), create_pr=create_pr, **kwargs)

    # -- construction and strict loading --------------------------------------------------------
    @classmethod
    def from_towers(cls, vision: str | nn.Module, text: str | nn.Module, **config_kwargs) -> "SparseCLIPModel":
        """Build a model from two pretrained towers (model objects, folders or Hub ids); the
        projections and logit scale are freshly initialised. `config_kwargs` go to `SparseCLIPConfig`."""
        vision_model = AutoModel.from_pretrained(vision) if isinstance(vision, str) else vision
        text_model = AutoModel.from_pretrained(text) if isinstance(text, str) else text
        config = SparseCLIPConfig(
            text_config=text_model.config.to_dict(),
            vision_config=vision_model.config.to_dict(),
            text_embed_dim=_tower_width(text_model),
            vision_embed_dim=_tower_width(vision_model),
            **config_kwargs,
        )
        return cls(config, vision_model=vision_model, text_model=text_model)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict: bool = True, **kwargs):
        """`PreTrainedModel.from_pretrained`, but a checkpoint whose keys or shapes do not match the
        config raises an error listing them (transformers only warns), unless `strict=False`."""
        want_info = kwargs.pop("output_loading_info", False)
        # Let transformers finish loading so that we can report every problem at once, then refuse.
        kwargs.setdefault("ignore_mismatched_sizes", strict)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = []
        if info.get("missing_keys"):
            problems.append("missing keys (in the model, not in the checkpoint): " + ", ".join(sorted(info["missing_keys"])))
        if info.get("unexpected_keys"):
            problems.append("unexpected keys (in the checkpoint, not in the model): " + ", ".join(sorted(info["unexpected_keys"])))
        if info.get("mismatched_keys"):
            shapes = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in info["mismatched_keys"]]
            problems.append("shape mismatches: " + "; ".join(shapes))
        if strict and problems:
            raise ValueError(
                f"The checkpoint at {pretrained_model_name_or_path} does not match SparseCLIPConfig:\n  - "
                + "\n  - ".join(problems)
                + "\nCheck that config.json belongs to these weights (or pass strict=False to load anyway)."
            )
        return (model, info) if want_info else model


__all__ = ["SparseCLIPModel", "SparseCLIPPreTrainedModel", "SparseCLIPOutput", "contrastive_loss", "sparsify"]
