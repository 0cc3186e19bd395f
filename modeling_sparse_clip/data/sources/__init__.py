"""One builder per installed source, each turning its files into image–caption items.

A `Source` lists its items cheaply (`items`: captions, label, split key, what to draw) and renders
them to canonical PNG bytes (`render`: RGB, white background for transparent art, <= 224 px a side).
`build_source_dataset` runs one source into a cached `datasets.Dataset`; `corpus.py` merges them.

    base.py           the Source interface, PNG encoding, installed versions and npm packages
    emoji.py          Noto Color Emoji (font), OpenMoji (SVG), Google emoji (PNG); emoji split keys
    game_icons.py     game-icons.net (SVG)
    openclipart.py    Openclipart (PNG)
    fashion_mnist.py  Fashion-MNIST (idx files), also read by the evaluation sets
    digits.py         scikit-learn digits
    registry.py       SOURCES: name -> source, in corpus order
    build.py          one source -> a cached Dataset
"""

from .base import MAX_SIDE, Source, SourceItem, encode_png, find_npm_package, fit_max_side, image_hash, on_white
from .build import BUILDER_VERSION, SOURCE_FEATURES, SourceBuild, build_source_dataset, data_digest, source_fingerprint, subsample_items
from .emoji import emoji_split_key
from .fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_TEMPLATES, fashion_mnist_png, read_fashion_mnist
from .registry import EMOJI_SOURCES, SOURCES

__all__ = [
    "BUILDER_VERSION",
    "EMOJI_SOURCES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_TEMPLATES",
    "MAX_SIDE",
    "SOURCES",
    "SOURCE_FEATURES",
    "Source",
    "SourceBuild",
    "SourceItem",
    "build_source_dataset",
    "data_digest",
    "emoji_split_key",
    "encode_png",
    "fashion_mnist_png",
    "find_npm_package",
    "fit_max_side",
    "image_hash",
    "on_white",
    "read_fashion_mnist",
    "source_fingerprint",
    "subsample_items",
]
