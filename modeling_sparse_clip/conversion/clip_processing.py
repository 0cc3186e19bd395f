"""The processor of a converted CLIP: OpenCLIP's exact tokenizer and image preprocessing as
transformers classes (`processing_open_clip.py`, a Hub code file), paired by `CLIPProcessor`.

Tokenizer: built from OpenCLIP's `bpe_simple_vocab_16e6.txt.gz` exactly the way OpenCLIP's
`SimpleTokenizer` builds its vocabulary (256 byte symbols, the same with `</w>`, 48,894 merges,
then `<start_of_text>` / `<end_of_text>`: 49,408 ids). It is constructed with `vocab=dict,
merges=list`: in transformers 5.23 the `vocab_file=`/`merges_file=` keywords silently give wrong
ids. `OpenCLIPTokenizer` adds OpenCLIP's Python text cleaning (ftfy, HTML unescape twice,
whitespace) and special-token spelling; padding uses `<end_of_text>` (OpenCLIP pads with id 0,
"!", which cannot be a pad token: added tokens are matched inside text). The ids up to and
including the first end-of-text equal `open_clip.tokenize`'s; what follows is padding CLIP never
reads (causal attention, pooled at the first end-of-text token).

Image processor: `OpenCLIPImageProcessor` runs OpenCLIP's eval transform (Resize of the PIL image
in its own mode, torchvision's centre-crop rounding, RGB, ToTensor, Normalize) bit for bit on PIL
inputs. Why not a standard backend (measured on scikit-learn's photos and their variants):
transformers' PIL backend floors the crop offset (torchvision rounds half to even: a one-pixel
shift on 640x427, 427x640, 227x224, ...) and composites alpha on white before resizing; its
torchvision backend resizes uint8 tensors instead of PIL images (~0.015 off after normalising).
Saved folders still name `CLIPTokenizer` / `CLIPImageProcessor` for loaders without
`trust_remote_code`; `auto_map` points `trust_remote_code=True` at the exact classes.
"""

import gzip
from importlib import resources

from transformers import CLIPProcessor
from transformers.image_utils import PILImageResampling

from .processing_open_clip import EOT, SOT, OpenCLIPImageProcessor, OpenCLIPTokenizer

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BOS, EOS = SOT, EOT  # OpenCLIP's spelling (OpenAI's HF tokenizers say <|startoftext|> / <|endoftext|>)
_INTERPOLATIONS = {"bicubic": PILImageResampling.BICUBIC, "bilinear": PILImageResampling.BILINEAR, "nearest": PILImageResampling.NEAREST}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (the order fixes the first 256 ids)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_bpe_vocab_and_merges(bpe_path: str | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """OpenAI CLIP's BPE vocabulary (49,408 ids) and merges from `bpe_simple_vocab_16e6.txt.gz`."""
    if bpe_path is None:
        bpe_path = str(resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    assert len(vocab) == len(tokens) == 49408, len(vocab)
    return vocab, merges


def build_clip_tokenizer(context_length: int = 77, bpe_path: str | None = None) -> OpenCLIPTokenizer:
    """`open_clip.tokenize`'s ids (cleaning and special tokens included) as a transformers tokenizer."""
    vocab, merges = clip_bpe_vocab_and_merges(bpe_path)
    return OpenCLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context_length)


def build_image_processor(
    size: int | tuple[int, int] = 224,
    mean=OPENAI_CLIP_MEAN,
    std=OPENAI_CLIP_STD,
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
    **ignored,
) -> OpenCLIPImageProcessor:
    """An image processor identical to OpenCLIP's eval transform for this `PreprocessCfg` (PIL inputs)."""
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is not supported; use one of {sorted(_INTERPOLATIONS)}.")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    common = dict(image_mean=list(mean), image_std=list(std), resample=_INTERPOLATIONS[interpolation], do_convert_rgb=True)
    if resize_mode == "shortest":
        if height != width:
            raise ValueError(f"resize_mode='shortest' with a non-square size {size} has no CLIPImageProcessor equivalent.")
        return OpenCLIPImageProcessor(size={"shortest_edge": height}, crop_size={"height": height, "width": width}, do_center_crop=True, **common)
    if resize_mode == "squash":
        return OpenCLIPImageProcessor(size={"height": height, "width": width}, do_center_crop=False, **common)
    raise ValueError(
        f"resize_mode={resize_mode!r} (OpenCLIP's keep-ratio resize + pad) has no CLIPImageProcessor equivalent; "
        "only 'shortest' and 'squash' are converted."
    )


def build_clip_processor(image_size: int = 224, context_length: int = 77, **preprocess_cfg) -> CLIPProcessor:
    """`CLIPProcessor` = OpenCLIP-matching image processor + CLIP BPE tokenizer."""
    preprocess_cfg.setdefault("size", image_size)
    return CLIPProcessor(image_processor=build_image_processor(**preprocess_cfg), tokenizer=build_clip_tokenizer(context_length))
