"""Fashion-MNIST (Debian dataset-fashion-mnist): the training images are a corpus source, the test
images an evaluation set (and removed from the corpus wherever they appear)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from ...constants import FASHION_MNIST_DIR
from .base import Source, SourceItem, dpkg_version, encode_png, file_version

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_TEMPLATES = [
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the {}, a type of clothing.",
]


def read_idx(path: Path) -> np.ndarray:
    """The MNIST idx format: big-endian dims header, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels


def fashion_mnist_png(pixels: np.ndarray) -> bytes:
    return encode_png(Image.fromarray(pixels, mode="L").convert("RGB"))


class FashionMNISTSource(Source):
    name = "fashion_mnist"
    license = "MIT"
    description = "Fashion-MNIST training images (Debian dataset-fashion-mnist), 28x28, class names through prompt templates"
    attribution = "Fashion-MNIST, Zalando Research (Xiao, Rasul, Vollgraf 2017), MIT License."

    def missing(self, cache_dir):
        if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
            return "run `apt-get install dataset-fashion-mnist` or `make sources`"
        return None

    def version(self, cache_dir):
        return dpkg_version("dataset-fashion-mnist") or file_version(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz")

    def items(self, cache_dir):
        _, labels = read_fashion_mnist("train")
        items = []
        for index, label in enumerate(labels.tolist()):
            class_name = FASHION_MNIST_CLASSES[label]
            captions = [t.format(class_name.lower()) for t in FASHION_MNIST_TEMPLATES]
            items.append(SourceItem(uid=f"train-{index}", captions=captions, label=class_name, payload=index))
        return items

    def render(self, items, cache_dir):
        images, _ = read_fashion_mnist("train")
        for item in items:
            yield fashion_mnist_png(images[item.payload])
