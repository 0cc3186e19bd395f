"""Parity checks of a converted model against its source library, on real images and captions.

Images: the two photographs shipped with scikit-learn (`load_sample_images`: a temple in China and
a flower, 640x427) and emoji rendered from the Noto Color Emoji font (136x128). Captions describe
them. No network and no synthetic tensors: what runs through both models is real pixels and text.
"""

import math
import unicodedata

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..constants import EMOJI_FONT, EMOJI_FONT_SIZE

PHOTO_CAPTIONS = {
    "china.jpg": "a photo of a chinese temple among trees",
    "flower.jpg": "a close-up photo of a pink flower!",
}
DEFAULT_EMOJI = ("\N{GRINNING FACE}", "\N{CAT FACE}", "\N{ROCKET}", "\N{SLICE OF PIZZA}")


def render_emoji(character: str) -> Image.Image:
    """One emoji as a 136x128 RGB image on white (Noto's only bitmap strike)."""
    try:
        font = ImageFont.truetype(str(EMOJI_FONT), EMOJI_FONT_SIZE)
    except OSError as err:
        raise FileNotFoundError(f"{EMOJI_FONT} is missing: install the apt package fonts-noto-color-emoji.") from err
    image = Image.new("RGB", (136, 128), "white")
    ImageDraw.Draw(image).text((0, 0), character, font=font, embedded_color=True)
    return image


def real_images_and_captions(emoji: tuple[str, ...] = DEFAULT_EMOJI) -> tuple[list[Image.Image], list[str]]:
    """Paired real images and captions: scikit-learn's two photos, then rendered emoji."""
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    images, captions = [], []
    for path, array in zip(sample.filenames, sample.images):
        images.append(Image.fromarray(array).convert("RGB"))
        captions.append(PHOTO_CAPTIONS[path.replace("\\", "/").rsplit("/", 1)[-1]])
    for character in emoji:
        images.append(render_emoji(character))
        captions.append(f"an emoji of a {unicodedata.name(character).lower()}")
    return images, captions


@torch.no_grad()
def sparse_clip_outputs(model, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask=None) -> dict:
    """Un-normalised features and image->text logits of a SparseCLIPModel (its logits include `config.logit_bias`)."""
    out = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
    return {
        "image_features": out.image_activations,
        "text_features": out.text_activations,
        "logits_per_image": out.logits_per_image,
    }


def reference_outputs(image_features, text_features, logit_scale, logit_bias=None, activation="none") -> dict:
    """What a SparseCLIP with this activation must output, from a source model's projected features."""
    if activation == "relu":
        image_features, text_features = F.relu(image_features), F.relu(text_features)
    elif activation != "none":
        raise ValueError(f"no parity reference for activation={activation!r}")
    logits = float(logit_scale) * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    if logit_bias is not None:
        logits = logits + float(logit_bias)
    return {"image_features": image_features, "text_features": text_features, "logits_per_image": logits}


def max_abs_diffs(reference: dict, converted: dict) -> dict[str, float]:
    diffs = {}
    for key, ref in reference.items():
        got = converted[key]
        if ref.shape != got.shape:
            raise AssertionError(f"{key}: converted shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
        diffs[key] = (ref.float() - got.float()).abs().max().item()
    return diffs


def ranking_agreement(dense_logits: torch.Tensor, sparse_logits: torch.Tensor) -> dict[str, float]:
    """How well the sparse model keeps the dense zero-shot rankings (rows: images, columns: texts).

    top1_*: fraction of images (texts) whose best text (image) is the same in both models;
    spearman_*: mean Spearman rank correlation of each row (column) between the two models.
    """
    from scipy.stats import spearmanr

    def per_axis(a, b):
        top1 = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
        rhos = [spearmanr(x.numpy(), y.numpy()).statistic for x, y in zip(a, b)] if a.shape[-1] > 1 else [1.0]
        return top1, float(sum(rhos) / len(rhos))

    dense_logits, sparse_logits = dense_logits.detach().float(), sparse_logits.detach().float()
    t_i, s_i = per_axis(dense_logits, sparse_logits)
    t_t, s_t = per_axis(dense_logits.T, sparse_logits.T)
    return {"top1_image_to_text": t_i, "top1_text_to_image": t_t, "spearman_image_to_text": s_i, "spearman_text_to_image": s_t}


def print_table(title: str, values: dict[str, float]) -> None:
    print(f"\n{title}")
    for key, value in values.items():
        print(f"  {key:<28} {value:.3e}" if isinstance(value, float) and not math.isnan(value) else f"  {key:<28} {value}")


def check_within(diffs: dict[str, float], tolerance: float, what: str) -> None:
    bad = {k: v for k, v in diffs.items() if not v <= tolerance}
    if bad:
        raise AssertionError(f"{what}: max abs differences above {tolerance:g}: {bad}")
