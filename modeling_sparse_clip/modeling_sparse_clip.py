"""Sparse CLIP: CLIP with a ReLU after a very wide final projection (Qin et al., ICLR 2026).

A Hub file: it imports only torch, transformers and `configuration_sparse_clip` (one-level
relative import), because `save_pretrained`/`push_to_hub` copy it flat next to the weights.
"""

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple

from .configuration_sparse_clip import SparseCLIPConfig


# ----------------------------------------------------------------------------------------------
# Loss: symmetric InfoNCE over the GLOBAL batch (OpenCLIP's gather-with-grad + local-loss).
# ----------------------------------------------------------------------------------------------
def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather_sizes(rows: int, device) -> list[int]:
    """Every rank's local batch size (one tiny all_gather): ranks may hold different numbers of rows
    (the last batch of an epoch, streaming data)."""
    world = torch.distributed.get_world_size()
    size = torch.tensor([rows], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    torch.distributed.all_gather(sizes, size)
    return [int(s) for s in sizes]


def all_gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `features` (any local batch sizes), keeping gradients to all of them.

    `torch.distributed.nn.functional.all_gather` reduce-scatters the gradient in backward, so each
    rank receives the gradient that every rank's loss sends to its own rows. Sizes are gathered
    first; smaller ranks pad with zero rows (cut off again, so they get no gradient).
    """
    rank, world = _world()
    if world == 1:
        return features
    import torch.distributed.nn.functional as dist_fn

    sizes = _gather_sizes(features.shape[0], features.device)
    largest = max(sizes)
    if features.shape[0] < largest:
        features = torch.cat([features, features.new_zeros(largest - features.shape[0], *features.shape[1:])])
    parts = dist_fn.all_gather(features.contiguous())
    if min(sizes) == largest:
        return torch.cat(parts, dim=0)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)], dim=0)


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    gather_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Symmetric CLIP loss of L2-normalised embeddings; local rows against all ranks' columns.

    With one process this is the plain CLIP loss. Under torch.distributed each rank scores its own
    rows against the whole global batch; averaging the ranks' gradients (DDP) then gives exactly
    the gradient of the single-process loss on the global batch, also when the ranks hold different
    numbers of rows: labels are offset by the rows of the ranks before, and each local loss is
    weighted by world x local / global (1 when the sizes are equal).
    A `gather_fn` with a `contrastive_loss` method (the library's
    `SparseAwareLoss`) computes the whole loss itself.
    """
    if hasattr(gather_fn, "contrastive_loss"):
        return gather_fn.contrastive_loss(image_embeds, text_embeds, logit_scale)
    gather_fn = gather_fn or all_gather_with_grad
    rank, world = _world()
    rows = image_embeds.shape[0]
    sizes = _gather_sizes(rows, image_embeds.device) if world > 1 else [rows]
    all_images = gather_fn(image_embeds) if world > 1 else image_embeds
    all_texts = gather_fn(text_embeds) if world > 1 else text_embeds
    logits_per_image = logit_scale * image_embeds @ all_texts.t()
    logits_per_text = logit_scale * text_embeds @ all_images.t()
    labels = torch.arange(rows, device=image_embeds.device) + sum(sizes[:rank])
    loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    if sum(sizes) != world * rows:
        loss = loss * (world * rows / sum(sizes))
    return loss


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


@dataclass
class SparseCLIPVisionModelOutput(ModelOutput):
    """What `SparseCLIPVisionModelWithProjection` returns (`CLIPVisionModelOutput` + the sparse fields).

    image_embeds: L2-normalised post-activation embeddings, as `SparseCLIPOutput.image_embeds`.
    image_activations: the un-normalised post-activation features (`get_image_features(...).pooler_output`).
    image_l0: mean number of non-zero dimensions per row.
    last_hidden_state / hidden_states / attentions: the vision tower's.
    """

    image_embeds: torch.FloatTensor | None = None
    image_activations: torch.FloatTensor | None = None
    image_l0: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SparseCLIPTextModelOutput(ModelOutput):
    """What `SparseCLIPTextModelWithProjection` returns (`CLIPTextModelOutput` + the sparse fields)."""

    text_embeds: torch.FloatTensor | None = None
    text_activations: torch.FloatTensor | None = None
    text_l0: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


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


# What may reach a tower besides its inputs: transformers' own forward kwargs (output_attentions,
# output_hidden_states (a bool or the layer indices to keep), ...). Anything else is refused, so a
# misspelt argument is an error and not silently dropped.
_TOWER_KWARGS = frozenset(TransformersKwargs.__annotations__)


def _check_kwargs(method: str, kwargs: dict) -> None:
    unknown = sorted(set(kwargs) - _TOWER_KWARGS)
    if unknown:
        raise TypeError(f"{method}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")


def _not_above(value: torch.Tensor, cap: float) -> torch.Tensor:
    """min(value, cap) with gradient 1 everywhere (a clamp passes none above the cap, so a parameter that
    sits there could never be lowered by the loss).

    `cap` is first rounded DOWN to value's dtype, so the result never exceeds the float64 cap either:
    fp32(ln 50) = 3.9120230675 is above ln 50 = 3.9120230054."""
    bound = torch.tensor(cap, dtype=value.dtype)  # on the CPU: no device sync in the forward
    if bound.double() > cap:
        bound = torch.nextafter(bound, torch.tensor(-float("inf"), dtype=value.dtype))
    # float(bound) is exact in value's dtype; the second term is 0 in value and 1 in gradient
    return value.detach().clamp(max=float(bound)) + (value - value.detach())


def _auto_map(model: "SparseCLIPPreTrainedModel") -> None:
    """Give a saved folder every Auto class of `AUTO_MAP` (transformers writes only the class's own one)."""
    if type(model)._auto_class is not None:
        model.config.auto_map = {**AUTO_MAP, **(getattr(model.config, "auto_map", None) or {})}


# The Auto classes a saved folder answers to (its config.json `auto_map`), so that `trust_remote_code=True`
# reaches every entry point without this package. `modeling_sparse_clip.constants.AUTO_MAP` is this one.
AUTO_MAP = {
    "AutoConfig": "configuration_sparse_clip.SparseCLIPConfig",
    "AutoModel": "modeling_sparse_clip.SparseCLIPModel",
    "AutoModelForZeroShotImageClassification": "modeling_sparse_clip.SparseCLIPModel",
    "AutoModelForTextEncoding": "modeling_sparse_clip.SparseCLIPTextModelWithProjection",
}


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
    # The loss is a mean over the batch and takes no `num_items_in_batch`: tell Trainer, or it would skip
    # dividing by the gradient-accumulation steps because `forward` has **kwargs.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        # Only our own layers: the towers initialise (or load) themselves.
        factor = self.config.initializer_factor
        if isinstance(module, _TextTower):
            nn.init.normal_(module.text_projection.weight, std=factor * module.text_embed_dim**-0.5)
        if isinstance(module, _ImageTower):
            nn.init.normal_(module.visual_projection.weight, std=factor * module.vision_embed_dim**-0.5)
        if isinstance(module, SparseCLIPModel):
            module.logit_scale.fill_(self.config.logit_scale_init_value)

    # -- activation checkpointing: transformers towers use the standard switch, timm towers their own --
    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None, every_n_layers: int = 1):
        towers = [getattr(self, name) for name in ("text_model", "vision_model") if hasattr(self, name)]
        for tower in towers:
            if hasattr(tower, "timm_model"):
                tower.timm_model.set_grad_checkpointing(enable)
        kwargs = {} if gradient_checkpointing_func is None else {"gradient_checkpointing_func": gradient_checkpointing_func}
        try:
            super()._set_gradient_checkpointing(enable=enable, every_n_layers=every_n_layers, **kwargs)
        except ValueError:  # raised when no submodule has a transformers switch (e.g. two timm towers)
            if not any(hasattr(t, "timm_model") for t in towers):
                raise

    # -- strict loading --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict: bool | None = None, **kwargs):
        """`PreTrainedModel.from_pretrained`, but a checkpoint whose keys or shapes do not match the config
        raises an error listing them (transformers only warns).

        `strict=None` (default): raise, unless the caller passes `output_loading_info=True`, transformers'
        way of saying "I will inspect the problems myself": then the `(model, loading_info)` pair comes
        back as in transformers. `strict=True` raises even then; `strict=False` never raises (transformers'
        own behaviour, warnings only)."""
        want_info = kwargs.pop("output_loading_info", False)
        if strict is None:
            strict = not want_info
        if strict:  # let transformers finish loading so that every problem is reported at once, then refuse
            kwargs.setdefault("ignore_mismatched_sizes", True)
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
                f"The checkpoint at {pretrained_model_name_or_path} does not match {cls.__name__}:\n  - "
                + "\n  - ".join(problems)
                + "\nCheck that config.json belongs to these weights (or pass strict=False to load anyway)."
            )
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save; then the weight files get the usual permissions (0o666 minus the umask):
        safetensors writes them through a private 0600 temporary file, unreadable to the other users of
        a shared folder."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        umask = os.umask(0o022)  # reading the umask means setting it: put it straight back
        os.umask(umask)
        for name in os.listdir(save_directory):
            path = os.path.join(save_directory, name)
            if name.endswith(".safetensors") and not os.path.islink(path) and not os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o666 & ~umask)
        return result


