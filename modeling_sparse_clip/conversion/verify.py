"""Parity checks of a converted model against its source library's OWN forward, on real images and captions.

Images: the two photographs shipped with scikit-learn (`load_sample_images`: a temple in China and
a flower, 640x427) and emoji rendered from the Noto Color Emoji font (136x128). Captions describe
them. Preprocessing probes add the photos' common variants (1024x768, portrait, tiny, grey, RGBA
with transparency) and captions that exercise OpenCLIP's text cleaning and special tokens. No
network and no synthetic tensors: what runs through both models is real pixels and text.

The reference is always the source library's model (OpenCLIP's `CLIP`, transformers' `CLIPModel`):
its projected features and its own logits. The only thing ever added to it is a head activation
the source's config declares (or the user asked for with --activation), and the table says so.
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
# Captions where a tokenizer without OpenCLIP's cleaning / special tokens gives other ids (tests/fixtures has more).
TOKENIZER_PROBES = (
    "Tom &amp; Jerry",
    "caf\u00c3\u00a9 au lait",  # mojibake of "café": ftfy repairs it
    "a dog <|endoftext|> and a cat",  # plain text for OpenCLIP
    "a dog <end_of_text> and a cat",  # OpenCLIP's own end-of-text spelling: the caption ends there
    "&amp;lt;b&amp;gt;bold&amp;lt;/b&amp;gt;",  # unescaped twice
    "\ufb01sh \uff21\uff22\uff23 \u201cquoted\u201d",  # ligature, full-width, curly quotes
)


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


def preprocessing_probe_images() -> dict[str, Image.Image]:
    """scikit-learn's two photos and the shapes and modes a user's images come in, all from real pixels."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    china, flower = (Image.fromarray(a) for a in sample.images)
    rgba = np.array(flower.convert("RGBA"))
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1]).astype(np.uint8)[None]  # a real alpha ramp
    return {
        "china 640x427": china,
        "flower 640x427": flower,
        "china 1024x768": china.resize((1024, 768), Image.Resampling.BICUBIC),
        "flower portrait 427x640": flower.transpose(Image.Transpose.ROTATE_90),
        "china tiny 40x27": china.resize((40, 27), Image.Resampling.BICUBIC),
        "china 227x224": china.resize((227, 224), Image.Resampling.BICUBIC),
        "china grey (L)": china.convert("L"),
        "flower RGBA (alpha ramp)": Image.fromarray(rgba),
    }


@torch.no_grad()
def pre_activation_features(model, pixel_values, input_ids, attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The converted model's projected features BEFORE its head activation (what the source's encoders return)."""
    image = model.visual_projection(model.pool_image_tower(pixel_values))
    text = model.text_projection(model.pool_text_tower(input_ids, attention_mask))
    return image, text


@torch.no_grad()
def parity_with_source(model, pixel_values, input_ids, attention_mask, source_image, source_text, source_logits, source_name: str) -> dict[str, float]:
    """Max abs differences between a converted model (same width as the source) and the source's own outputs."""
    pre_image, pre_text = pre_activation_features(model, pixel_values, input_ids, attention_mask)
    out = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
    diffs = {
        f"image features vs {source_name}": (pre_image - source_image).abs().max().item(),
        f"text features vs {source_name}": (pre_text - source_text).abs().max().item(),
    }
    activation = model.config.activation
    if activation == "none":
        diffs[f"logits vs {source_name} forward"] = (out.logits_per_image - source_logits).abs().max().item()
        return diffs
    if activation != "relu":
        raise ValueError(f"no parity reference for activation={activation!r}")
    # The source's config declares a ReLU head (or --activation relu asked for one): the source's own features
    # through that ReLU, and the logits they give.
    expected = reference_outputs(source_image, source_text, model.effective_logit_scale(), model.config.logit_bias, "relu")
    diffs[f"image activations vs relu({source_name})"] = (out.image_activations - expected["image_features"]).abs().max().item()
    diffs[f"text activations vs relu({source_name})"] = (out.text_activations - expected["text_features"]).abs().max().item()
    diffs[f"logits vs relu({source_name}) logits"] = (out.logits_per_image - expected["logits_per_image"]).abs().max().item()
    return diffs


@torch.no_grad()
def rotation_head_drift(model, pixel_values, input_ids, attention_mask, source_image, source_text, source_logits) -> dict[str, float]:
    """How far a --signed_rotation_head model is from its dense source: exactness of the linear re-encoding,
    ranking agreement, cosine shift and L0 (the fraction of active dimensions)."""
    out = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
    u_img, u_txt = out.image_activations, out.text_activations
    half = u_img.shape[-1] // 2
    d_img, d_txt = u_img[:, :half] - u_img[:, half:], u_txt[:, :half] - u_txt[:, half:]
    dense_gram = source_image @ source_text.T
    cos_dense = F.normalize(source_image, dim=-1) @ F.normalize(source_text, dim=-1).T
    cos_wide = out.image_embeds @ out.text_embeds.T
    shift = cos_wide - cos_dense
    drift = {
        "re-encoding error (relative)": ((d_img @ d_txt.T - dense_gram).abs().max() / dense_gram.abs().max()).item(),
        **ranking_agreement(source_logits, out.logits_per_image),
        "cosine shift mean": shift.mean().item(),
        "cosine shift max abs": shift.abs().max().item(),
        "cosine spread ratio wide/dense": (cos_wide.std() / cos_dense.std()).item(),
        "L0 image (fraction active)": (u_img > 0).float().mean().item(),
        "L0 text (fraction active)": (u_txt > 0).float().mean().item(),
    }
    return drift


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
