"""Configuration of the sparse-feature VLM: Sparse CLIP image activations -> 2-layer MLP adapter -> causal LM.

A Hub file: it imports only transformers (and the standard library), so that `trust_remote_code=True`
users need nothing else.
"""

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# A language model small enough to train from scratch on two CPU cores in minutes.
TINY_LLAMA = {
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 64,
    "vocab_size": 2048,
    "tie_word_embeddings": True,
}


class SparseFeatureVLMConfig(PreTrainedConfig):
    r"""
    The paper's steering VLM at small scale: the frozen Sparse CLIP image encoder's sparse, non-negative
    activations (`get_image_features(...).pooler_output`) go through a 2-layer MLP adapter that writes
    `num_image_tokens` soft tokens into the language model's input, where the prompt holds as many
    `image_token_id` placeholders (the LLaVA layout).

    Args:
        text_config (`dict` or `PreTrainedConfig`): the causal language model (default: a 3-layer, 192-wide Llama).
        num_features (`int`): width of the Sparse CLIP activations the adapter reads (its `projection_dim`).
        adapter_hidden_size (`int`): hidden width of the 2-layer MLP adapter.
        adapter_act (`str`): activation between the adapter's two layers.
        num_image_tokens (`int`): soft tokens the adapter writes per image.
        image_token_id (`int`): the placeholder token id in `input_ids` that soft tokens replace.
        feature_scale (`float`): activations are divided by this before the adapter (set at training time to the
            typical largest activation of an image, so the adapter sees values of order 1). It is a fixed constant,
            never a per-image normalisation: a steered feature keeps its meaning relative to the others.
        input_top_k (`int`, *optional*): the adapter reads only each image's `input_top_k` largest activations (the
            rest are zeroed inside the model, after any steering edit). None reads them all. A knob for Sparse CLIPs
            much denser than the paper's (0.47% of dims active): `0.0047 * num_features` reproduces its density.
        prompt (`str`): the question the model was trained to answer.
        sparse_clip_model (`str`): where the Sparse CLIP whose features this VLM reads came from (provenance).
        sparse_clip_fingerprint (`str`): a hash of that model's weights; activations from another model are garbage here.
    """

    model_type = "sparse_feature_vlm"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=TINY_LLAMA)}

    text_config: PreTrainedConfig | dict | None = None
    num_features: int = 8192
    adapter_hidden_size: int = 512
    adapter_act: str = "gelu"
    num_image_tokens: int = 4
    image_token_id: int = 4
    feature_scale: float = 1.0
    input_top_k: int | None = None
    prompt: str = "What's in the picture?"
    sparse_clip_model: str | None = None
    sparse_clip_fingerprint: str | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("num_features", "adapter_hidden_size", "num_image_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.input_top_k is not None and not 0 < self.input_top_k <= self.num_features:
            raise ValueError(f"input_top_k must be in 1..num_features ({self.num_features}) or None, got {self.input_top_k!r}.")
        if not self.feature_scale > 0:
            raise ValueError(f"feature_scale must be > 0, got {self.feature_scale!r}.")
        vocab = getattr(self.text_config, "vocab_size", None)
        if vocab is not None and not 0 <= self.image_token_id < vocab:
            raise ValueError(f"image_token_id={self.image_token_id} is outside the language model's vocabulary (0..{vocab - 1}).")
        # The language model's own flag decides whether lm_head and the input embeddings are one matrix.
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", self.tie_word_embeddings))


__all__ = ["SparseFeatureVLMConfig"]
