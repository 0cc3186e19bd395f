"""A small vision-language model on Sparse CLIP features, and steering of its answers (the paper's application).

    from modeling_sparse_clip.vlm import SparseFeatureCaptioner
    captioner = SparseFeatureCaptioner.from_pretrained("outputs/embedded/vlm", encoder="outputs/embedded/sparse")
    captioner.steer_caption(image_activations, suppress=["dog"], boost=["cat"], top_k=2, strength=2.0)

Importing registers the model with `AutoConfig` / `AutoModelForImageTextToText` and marks its two Hub files
to be saved next to the weights.
"""

from transformers import AutoConfig, AutoModelForImageTextToText

from .configuration_sparse_feature_vlm import SparseFeatureVLMConfig
from .modeling_sparse_feature_vlm import SparseFeatureAdapter, SparseFeatureVLMForConditionalGeneration, SparseFeatureVLMOutput

AutoConfig.register("sparse_feature_vlm", SparseFeatureVLMConfig, exist_ok=True)
AutoModelForImageTextToText.register(SparseFeatureVLMConfig, SparseFeatureVLMForConditionalGeneration, exist_ok=True)
SparseFeatureVLMConfig.register_for_auto_class()
SparseFeatureVLMForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

from .steering_generation import GeneratedCaptions, SparseFeatureCaptioner, SteeredCaption, check_feature_source  # noqa: E402

__all__ = [
    "GeneratedCaptions", "SparseFeatureAdapter", "SparseFeatureCaptioner", "SparseFeatureVLMConfig",
    "SparseFeatureVLMForConditionalGeneration", "SparseFeatureVLMOutput", "SteeredCaption", "check_feature_source",
]
