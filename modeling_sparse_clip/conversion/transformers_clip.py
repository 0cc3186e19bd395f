"""Convert a transformers `CLIPModel` (a local folder or a Hub id) into a SparseCLIP folder.

  sparse-clip-convert-clip --source openai/clip-vit-base-patch32 --output_dir out --verify
  sparse-clip-convert-clip --source ./my-clip --output_dir out --signed_rotation_head 16384

(or `python -m conversion.convert_clip_to_sparse_clip ...` from a checkout). The towers keep
transformers' CLIP layout, so the key map is the identity over an explicit key list (checked for
counts and shapes); a source processor (preprocessor + tokenizer files) is carried over, otherwise
OpenCLIP's tokenizer and image processor are built. A CLIPModel is dense, so the converted model is
dense at any width, unless its config.json says `"sparse_clip_activation": "relu"` (the paper's format
saved as a CLIPModel) or --activation says otherwise. --verify runs transformers' CLIPModel itself; the
output folder appears only when it passes.

In Python: `convert_clip_checkpoint(...)` is the whole command; `convert_clip(folder)` gives the
model and processor without writing anything.
"""

import os

import torch

from ..modeling_sparse_clip import SparseCLIPModel
from .assemble import ConversionOptions, assemble_sparse_clip, publish_converted, write_converted
from .checkpoint_io import load_sharded_or_single
from .clip_processing import build_clip_processor
from .key_maps import apply_key_map, transformers_clip_key_map
from .sparse_head import declared_activation
from .verify import check_within, parity_with_source, print_table, real_images_and_captions, rotation_head_drift

# Buffers that older transformers versions saved; they hold arange() and carry no weights.
LEGACY_BUFFERS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def _looks_like_a_path(source: str) -> bool:
    """Hub ids are NAME or ORG/NAME; anything else, or anything whose first part exists here, is a local path."""
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source:
        return True
    return "/" in source and os.path.isdir(source.split("/", 1)[0])


def resolve_folder(source: str, revision: str | None = None) -> str:
    """A local folder for `source`: itself, or a Hub snapshot (config, weights, processor files only)."""
    if os.path.isdir(source):
        return source
    if os.path.exists(source):
        raise NotADirectoryError(f"--source {source!r} is a file; give the CLIPModel FOLDER (config.json + weights) or a Hub id ORG/NAME.")
    if _looks_like_a_path(source):
        raise FileNotFoundError(f"--source {source!r} does not exist (no such folder): give a CLIPModel folder (config.json + weights) or a Hub id ORG/NAME.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = ["*.json", "*.safetensors", "*.bin", "*.txt"]
    try:
        return snapshot_download(source, revision=revision, allow_patterns=patterns)
    except HFValidationError:
        raise FileNotFoundError(f"--source {source!r} is neither a local folder (no such path) nor a valid Hub id ORG/NAME.") from None
    except Exception as err:  # offline, unknown repo, no access: one line that says both readings failed
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(
            f"--source {source!r} is not a local folder (no such path) and could not be downloaded from the Hub: {reason}"
        ) from None


def read_clip_source(folder: str):
    """(CLIPConfig, state dict) of a transformers CLIPModel folder."""
    from transformers import AutoConfig, CLIPConfig

    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder} has no config.json, so it is not a saved transformers CLIPModel.")
    try:
        config = AutoConfig.from_pretrained(folder)
    except ValueError as err:  # an unknown model_type, or a config that is not JSON
        raise ValueError(f"{folder}/config.json cannot be read as a transformers config: {str(err).splitlines()[0]}") from None
    if not isinstance(config, CLIPConfig):
        raise ValueError(f"{folder} holds a {type(config).__name__} (model_type={config.model_type!r}), not a CLIPModel.")
    state_dict = load_sharded_or_single(folder)
    for key in LEGACY_BUFFERS:
        if key in state_dict:
            buffer = state_dict.pop(key)
            assert torch.equal(buffer.flatten(), torch.arange(buffer.numel())), f"{key} is not arange(); refusing to drop it"
    return config, state_dict


def source_processor(folder: str, config):
    """The source's own processor when it ships one, else OpenCLIP's exact tokenizer + image processor.

    A folder written by this package (its processor names `processing_open_clip` in `auto_map`) is read with
    the library's own classes, so no code from the source folder is executed and the file travels along.
    """
    from transformers import CLIPProcessor

    from .processing_open_clip import OpenCLIPImageProcessor, OpenCLIPTokenizer

    has_files = any(os.path.isfile(os.path.join(folder, f)) for f in ("preprocessor_config.json", "processor_config.json"))
    has_tokenizer = any(os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.json", "vocab.json"))
    if has_files and has_tokenizer:
        if os.path.isfile(os.path.join(folder, "processing_open_clip.py")):
            return CLIPProcessor(image_processor=OpenCLIPImageProcessor.from_pretrained(folder), tokenizer=OpenCLIPTokenizer.from_pretrained(folder))
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
    declared = declared_activation(config.to_dict(), f"{folder}/config.json")
    model = assemble_sparse_clip(
        config.text_config.to_dict(), config.vision_config.to_dict(), weights, options or ConversionOptions(), what=what, declared_activation=declared
    )
    return model, source_processor(folder, config)


@torch.no_grad()
def verify_clip(folder: str, output_dir: str, tolerance: float) -> dict:
    """transformers' CLIPModel (the source, its own forward) vs the saved SparseCLIP on real images/captions."""
    from transformers import AutoProcessor, CLIPModel

    reference = CLIPModel.from_pretrained(folder).eval()
    model = SparseCLIPModel.from_pretrained(output_dir).eval()
    processor = AutoProcessor.from_pretrained(output_dir, trust_remote_code=True)
    images, captions = real_images_and_captions()
    inputs = processor(images=images, text=captions, padding=True, return_tensors="pt")
    if inputs.input_ids.max() >= reference.config.text_config.vocab_size:
        raise ValueError("The source's vocabulary is smaller than the CLIP BPE's; ship the source's tokenizer with it.")
    source_image = reference.get_image_features(pixel_values=inputs.pixel_values).pooler_output
    source_text = reference.get_text_features(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask).pooler_output
    source_logits = reference(**inputs).logits_per_image
    args = (model, inputs.pixel_values, inputs.input_ids, inputs.attention_mask, source_image, source_text, source_logits)
    if model.config.projection_dim != source_image.shape[-1]:
        drift = rotation_head_drift(*args)
        print_table(f"--signed_rotation_head {model.config.projection_dim} vs dense CLIPModel (NOT the dense model: drift)", drift)
        check_within({"re-encoding error (relative)": drift["re-encoding error (relative)"]}, 1e-4, "verify (exact linear re-encoding)")
        return drift
    diffs = parity_with_source(*args, source_name="CLIPModel")
    print_table(f"SparseCLIP (activation={model.config.activation}) vs transformers CLIPModel: max abs difference", diffs)
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
    """Convert a CLIPModel folder or Hub id, (if asked) verify it in a temporary folder, move it to `output_dir`, publish."""
    folder = resolve_folder(source, revision)
    model, processor = convert_clip(folder, options)
    check = (lambda tmp: verify_clip(folder, tmp, verify_tolerance)) if verify else None
    write_converted(model, processor, output_dir, verify=check)  # nothing appears under output_dir unless verified
    if push_to_hub:  # after verification passed
        publish_converted(output_dir, push_to_hub)
    return model
