"""Convert an OpenCLIP, MetaCLIP or OpenAI-layout ViT CLIP checkpoint into a SparseCLIP folder.

Three ways to say what the checkpoint is (`sparse-clip-convert-open-clip`, or
`python -m conversion.convert_open_clip_to_sparse_clip` from a checkout):

  # a built-in OpenCLIP architecture + a weights file (.pt/.pth/.bin/.safetensors, optionally a
  # training checkpoint with a `state_dict` wrapper and `module.` prefixes)
  sparse-clip-convert-open-clip --model_name ViT-B-32 --checkpoint epoch_30.pt --output_dir out
  # a folder with open_clip_config.json (+ open_clip_model.safetensors / open_clip_pytorch_model.bin),
  # as OpenCLIP's Hub export and the paper's OpenCLIP-based trainer write it
  sparse-clip-convert-open-clip --checkpoint ./laion-vit-b-32 --output_dir out
  # a state dict without a name: the shapes give the architecture (as open_clip.build_model_from_openai_state_dict
  # reads them) but NOT GELU vs QuickGELU; that comes from the checkpoint (OpenAI's export: QuickGELU), the
  # open_clip_train run's params.txt beside it, or you (--quick_gelu true|false); otherwise it is refused
  sparse-clip-convert-open-clip --checkpoint metaclip_b32_400m.pt --quick_gelu true --output_dir out

Add `--verify` to compare against OpenCLIP's own model on real images/captions (the output folder
appears only if it passes), `--signed_rotation_head 16384` for a wide ReLU head to start
sparsification fine-tuning from (an exact re-encoding, not the dense model; --verify prints the
drift), `--push_to_hub org/name` to publish. The converted model computes what the source does:
dense at any width, unless open_clip_config.json says `"sparse_clip_activation": "relu"` (the
paper's format: OpenCLIP weights + a ReLU after the projection) or you pass --activation.

In Python: `convert_open_clip_checkpoint(...)` is the whole command; `read_open_clip_source` +
`convert_open_clip` give the model and processor without writing anything.
"""

import json
import os
from dataclasses import asdict, dataclass

import torch

from ..modeling_sparse_clip import SparseCLIPModel
from .assemble import ConversionOptions, assemble_sparse_clip, publish_converted, write_converted
from .checkpoint_io import find_weights_file, load_torch_state_dict
from .clip_processing import build_clip_processor
from .key_maps import apply_key_map, open_clip_key_map
from .sparse_head import declared_activation
from .verify import (
    TOKENIZER_PROBES, check_within, parity_with_source, preprocessing_probe_images, print_table, real_images_and_captions,
    rotation_head_drift,
)

OPEN_CLIP_WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
# Keys of OpenAI's TorchScript-exported state dicts that describe, not weigh.
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
# OpenCLIP options that change the computation in ways a transformers CLIP tower cannot express.
UNSUPPORTED_VISION = {
    "timm_model_name": None, "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
    "pos_embed_type": "learnable", "final_ln_after_pool": False, "pool_type": "tok", "act_kwargs": None,
    "norm_kwargs": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
    "scale_attn_inner": False, "scale_attn": False, "scale_fc": False,
}
UNSUPPORTED_TEXT = {
    "hf_model_name": None, "hf_tokenizer_name": None, "ls_init_value": None, "embed_cls": False,
    "no_causal_mask": False, "final_ln_after_pool": False, "pool_type": "argmax", "proj_type": "linear",
    "proj_bias": False, "act_kwargs": None, "norm_kwargs": None, "qk_norm": False, "scaled_cosine_attn": False,
    "scale_heads": False, "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "vocab_size": 49408,
}
MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "init_logit_scale", "init_logit_bias", "nonscalar_logit_scale"}