def _attach_tower(model: nn.Module, name: str, sub_config, tower: nn.Module | None, width: int | None) -> int:
    """Build (or adopt) a tower as `model.<name>` and share its config with the SparseCLIPConfig (so that
    attention/dtype settings stay in sync, as VisionTextDualEncoder does); returns its output width."""
    tower = tower if tower is not None else AutoModel.from_config(sub_config)
    sub_config._attn_implementation = tower.config._attn_implementation
    tower.config = sub_config
    setattr(model, name, tower)
    return width or _tower_width(tower)


class _ImageTower:
    """The image half (vision tower -> wide projection -> activation), shared by SparseCLIPModel and
    SparseCLIPVisionModelWithProjection: same module names, so either loads a full checkpoint."""

    def _vision_tower_outputs(self, pixel_values, interpolate_pos_encoding: bool | None, kwargs: dict):
        if interpolate_pos_encoding is not None:  # CLIP/ViT towers take it; timm towers do not
            kwargs = {**kwargs, "interpolate_pos_encoding": interpolate_pos_encoding}
        return self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """Tower outputs with `.pooler_output` = projected, post-activation, un-normalised features."""
        _check_kwargs("get_image_features", kwargs)
        outputs = self._vision_tower_outputs(pixel_values, interpolate_pos_encoding, kwargs)
        outputs.pooler_output = self.project_image(_pool(outputs, self.config.vision_pooling))
        return outputs

    def pool_image_tower(self, pixel_values, interpolate_pos_encoding: bool | None = None) -> torch.Tensor:
        """The pooled vision-tower output that the projection reads (what a frozen-tower cache stores)."""
        return _pool(self._vision_tower_outputs(pixel_values, interpolate_pos_encoding, {}), self.config.vision_pooling)

    def project_image(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled vision-tower output -> wide projection -> sparsity activation."""
        return sparsify(self.visual_projection(pooled), self.config.activation, self.config.topk_k)


class _TextTower:
    """The text half, shared by SparseCLIPModel and SparseCLIPTextModelWithProjection."""

    def _text_tower_outputs(self, input_ids, attention_mask, position_ids, token_type_ids, kwargs: dict):
        extra = {k: v for k, v in (("position_ids", position_ids), ("token_type_ids", token_type_ids)) if v is not None}
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra, **kwargs)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Tower outputs with `.pooler_output` = projected, post-activation, un-normalised features."""
        _check_kwargs("get_text_features", kwargs)
        outputs = self._text_tower_outputs(input_ids, attention_mask, position_ids, token_type_ids, kwargs)
        outputs.pooler_output = self.project_text(_pool(outputs, self.config.text_pooling, attention_mask))
        return outputs

    def pool_text_tower(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None) -> torch.Tensor:
        """The pooled text-tower output that the projection reads (what a frozen-tower cache stores)."""
        outputs = self._text_tower_outputs(input_ids, attention_mask, position_ids, token_type_ids, {})
        return _pool(outputs, self.config.text_pooling, attention_mask)

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled text-tower output -> wide projection -> sparsity activation."""
        return sparsify(self.text_projection(pooled), self.config.activation, self.config.topk_k)


class SparseCLIPModel(_TextTower, _ImageTower, SparseCLIPPreTrainedModel):
    """Two towers -> wide bias-free projections -> sparsity activation; capped logit scale."""

    def __init__(self, config: SparseCLIPConfig, vision_model: nn.Module | None = None, text_model: nn.Module | None = None):
        super().__init__(config)
        self.text_embed_dim = _attach_tower(self, "text_model", config.text_config, text_model, config.text_embed_dim)
        self.vision_embed_dim = _attach_tower(self, "vision_model", config.vision_config, vision_model, config.vision_embed_dim)
        config.text_embed_dim, config.vision_embed_dim = self.text_embed_dim, self.vision_embed_dim
        self.projection_dim = config.projection_dim
        self.text_projection = nn.Linear(self.text_embed_dim, self.projection_dim, bias=False)
        self.visual_projection = nn.Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        _auto_map(self)
        self.post_init()

    # -- the cap ------------------------------------------------------------------------------
    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the parameter in place to the cap (rounded down to its dtype, so it never sits above the
        cap). Training loops call it after every optimiser step (as OpenCLIP's does), so momentum never
        carries it above the cap; `SparseCLIPTrainer` does it for you, a hand-written loop adds
        `model.clamp_logit_scale_()` after `optimizer.step()`."""
        self.logit_scale.copy_(_not_above(self.logit_scale, self.config.logit_scale_max))

    def effective_logit_scale(self) -> torch.Tensor:
        """exp(min(logit_scale, cap)): the linear scale the loss and logits use. It never exceeds
        `exp(logit_scale_max)`, and the gradient reaches the parameter also at (or above) the cap, so a
        loss that wants a lower scale lowers it (OpenCLIP: exp(param), the parameter clamped after each step)."""
        return _not_above(_not_above(self.logit_scale, self.config.logit_scale_max).exp(), self.config.logit_scale_cap)

    # -- forward ----------------------------------------------------------------------------------
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        image_tower_embeds: torch.FloatTensor | None = None,
        text_tower_embeds: torch.FloatTensor | None = None,
        gather_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SparseCLIPOutput:
        """`CLIPModel.forward`'s arguments (`return_dict`, `output_attentions`, `output_hidden_states` and
        transformers' other forward kwargs reach both towers; `interpolate_pos_encoding` the vision tower).
        `image_tower_embeds` / `text_tower_embeds`: pooled tower outputs computed beforehand (frozen
        towers, cached once): they replace `pixel_values` / `input_ids` and skip the towers.
        `gather_fn`: how the loss gathers the global batch across ranks (default: dense
        `all_gather_with_grad`; the trainer may pass a sparse gather)."""
        _check_kwargs("forward", kwargs)
        if image_tower_embeds is not None and text_tower_embeds is not None:
            return self.forward_from_activations(
                self.project_image(image_tower_embeds), self.project_text(text_tower_embeds),
                return_loss=return_loss, gather_fn=gather_fn, return_dict=True,
            )
        # return_dict=True inside: the decorator turns the final output into a tuple where asked
        vision_outputs = self.get_image_features(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        text_outputs = self.get_text_features(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            token_type_ids=token_type_ids,
            return_dict=True,
            **kwargs,
        )
        return self.forward_from_activations(
            vision_outputs.pooler_output,
            text_outputs.pooler_output,
            return_loss=return_loss,
            vision_model_output=vision_outputs,
            text_model_output=text_outputs,
            gather_fn=gather_fn,
            return_dict=True,
        )

    @can_return_tuple
    def forward_from_activations(
        self,
        image_activations: torch.Tensor,
        text_activations: torch.Tensor,
        return_loss: bool | None = None,
        vision_model_output=None,
        text_model_output=None,
        gather_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> SparseCLIPOutput:
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
                rank, world = _world()
                if world > 1:  # a per-rank mean: weighted so DDP's average is the global-batch mean
                    rows = image_activations.shape[0]
                    l1 = l1 * (world * rows / sum(_gather_sizes(rows, image_activations.device)))
                loss = loss + self.config.l1_coefficient * l1

        return SparseCLIPOutput(
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

    # -- publishing ------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save, plus the three sentence-transformers (>= 6) files that make the folder a
        `SparseEncoder` for images and texts: ST's own `Transformer` module calls `get_text_features` /
        `get_image_features` (whose `.pooler_output` is the post-activation projection) and reads the
        processor saved beside the weights. Plain JSON, so this file still needs only torch/transformers."""
        import json
        import os

        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        features = {m: {"method": f"get_{m}_features", "method_output_name": "pooler_output"} for m in ("text", "image")}
        files = {
            "modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}],
            "sentence_bert_config.json": {"transformer_task": "feature-extraction", "modality_config": features,
                                          "module_output_name": "sentence_embedding"},
            "config_sentence_transformers.json": {"model_type": "SparseEncoder", "prompts": {"query": "", "document": ""},
                                                  "default_prompt_name": None, "similarity_fn_name": "cosine"},
        }
        for name, content in files.items():
            with open(os.path.join(save_directory, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)

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

    # -- construction ------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# One-tower models: index a million images without loading the text tower (CLIP's ...WithProjection)
# ----------------------------------------------------------------------------------------------
class SparseCLIPVisionModelWithProjection(_ImageTower, SparseCLIPPreTrainedModel):
    """The image half of a SparseCLIPModel. `from_pretrained(<a SparseCLIP folder>)` loads only the vision
    tower and its projection (the text weights in the file are skipped, not reported) and gives the same
    activations as the full model's `get_image_features`."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^text_projection\.", r"^logit_scale$"]

    def __init__(self, config: SparseCLIPConfig, vision_model: nn.Module | None = None):
        super().__init__(config)
        self.vision_embed_dim = _attach_tower(self, "vision_model", config.vision_config, vision_model, config.vision_embed_dim)
        config.vision_embed_dim = self.vision_embed_dim
        self.visual_projection = nn.Linear(self.vision_embed_dim, config.projection_dim, bias=False)
        _auto_map(self)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.get_input_embeddings()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.FloatTensor | None = None, interpolate_pos_encoding: bool | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> SparseCLIPVisionModelOutput:
        _check_kwargs("forward", kwargs)
        outputs = self.get_image_features(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs)
        activations = outputs.pooler_output
        return SparseCLIPVisionModelOutput(
            image_embeds=F.normalize(activations, dim=-1),
            image_activations=activations,
            image_l0=(activations != 0).sum(-1).float().mean().detach(),
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=getattr(outputs, "attentions", None),
        )


class SparseCLIPTextModelWithProjection(_TextTower, SparseCLIPPreTrainedModel):
    """The text half of a SparseCLIPModel (loads from a full SparseCLIP folder, skipping the vision weights)."""

    input_modalities = ("text",)
    _keys_to_ignore_on_load_unexpected = [r"^vision_model\.", r"^visual_projection\.", r"^logit_scale$"]

    def __init__(self, config: SparseCLIPConfig, text_model: nn.Module | None = None):
        super().__init__(config)
        self.text_embed_dim = _attach_tower(self, "text_model", config.text_config, text_model, config.text_embed_dim)
        config.text_embed_dim = self.text_embed_dim
        self.text_projection = nn.Linear(self.text_embed_dim, config.projection_dim, bias=False)
        _auto_map(self)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.text_model.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SparseCLIPTextModelOutput:
        _check_kwargs("forward", kwargs)
        outputs = self.get_text_features(input_ids, attention_mask, position_ids, token_type_ids, return_dict=True, **kwargs)
        activations = outputs.pooler_output
        return SparseCLIPTextModelOutput(
            text_embeds=F.normalize(activations, dim=-1),
            text_activations=activations,
            text_l0=(activations != 0).sum(-1).float().mean().detach(),
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=getattr(outputs, "attentions", None),
        )


__all__ = [
    "AUTO_MAP",
    "SparseCLIPModel",
    "SparseCLIPPreTrainedModel",
    "SparseCLIPOutput",
    "SparseCLIPTextModelOutput",
    "SparseCLIPTextModelWithProjection",
    "SparseCLIPVisionModelOutput",
    "SparseCLIPVisionModelWithProjection",
    "contrastive_loss",
    "sparsify",
]
