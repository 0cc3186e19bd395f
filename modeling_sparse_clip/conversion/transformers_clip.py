"""Convert a transformers `CLIPModel` (a local folder or a Hub id) into a SparseCLIP folder.

  sparse-clip-convert-clip --source openai/clip-vit-base-patch32 --output_dir out --verify
  sparse-clip-convert-clip --source ./my-clip --output_dir out --sparsify 16384

(or `python -m conversion.convert_clip_to_sparse_clip ...` from a checkout). The towers keep
transformers' CLIP layout, so the key map is the identity over an explicit key list (checked for
counts and shapes); a source processor (preprocessor + tokenizer files) is carried over, otherwise
the CLIP BPE tokenizer and the standard CLIP image processor are built.

In Python: `convert_clip_checkpoint(...)` is the whole command; `convert_clip(folder)` gives the
model and processor without writing anything.
"""

import os

import torch

from ..modeling_sparse_clip import SparseCLIPModel
from .assemble import ConversionOptions, assemble_sparse_clip, publish_converted, save_converted
from .checkpoint_io import load_sharded_or_single
from .clip_processing import build_clip_processor
from .key_maps import apply_key_map, transformers_clip_key_map
from .verify import check_within, max_abs_diffs, print_table, ranking_agreement, real_images_and_captions, reference_outputs, sparse_clip_outputs

# Buffers that older transformers versions saved; they hold arange() and carry no weights.
LEGACY_BUFFERS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def resolve_folder(source: str, revision: str | None = None) -> str:
    """A local folder for `source`: itself, or a Hub snapshot (config, weights, processor files only)."""
    if os.path.isdir(source):
        return source
    if source.startswith((".", "/", "~")) or source.count("/") > 1:  # a path, not a Hub id ORG/NAME
        raise FileNotFoundError(f"No CLIPModel folder at {source!r}: give a folder with config.json and weights, or a Hub id ORG/NAME.")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.bin", "*.txt"]
    return snapshot_download(source, revision=revision, allow_patterns=patterns)


def read_clip_source(folder: str):
    """(CLIPConfig, state dict) of a transformers CLIPModel folder."""
    from transformers import AutoConfig, CLIPConfig

    config = AutoConfig.from_pretrained(folder)
    if not isinstance(config, CLIPConfig):
        raise ValueError(f"{folder} holds a {type(config).__name__} (model_type={config.model_type!r}), not a CLIPModel.")
    state_dict = load_sharded_or_single(folder)
    for key in LEGACY_BUFFERS:
        if key in state_dict:
            buffer = state_dict.pop(key)
            assert torch.equal(buffer.flatten(), torch.arange(buffer.numel())), f"{key} is not arange(); refusing to drop it"
    return config, state_dict


def source_processor(folder: str, config):
    """The source's own CLIPProcessor when it ships one, else the CLIP BPE tokenizer + CLIP image processor."""
    from transformers import CLIPProcessor

    has_files = any(os.path.isfile(os.path.join(folder, f)) for f in ("preprocessor_config.json", "processor_config.json"))
    has_tokenizer = any(os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.json", "vocab.json"))
    if has_files and has_tokenizer:
        return CLIPProcessor.from_pretrained(folder)
    return build_clip_processor(
        image_size=config.vision_config.image_size, context_length=config.text_config.max_position_embeddings
    )


def convert_clip(folder: str, options: ConversionOptions | None = None):
    """(SparseCLIPModel, CLIPProcessor) from a transformers CLIPModel folder."""
    config, state_dict = read_clip_source(folder)
    rules = transformers_clip_key_map(config.vision_config.num_hidden_layers, config.text_config.num_hidden_layers)
    what = f"CLIPModel {folder}"
    weights = apply_key_map(state_dict, rules, what)
    model = assemble_sparse_clip(config.text_config.to_dict(), config.vision_config.to_dict(), weights, options or ConversionOptions(), what=what)
    return model, source_processor(folder, config)


@torch.no_grad()
def verify_clip(folder: str, output_dir: str, tolerance: float) -> dict:
    """Run transformers' CLIPModel and the saved SparseCLIP on real images/captions; print the differences."""
    from transformers import CLIPModel, CLIPProcessor

    reference = CLIPModel.from_pretrained(folder).eval()
    model = SparseCLIPModel.from_pretrained(output_dir).eval()
    processor = CLIPProcessor.from_pretrained(output_dir)
    images, captions = real_images_and_captions()
    inputs = processor(images=images, text=captions, padding=True, return_tensors="pt")
    if inputs.input_ids.max() >= reference.config.text_config.vocab_size:
        raise ValueError("The source's vocabulary is smaller than the CLIP BPE's; ship the source's tokenizer with it.")
    image_features = reference.get_image_features(pixel_values=inputs.pixel_values).pooler_output
    text_features = reference.get_text_features(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask).pooler_output
    converted = sparse_clip_outputs(model, inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
    dense_logits = reference(**inputs).logits_per_image
    if model.config.projection_dim != image_features.shape[-1]:
        agreement = ranking_agreement(dense_logits, converted["logits_per_image"])
        print_table("Zero-shot ranking agreement, wide ReLU head vs dense CLIPModel", agreement)
        return agreement
    expected = reference_outputs(image_features, text_features, reference.logit_scale.exp(), activation=model.config.activation)
    diffs = max_abs_diffs(expected, converted)
    if model.config.activation == "none":  # CLIPModel's own logits too, not only ours recomputed
        diffs["logits vs CLIPModel.forward"] = (dense_logits - converted["logits_per_image"]).abs().max().item()
    print_table(f"SparseCLIP ({model.config.activation}) vs transformers CLIPModel: max abs difference", diffs)
    scale = float(reference.logit_scale.exp())
    check_within({k: v for k, v in diffs.items() if "logits" not in k}, tolerance, "verify")
    check_within({k: v for k, v in diffs.items() if "logits" in k}, tolerance * max(1.0, scale), "verify (logits)")
    return diffs


def convert_clip_checkpoint(
    source: str,
    output_dir: str,
    *,
    revision: str | None = None,
    options: ConversionOptions | None = None,
    verify: bool = False,
    verify_tolerance: float = 1e-4,
    push_to_hub: str | None = None,
) -> SparseCLIPModel:
    """Convert a CLIPModel folder or Hub id and save it to `output_dir`; then, if asked, verify and publish."""
    folder = resolve_folder(source, revision)
    model, processor = convert_clip(folder, options)
    save_converted(model, processor, output_dir)
    if verify:
        verify_clip(folder, output_dir, verify_tolerance)
    if push_to_hub:  # after verification passed
        publish_converted(output_dir, push_to_hub)
    return model