@dataclass
class OpenCLIPSource:
    """A checkpoint with everything known about it."""

    state_dict: dict
    model_cfg: dict
    preprocess_cfg: dict
    checkpoint_file: str
    kind: str  # "name", "folder" or "inferred"
    folder: str | None = None
    model_name: str | None = None
    quick_gelu_source: str = ""  # where GELU vs QuickGELU was read from (printed)
    declared_activation: str | None = None  # the config's sparse_clip_activation, if it has one

    @property
    def quick_gelu(self) -> bool:
        return bool(self.model_cfg.get("quick_gelu", False))


# ---------------------------------------------------------------------------------------------
# Reading the source
# ---------------------------------------------------------------------------------------------
def infer_model_cfg(state_dict: dict, quick_gelu: bool) -> dict:
    """OpenCLIP model_cfg of an OpenAI-layout ViT state dict, from its shapes (OpenAI head width 64)."""
    if "visual.proj" not in state_dict or "visual.conv1.weight" not in state_dict:
        raise ValueError(
            "Cannot infer the architecture: no visual.proj / visual.conv1.weight (ModifiedResNet or non-CLIP checkpoints "
            "are not supported). Pass --model_name for an OpenCLIP architecture."
        )
    text_prefix = "text." if "text.token_embedding.weight" in state_dict else ""

    def count_blocks(prefix):
        return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})

    conv = state_dict["visual.conv1.weight"]
    vision_width, patch = conv.shape[0], conv.shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state_dict[f"{text_prefix}ln_final.weight"].shape[0]
    if vision_width % 64 or text_width % 64:
        raise ValueError(
            f"Cannot infer the head counts of widths {vision_width}/{text_width} (OpenAI layouts use 64-wide heads); "
            "pass --model_name or convert a folder with open_clip_config.json."
        )
    bias = {"init_logit_bias": float(state_dict["logit_bias"])} if "logit_bias" in state_dict else {}
    return {
        "embed_dim": state_dict[f"{text_prefix}text_projection"].shape[1],
        "quick_gelu": quick_gelu,
        **bias,
        "vision_cfg": {
            "image_size": grid * patch,
            "patch_size": patch,
            "width": vision_width,
            "layers": count_blocks("visual.transformer.resblocks."),
            "head_width": 64,
            "mlp_ratio": state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vision_width,
        },
        "text_cfg": {
            "context_length": state_dict[f"{text_prefix}positional_embedding"].shape[0],
            "vocab_size": state_dict[f"{text_prefix}token_embedding.weight"].shape[0],
            "width": text_width,
            "heads": text_width // 64,
            "layers": count_blocks(f"{text_prefix}transformer.resblocks."),
            "mlp_ratio": state_dict[f"{text_prefix}transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
        },
    }


def read_run_params(checkpoint_file: str) -> dict[str, str]:
    """open_clip_train's `params.txt` of the run a checkpoint belongs to (`<run>/checkpoints/epoch_N.pt`), if any:
    the `model`, `force_quick_gelu` and `pretrained` the run was started with."""
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(checkpoint_file)))
    path = os.path.join(run_dir, "params.txt")
    if not os.path.isfile(path):
        return {}
    params = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.partition(": ")
            if sep:
                params[key.strip()] = value.strip()
    return params


def _refuse_unknown_activation(checkpoint_file: str) -> ValueError:
    return ValueError(
        f"{checkpoint_file}: the weights cannot tell GELU from QuickGELU (a wrong guess changes every embedding). "
        "Pass --model_name (e.g. ViT-B-32 for GELU, ViT-B-32-quickgelu for QuickGELU; with --pretrained_tag, e.g. openai "
        "or metaclip_400m, its own setting is used), or --quick_gelu true|false."
    )


