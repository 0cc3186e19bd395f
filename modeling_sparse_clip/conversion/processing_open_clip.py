"""OpenCLIP's exact eval preprocessing as transformers classes; a Hub code file (copied into every converted
folder, loaded by `AutoProcessor.from_pretrained(folder, trust_remote_code=True)`).

Why not plain `CLIPTokenizer` / `CLIPImageProcessor`: neither can express what `open_clip.tokenize` and
OpenCLIP's `preprocess` do, so a converted model fed by them would see other ids and other pixels than the
source model (measured: text-embedding cosine 0.71-0.91 on captions with HTML entities, mojibake or a
literal `<|endoftext|>`; one-pixel crop shifts on both scikit-learn photos):

- text: OpenCLIP cleans every caption in Python first: `ftfy.fix_text` (mojibake repair, NFC, ligatures,
  full-width forms, curly quotes), `html.unescape` twice, whitespace collapsed, lower case. A tokenizers
  normalizer has no ftfy or HTML unescaping. OpenCLIP's special tokens are spelled `<start_of_text>` /
  `<end_of_text>` (ids 49406/49407): a caption containing `<end_of_text>` ends there, a caption containing
  `<|endoftext|>` is ordinary text. `OpenCLIPTokenizer` cleans in Python, uses those special strings and
  OpenCLIP's pre-tokenizer regex, on the same BPE: identical ids up to the first end-of-text.
- images: OpenCLIP resizes the PIL image in its own mode (RGBA premultiplied, "L" as grey), centre-crops
  with torchvision's offset `round((size - crop) / 2)` (half to even) and only then converts to RGB.
  transformers' PIL backend converts to RGB first (compositing alpha on white) and floors the offset; its
  torchvision backend resizes uint8 tensors, not PIL images. `OpenCLIPImageProcessor` runs the same PIL
  operations in the same order for PIL inputs, then rescales and normalises like its parent.

The folder's `tokenizer_class` / `image_processor_type` stay CLIP's own, so loading WITHOUT
`trust_remote_code` still works and gives the standard CLIP classes (close to, not identical with, OpenCLIP).
This file imports only transformers, tokenizers, PIL, numpy and ftfy (OpenCLIP's own cleaning library).
"""

import html
import json
import os

import ftfy
from PIL import Image
from tokenizers import Regex, pre_tokenizers
from transformers import CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

SOT, EOT = "<start_of_text>", "<end_of_text>"
# open_clip.tokenizer.SimpleTokenizer.pat without its special-token alternatives (those are added tokens here).
OPEN_CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def open_clip_clean(text: str) -> str:
    """open_clip.tokenizer._clean_lower: ftfy, HTML unescape twice, whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


def _clean_inputs(text):
    if isinstance(text, str):
        return open_clip_clean(text)
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return [open_clip_clean(t) for t in text]
    return text  # pre-tokenized input: the caller split it


class OpenCLIPTokenizer(CLIPTokenizer):
    """`open_clip.tokenize` as a transformers tokenizer (same cleaning, special tokens and BPE)."""

    def __init__(self, vocab=None, merges=None, unk_token=EOT, bos_token=SOT, eos_token=EOT, pad_token=EOT, **kwargs):
        super().__init__(vocab=vocab, merges=merges, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token, **kwargs)
        # Python has cleaned and lower-cased the text already (`_encode_plus`); NFC is part of ftfy.
        self._tokenizer.normalizer = None
        self._tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(OPEN_CLIP_PATTERN), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )

    def _encode_plus(self, text, text_pair=None, *args, is_split_into_words: bool = False, **kwargs):
        if not is_split_into_words:
            text, text_pair = _clean_inputs(text), (None if text_pair is None else _clean_inputs(text_pair))
        return super()._encode_plus(text, text_pair, *args, is_split_into_words=is_split_into_words, **kwargs)

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs) -> list[str]:
        return super().tokenize(open_clip_clean(text), None if pair is None else open_clip_clean(pair), add_special_tokens, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        files = super().save_pretrained(save_directory, *args, **kwargs)
        # `tokenizer_class` names the standard class, so loaders without trust_remote_code still get a
        # CLIPTokenizer; `auto_map` (written by register_for_auto_class) points trust_remote_code here.
        config_path = os.path.join(save_directory, "tokenizer_config.json")
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
            config["tokenizer_class"] = "CLIPTokenizer"
            with open(config_path, "w", encoding="utf-8") as f:
                f.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return files


def torchvision_resize_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after torchvision's `Resize(size)` (shortest edge to `size`, long edge truncated)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


class OpenCLIPImageProcessor(CLIPImageProcessorPil):
    """OpenCLIP's eval `preprocess` (Resize -> CenterCrop -> RGB -> ToTensor -> Normalize) for PIL images."""

    def _open_clip_pil(self, image: Image.Image, size: dict, crop_size: dict, resample, do_resize: bool, do_center_crop: bool) -> Image.Image:
        if do_resize:
            if "shortest_edge" in size and size["shortest_edge"]:
                new_size = torchvision_resize_size(*image.size, size["shortest_edge"])
            else:
                new_size = (size["width"], size["height"])
            image = image.resize(new_size, resample=int(resample))
        if do_center_crop:
            width, height = image.size
            crop_w, crop_h = crop_size["width"], crop_size["height"]
            if crop_w > width or crop_h > height:
                raise ValueError(f"centre crop {crop_w}x{crop_h} is larger than the resized image {width}x{height}")
            top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))  # torchvision's CenterCrop
            image = image.crop((left, top, left + crop_w, top + crop_h))
        return image.convert("RGB")

    def preprocess(self, images, *args, **kwargs):
        single = isinstance(images, Image.Image)
        batch = [images] if single else images
        if not (isinstance(batch, (list, tuple)) and batch and all(isinstance(im, Image.Image) for im in batch)):
            return super().preprocess(images, *args, **kwargs)  # arrays/tensors: the standard CLIP path
        get = lambda name: kwargs.pop(name) if kwargs.get(name) is not None else getattr(self, name)  # noqa: E731
        do_resize, size, crop_size = get("do_resize"), dict(get("size")), dict(get("crop_size"))
        resample, do_center_crop = get("resample"), get("do_center_crop")
        batch = [self._open_clip_pil(im, size, crop_size, resample, do_resize, do_center_crop) for im in batch]
        return super().preprocess(batch, *args, do_resize=False, do_center_crop=False, **kwargs)

    def to_dict(self):
        out = super().to_dict()
        out["image_processor_type"] = "CLIPImageProcessor"  # the standard class for loaders without remote code
        return out


OpenCLIPTokenizer.register_for_auto_class("AutoTokenizer")
OpenCLIPImageProcessor.register_for_auto_class("AutoImageProcessor")
