"""The processor of a converted CLIP: the real OpenAI CLIP BPE tokenizer and an OpenCLIP-matching
image processor, paired by transformers' `CLIPProcessor`.

Tokenizer: built from OpenCLIP's `bpe_simple_vocab_16e6.txt.gz` exactly the way OpenCLIP's
`SimpleTokenizer` builds its vocabulary (256 byte symbols, the same with `</w>`, 48,894 merges,
then the two special tokens: 49,408 ids). It is constructed with `CLIPTokenizer(vocab=dict,
merges=list)`: in transformers 5.23 the `vocab_file=`/`merges_file=` keywords silently give wrong
ids. Padding uses `<|endoftext|>` (as OpenAI's HF tokenizers do). OpenCLIP pads with id 0 ("!"),
but "!" cannot be the pad token: added tokens are matched inside text, so every "!" in a caption
would become the pad id. The ids up to and including the first end-of-text are identical to
`open_clip.tokenize`; what follows is padding that CLIP never reads (causal attention, pooled at
the first end-of-text token).

Image processor: OpenCLIP's eval transform is Resize(shortest side, bicubic, on the PIL image) ->
CenterCrop -> RGB -> ToTensor -> Normalize(mean, std). `CLIPImageProcessor` with the PIL backend
(`backend="pil"`, or `CLIPImageProcessorPil`) reproduces it bit for bit, with one exception:
torchvision's CenterCrop rounds the crop offset half-to-even while transformers floors it, so
when the resized long side exceeds the crop by 3 (mod 4) pixels the crop is one pixel off. The
default torchvision backend of `AutoProcessor.from_pretrained` resizes tensors instead of PIL
images and differs by at most one uint8 level (~0.015 after normalisation).
"""

import gzip
from importlib import resources

from transformers import CLIPProcessor, CLIPTokenizer
from transformers.image_utils import PILImageResampling
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
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


def build_clip_tokenizer(context_length: int = 77, bpe_path: str | None = None) -> CLIPTokenizer:
    vocab, merges = clip_bpe_vocab_and_merges(bpe_path)
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=EOS, model_max_length=context_length)


def build_image_processor(
    size: int | tuple[int, int] = 224,
    mean=OPENAI_CLIP_MEAN,
    std=OPENAI_CLIP_STD,
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
    **ignored,
) -> CLIPImageProcessorPil:
    """A CLIP image processor equivalent to OpenCLIP's eval transform for this `PreprocessCfg`."""
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is not supported; use one of {sorted(_INTERPOLATIONS)}.")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    common = dict(image_mean=list(mean), image_std=list(std), resample=_INTERPOLATIONS[interpolation], do_convert_rgb=True)
    if resize_mode == "shortest":
        if height != width:
            raise ValueError(f"resize_mode='shortest' with a non-square size {size} has no CLIPImageProcessor equivalent.")
        return CLIPImageProcessorPil(size={"shortest_edge": height}, crop_size={"height": height, "width": width}, do_center_crop=True, **common)
    if resize_mode == "squash":
        return CLIPImageProcessorPil(size={"height": height, "width": width}, do_center_crop=False, **common)
    raise ValueError(
        f"resize_mode={resize_mode!r} (OpenCLIP's keep-ratio resize + pad) has no CLIPImageProcessor equivalent; "
        "only 'shortest' and 'squash' are converted."
    )


def build_clip_processor(image_size: int = 224, context_length: int = 77, **preprocess_cfg) -> CLIPProcessor:
    """`CLIPProcessor` = OpenCLIP-matching image processor + CLIP BPE tokenizer."""
    preprocess_cfg.setdefault("size", image_size)
    return CLIPProcessor(image_processor=build_image_processor(**preprocess_cfg), tokenizer=build_clip_tokenizer(context_length))
