"""The sparse-feature VLM: Sparse CLIP image activations -> 2-layer MLP adapter -> soft tokens -> causal LM.

A Hub file: it imports only torch, transformers and `configuration_sparse_feature_vlm` (one-level relative
import), because `save_pretrained` copies it flat next to the weights.

The model reads the sparse activations, not pixels: the Sparse CLIP image encoder is frozen and runs
outside (once per image, cached), and steering edits those activations before they reach the adapter.
The layout is LLaVA's: `input_ids` hold `num_image_tokens` placeholders (`image_token_id`) whose
embeddings the adapter output replaces, so `generate` works unchanged.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from .configuration_sparse_feature_vlm import SparseFeatureVLMConfig


# transformers 5.24 renamed the key-value cache `past_key_values` -> `cache` (inputs and outputs); the
# name is read from transformers' own output class, so this file works on both sides of the rename.
_CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class SparseFeatureVLMOutput(CausalLMOutputWithPast):
    """Causal-LM output plus the soft tokens the adapter wrote (None on cached decoding steps)."""

    image_hidden_states: torch.FloatTensor | None = None


class SparseFeatureAdapter(nn.Module):
    """The paper's 2-layer MLP adapter: [B, num_features] activations -> [B, num_image_tokens, hidden]."""

    def __init__(self, config: SparseFeatureVLMConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.num_image_tokens = config.num_image_tokens
        self.feature_scale = config.feature_scale
        self.input_top_k = config.input_top_k
        self.linear_1 = nn.Linear(config.num_features, config.adapter_hidden_size)
        self.act = ACT2FN[config.adapter_act]
        self.linear_2 = nn.Linear(config.adapter_hidden_size, config.num_image_tokens * hidden)

    def keep_top_k(self, image_features: torch.Tensor) -> torch.Tensor:
        """Each row's `input_top_k` largest activations, the rest zeroed (identity when input_top_k is None)."""
        if self.input_top_k is None or self.input_top_k >= image_features.shape[-1]:
            return image_features
        values, indices = image_features.topk(self.input_top_k, dim=-1)
        return torch.zeros_like(image_features).scatter(-1, indices, values)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        x = self.linear_2(self.act(self.linear_1(self.keep_top_k(image_features) / self.feature_scale)))
        return x.view(image_features.shape[0], self.num_image_tokens, -1)


class SparseFeatureVLMPreTrainedModel(PreTrainedModel):
    config: SparseFeatureVLMConfig
    config_class = SparseFeatureVLMConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = [_CACHE]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True


class SparseFeatureVLMForConditionalGeneration(SparseFeatureVLMPreTrainedModel, GenerationMixin):
    """Answers a prompt about an image given only its Sparse CLIP activations (`image_features`)."""

    _tied_weights_keys = {"lm_head.weight": "language_model.embed_tokens.weight"}

    def __init__(self, config: SparseFeatureVLMConfig):
        super().__init__(config)
        self.adapter = SparseFeatureAdapter(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def _check_features(self, image_features: torch.Tensor) -> None:
        if image_features.ndim != 2 or image_features.shape[-1] != self.config.num_features:
            raise ValueError(
                f"image_features must be [batch, {self.config.num_features}] Sparse CLIP activations "
                f"(get_image_features(...).pooler_output), got shape {tuple(image_features.shape)}."
            )

    def embed_inputs(self, input_ids: torch.LongTensor, image_features: torch.Tensor | None = None):
        """Token embeddings with the image placeholders replaced by the adapter's soft tokens."""
        inputs_embeds = self.get_input_embeddings()(input_ids)
        if image_features is None:
            return inputs_embeds, None
        self._check_features(image_features)
        soft_tokens = self.adapter(image_features.to(inputs_embeds.dtype))
        placeholders = input_ids == self.config.image_token_id
        expected = soft_tokens.shape[0] * soft_tokens.shape[1]
        if int(placeholders.sum()) != expected:
            raise ValueError(
                f"input_ids hold {int(placeholders.sum())} image placeholders (id {self.config.image_token_id}) but "
                f"{soft_tokens.shape[0]} images x {soft_tokens.shape[1]} soft tokens = {expected} are needed: "
                "build the prompt with `build_prompt_ids`."
            )
        mask = placeholders.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, soft_tokens.to(inputs_embeds.dtype)), soft_tokens

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values=None,
        **kwargs,
    ) -> SparseFeatureVLMOutput:
        r"""
        image_features (`torch.FloatTensor` of shape `(batch, num_features)`): the Sparse CLIP image activations
            (un-normalised, post-ReLU), possibly steered. Needed on the first (prefill) step only.
        labels (`torch.LongTensor`): next-token targets, -100 where no loss is taken (image tokens, prompt).
        cache / past_key_values: the key-value cache (the name transformers < 5.24 used is accepted too).
        """
        cache = cache if cache is not None else past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Give exactly one of input_ids or inputs_embeds.")
        soft_tokens = None
        if inputs_embeds is None:
            inputs_embeds, soft_tokens = self.embed_inputs(input_ids, image_features)
        elif image_features is not None:
            raise ValueError("image_features go with input_ids (their placeholders mark where the soft tokens go), not with inputs_embeds.")
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{_CACHE: cache},
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs)
        return SparseFeatureVLMOutput(
            loss=loss,
            logits=logits,
            **{_CACHE: getattr(outputs, _CACHE)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=soft_tokens,
        )

    def prepare_inputs_for_generation(self, input_ids, *args, is_first_iteration: bool | None = False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, *args, is_first_iteration=is_first_iteration, **kwargs)
        # The soft tokens are in the cache after the prefill; later steps carry no placeholder.
        if not is_first_iteration and model_inputs.get("use_cache", True):
            model_inputs.pop("image_features", None)
        return model_inputs


__all__ = ["SparseFeatureAdapter", "SparseFeatureVLMForConditionalGeneration", "SparseFeatureVLMOutput", "SparseFeatureVLMPreTrainedModel"]