def read_open_clip_source(
    checkpoint: str, model_name: str | None = None, pretrained_tag: str | None = None, quick_gelu: bool | None = None
) -> OpenCLIPSource:
    """The checkpoint (weights file or open_clip_config.json folder) and its architecture and preprocessing.

    model_name: a built-in OpenCLIP architecture (else a folder's config, else the open_clip_train run's
    params.txt, else read off the shapes); pretrained_tag: its OpenCLIP tag, read for preprocessing and
    quick_gelu (nothing is downloaded); quick_gelu: state the activation. GELU vs QuickGELU is never guessed:
    it comes from the config / model name / tag / OpenAI export / params.txt, or from `quick_gelu`, or the
    checkpoint is refused.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    preprocess_cfg = asdict(PreprocessCfg())
    folder, declared, gelu_source = None, None, ""
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"--checkpoint {checkpoint!r} does not exist (no such file or folder).")
    if os.path.isdir(checkpoint):
        folder = checkpoint
        config_path = os.path.join(folder, "open_clip_config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{folder} has no open_clip_config.json; pass the weights file and --model_name instead.")
        try:
            with open(config_path, encoding="utf-8") as f:
                hf_config = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path} is not valid JSON: {err}") from None
        if not isinstance(hf_config, dict) or "model_cfg" not in hf_config:
            raise ValueError(f"{config_path} has no 'model_cfg'.")
        model_cfg, kind = hf_config["model_cfg"], "folder"
        gelu_source = f"{config_path} (quick_gelu={bool(model_cfg.get('quick_gelu', False))})"
        declared = declared_activation(hf_config, config_path)
        preprocess_cfg = merge_preprocess_dict(preprocess_cfg, hf_config.get("preprocess_cfg", {}))
        checkpoint_file = find_weights_file(folder, OPEN_CLIP_WEIGHT_FILES)
    else:
        checkpoint_file = checkpoint
        model_cfg, kind = None, "inferred"
        if model_name is None:
            params = read_run_params(checkpoint_file)
            if params.get("model"):
                model_name = params["model"]
                print(f"Architecture from the run's params.txt: model={model_name}, force_quick_gelu={params.get('force_quick_gelu')}")
                if quick_gelu is None and params.get("force_quick_gelu") == "True":
                    quick_gelu = True  # open_clip_train's --force-quick-gelu on a GELU-named architecture
        if model_name:
            model_cfg, kind = open_clip.get_model_config(model_name), "name"
            if model_cfg is None:
                raise ValueError(f"--model_name {model_name!r} is not a built-in OpenCLIP architecture; see open_clip.list_models().")
            gelu_source = f"--model_name {model_name} (quick_gelu={bool(model_cfg.get('quick_gelu', False))})"
            if pretrained_tag:
                tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained_tag)
                if not tag_cfg:
                    raise ValueError(f"OpenCLIP knows no tag {pretrained_tag!r} for {model_name}: {open_clip.list_pretrained_tags_by_model(model_name)}")
                preprocess_cfg = merge_preprocess_dict(preprocess_cfg, tag_cfg)
                if "quick_gelu" in tag_cfg:
                    model_cfg["quick_gelu"] = tag_cfg["quick_gelu"]
                    gelu_source = f"OpenCLIP's tag {model_name}/{pretrained_tag} (quick_gelu={tag_cfg['quick_gelu']})"
        elif pretrained_tag:
            raise ValueError("--pretrained_tag needs --model_name (a tag belongs to an architecture).")

    state_dict = load_torch_state_dict(checkpoint_file)
    if model_cfg is None:
        if quick_gelu is None:
            if not all(k in state_dict for k in OPENAI_METADATA_KEYS):
                raise _refuse_unknown_activation(checkpoint_file)
            quick_gelu, gelu_source = True, "the OpenAI export's metadata entries (OpenAI's CLIPs use QuickGELU)"
        model_cfg = infer_model_cfg(state_dict, quick_gelu=quick_gelu)
    if quick_gelu is not None and not gelu_source.startswith("the OpenAI"):
        gelu_source = f"--quick_gelu {str(quick_gelu).lower()}"
        model_cfg["quick_gelu"] = quick_gelu
    image_size = model_cfg["vision_cfg"].get("image_size", 224)
    preprocess_cfg["size"] = image_size
    return OpenCLIPSource(state_dict, model_cfg, preprocess_cfg, checkpoint_file, kind, folder, model_name, gelu_source, declared)


# ---------------------------------------------------------------------------------------------
# Architecture -> transformers tower configs
# ---------------------------------------------------------------------------------------------
def tower_configs(model_cfg: dict) -> tuple[dict, dict]:
    """transformers CLIPTextConfig / CLIPVisionConfig dicts equivalent to an OpenCLIP model_cfg."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg
    from transformers import CLIPTextConfig, CLIPVisionConfig

    unknown = set(model_cfg) - MODEL_KEYS
    if "multimodal_cfg" in unknown:
        raise ValueError("CoCa checkpoints (multimodal_cfg) are not CLIP dual encoders and cannot be converted.")
    if unknown:
        raise ValueError(f"Unsupported OpenCLIP model_cfg entries: {sorted(unknown)}.")
    try:
        vision, text = CLIPVisionCfg(**model_cfg["vision_cfg"]), CLIPTextCfg(**model_cfg["text_cfg"])
    except TypeError as err:
        raise ValueError(f"Unknown OpenCLIP tower option: {err}") from err
    problems = [f"vision_cfg.{k}={getattr(vision, k)!r} (need {v!r})" for k, v in UNSUPPORTED_VISION.items() if getattr(vision, k) != v]
    problems += [f"text_cfg.{k}={getattr(text, k)!r} (need {v!r})" for k, v in UNSUPPORTED_TEXT.items() if getattr(text, k) != v]
    if vision.block_type not in (None, "default") or text.block_type not in (None, "default"):
        problems.append("custom attention blocks (block_type)")
    if isinstance(vision.layers, (list, tuple)):
        problems.append("a ModifiedResNet vision tower (vision_cfg.layers is a list)")
    for name in ("image_size", "patch_size"):
        value = getattr(vision, name)
        if isinstance(value, (list, tuple)) and len(set(value)) != 1:
            problems.append(f"non-square vision_cfg.{name}={value}")
    if problems:
        raise ValueError(
            "This OpenCLIP architecture has no transformers CLIP equivalent, so it cannot be converted:\n  - " + "\n  - ".join(problems)
        )

    def square(v):
        return int(v[0] if isinstance(v, (list, tuple)) else v)

    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"  # OpenCLIP: QuickGELU or exact nn.GELU
    vision_config = CLIPVisionConfig(
        hidden_size=vision.width,
        intermediate_size=int(vision.width * vision.mlp_ratio),
        num_hidden_layers=vision.layers,
        num_attention_heads=vision.width // vision.head_width,
        image_size=square(vision.image_size),
        patch_size=square(vision.patch_size),
        hidden_act=act,
        layer_norm_eps=1e-5,
        projection_dim=model_cfg["embed_dim"],
    )
    text_config = CLIPTextConfig(
        vocab_size=text.vocab_size,
        hidden_size=text.width,
        intermediate_size=int(text.width * text.mlp_ratio),
        num_hidden_layers=text.layers,
        num_attention_heads=text.heads,
        max_position_embeddings=text.context_length,
        hidden_act=act,
        layer_norm_eps=1e-5,
        projection_dim=model_cfg["embed_dim"],
        # Pool at the first <|endoftext|> (49407), like OpenCLIP's argmax over ids (EOT is the largest id).
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return text_config.to_dict(), vision_config.to_dict()


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------
def convert_open_clip(source: OpenCLIPSource, options: ConversionOptions | None = None):
    """(SparseCLIPModel, CLIPProcessor) from an OpenCLIP source."""
    text_config, vision_config = tower_configs(source.model_cfg)
    state_dict = dict(source.state_dict)
    for key in OPENAI_METADATA_KEYS:  # consistency checks, then dropped
        if key in state_dict:
            value = int(state_dict.pop(key))
            want = {"input_resolution": vision_config["image_size"], "context_length": text_config["max_position_embeddings"], "vocab_size": text_config["vocab_size"]}[key]
            assert value == want, f"checkpoint says {key}={value}, the architecture has {want}"
    logit_bias = state_dict.pop("logit_bias", None)
    if (logit_bias is None) != (source.model_cfg.get("init_logit_bias") is None):
        raise ValueError(
            f"The config {'declares' if logit_bias is None else 'has no'} init_logit_bias but the checkpoint "
            f"{'has no' if logit_bias is None else 'has a'} logit_bias."
        )
    text_prefix = "text." if "text.token_embedding.weight" in state_dict else ""
    rules = open_clip_key_map(vision_config["num_hidden_layers"], text_config["num_hidden_layers"], text_prefix)
    what = f"OpenCLIP checkpoint {source.checkpoint_file}"
    weights = apply_key_map(state_dict, rules, what)
    print(f"Activation of the towers: {'QuickGELU' if source.quick_gelu else 'GELU'}, from {source.quick_gelu_source or 'the config'}")
    model = assemble_sparse_clip(
        text_config, vision_config, weights, options or ConversionOptions(), logit_bias=None if logit_bias is None else float(logit_bias),
        what=what, declared_activation=source.declared_activation,
    )
    processor = build_clip_processor(context_length=text_config["max_position_embeddings"], **source.preprocess_cfg)
    return model, processor


# ---------------------------------------------------------------------------------------------
# Verification against OpenCLIP itself
# ---------------------------------------------------------------------------------------------
def open_clip_reference(source: OpenCLIPSource, model_name: str | None = None):
    """The source checkpoint loaded by OpenCLIP's own code (eval mode, fp32): the model --verify compares with."""
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP, build_model_from_openai_state_dict

    model_name = model_name or source.model_name
    if source.kind == "folder":
        model = open_clip.create_model(f"local-dir:{source.folder}", quick_gelu=source.quick_gelu)
    elif source.kind == "name":
        model = open_clip.create_model(model_name, pretrained=source.checkpoint_file, quick_gelu=source.quick_gelu)
    elif all(k in source.state_dict for k in OPENAI_METADATA_KEYS) and "token_embedding.weight" in source.state_dict:
        # An OpenAI export: OpenCLIP's own reader of such state dicts (it infers the architecture itself).
        state_dict = {k: v.clone() for k, v in source.state_dict.items()}
        model = build_model_from_openai_state_dict(state_dict, quick_gelu=source.quick_gelu).float()
    else:
        cls = CustomTextCLIP if "text.token_embedding.weight" in source.state_dict else CLIP
        model = cls(**source.model_cfg)
        open_clip.load_checkpoint(model, source.checkpoint_file, strict=True)
    return model.eval()


def _crop_offsets_disagree(image_size: tuple[int, int], preprocess_cfg: dict) -> bool:
    """True when torchvision's centre crop (OpenCLIP) and transformers' standard processors' (floored offset)
    of this (width, height) image start 1 pixel apart; OpenCLIPImageProcessor rounds like torchvision."""
    size = preprocess_cfg["size"] if isinstance(preprocess_cfg["size"], int) else preprocess_cfg["size"][0]
    if preprocess_cfg.get("resize_mode", "shortest") != "shortest":
        return False
    short, long = sorted(image_size)
    margin = int(size * long / short) - size  # torchvision's shortest-edge resize, then the crop margin
    return int(round(margin / 2.0)) != margin // 2


def preprocessing_parity(source: OpenCLIPSource, output_dir: str) -> dict[str, float]:
    """The saved processor (as `AutoProcessor.from_pretrained(dir, trust_remote_code=True)` loads it) vs OpenCLIP's
    own `preprocess` and `tokenize`, on real photos in common shapes/modes and on tricky captions."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(output_dir, trust_remote_code=True)
    transform = image_transform_v2(PreprocessCfg(**source.preprocess_cfg), is_train=False)
    diffs = {}
    for name, image in preprocessing_probe_images().items():
        ours = processor(images=image, return_tensors="pt").pixel_values[0]
        diffs[f"pixels {name}"] = (ours - transform(image)).abs().max().item()
    _, captions = real_images_and_captions()
    texts = captions + list(TOKENIZER_PROBES)
    context_length = source.model_cfg["text_cfg"].get("context_length", 77)
    reference = open_clip.tokenize(texts, context_length=context_length)
    enc = processor.tokenizer(texts, padding="max_length", truncation=True, max_length=context_length, return_tensors="pt")
    diffs["captions with other token ids"] = float(((enc.input_ids * enc.attention_mask) != reference).any(dim=1).sum())
    return diffs


@torch.no_grad()
def verify_open_clip(reference_model, source: OpenCLIPSource, output_dir: str, tolerance: float) -> dict:
    """The saved SparseCLIP vs OpenCLIP's own model on real images/captions: preprocessing parity, then model
    parity on identical inputs (or, for --signed_rotation_head, the drift). Prints; raises when out of tolerance."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from transformers import AutoProcessor

    preprocessing = preprocessing_parity(source, output_dir)
    print_table("Preprocessing: saved processor (trust_remote_code) vs OpenCLIP preprocess/tokenize, max abs difference", preprocessing)

    images, captions = real_images_and_captions()
    context_length = source.model_cfg["text_cfg"].get("context_length", 77)
    transform = image_transform_v2(PreprocessCfg(**source.preprocess_cfg), is_train=False)
    pixels = torch.stack([transform(im) for im in images])
    ref_ids = open_clip.tokenize(captions, context_length=context_length)
    tokenizer = AutoProcessor.from_pretrained(output_dir, trust_remote_code=True).tokenizer
    inputs = tokenizer(captions, padding="max_length", truncation=True, max_length=context_length, return_tensors="pt")
    model = SparseCLIPModel.from_pretrained(output_dir).eval()

    # Same pixels into both models, each model's own ids (identical up to padding): model parity.
    source_image, source_text = reference_model.encode_image(pixels), reference_model.encode_text(ref_ids)
    source_logits, _ = reference_model.get_logits(pixels, ref_ids)
    if model.config.projection_dim != source_image.shape[-1]:  # --signed_rotation_head: drift, not parity
        drift = rotation_head_drift(model, pixels, inputs.input_ids, inputs.attention_mask, source_image, source_text, source_logits)
        print_table(f"--signed_rotation_head {model.config.projection_dim} vs dense OpenCLIP (NOT the dense model: drift)", drift)
        check_within({"re-encoding error (relative)": drift["re-encoding error (relative)"]}, 1e-4, "verify (exact linear re-encoding)")
        check_within({k: v for k, v in preprocessing.items()}, tolerance, "verify (preprocessing)")
        return {**preprocessing, **drift}
    diffs = parity_with_source(model, pixels, inputs.input_ids, inputs.attention_mask, source_image, source_text, source_logits, "OpenCLIP")
    print_table(f"SparseCLIP (activation={model.config.activation}) vs OpenCLIP's own model: max abs difference", diffs)
    scale = float(reference_model.logit_scale.exp())
    check_within(preprocessing, tolerance, "verify (preprocessing)")
    check_within({k: v for k, v in diffs.items() if "logits" not in k}, tolerance, "verify")
    check_within({k: v for k, v in diffs.items() if "logits" in k}, tolerance * max(1.0, scale), "verify (logits)")
    return {**preprocessing, **diffs}


def convert_open_clip_checkpoint(
    checkpoint: str,
    output_dir: str,
    *,
    model_name: str | None = None,
    pretrained_tag: str | None = None,
    quick_gelu: bool | None = None,
    options: ConversionOptions | None = None,
    verify: bool = False,
    verify_tolerance: float = 1e-4,
    push_to_hub: str | None = None,
) -> SparseCLIPModel:
    """Read, convert, (if asked) verify against OpenCLIP in a temporary folder, move it to `output_dir`, publish."""
    source = read_open_clip_source(checkpoint, model_name=model_name, pretrained_tag=pretrained_tag, quick_gelu=quick_gelu)
    model, processor = convert_open_clip(source, options)
    check = (lambda folder: verify_open_clip(open_clip_reference(source), source, folder, verify_tolerance)) if verify else None
    write_converted(model, processor, output_dir, verify=check)  # nothing appears under output_dir unless verified
    if push_to_hub:  # after verification passed
        publish_converted(output_dir, push_to_hub)
    return model
