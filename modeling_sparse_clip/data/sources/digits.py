"""scikit-learn's `load_digits()`: 1,797 8x8 handwritten digits, drawn dark on white."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .base import Source, SourceItem, encode_png

_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class SklearnDigitsSource(Source):
    name = "sklearn_digits"
    license = "CC-BY-4.0"
    description = "scikit-learn load_digits(): 1,797 8x8 handwritten digits, dark ink on white"
    attribution = (
        "Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, UCI Machine Learning Repository), "
        "CC BY 4.0, as shipped by scikit-learn."
    )

    def missing(self, cache_dir):
        try:
            import sklearn  # noqa: F401
        except ImportError:
            return "run `pip install scikit-learn` or `make sources`"
        return None

    def version(self, cache_dir):
        import sklearn

        return f"sklearn{sklearn.__version__}"

    def items(self, cache_dir):
        from sklearn.datasets import load_digits

        targets = load_digits().target.tolist()
        return [
            SourceItem(uid=str(i), captions=[f"the digit {d}", f"a handwritten {_DIGIT_WORDS[d]}", f"the number {_DIGIT_WORDS[d]}"],
                       label=str(d), payload=i)
            for i, d in enumerate(targets)
        ]

    def render(self, items, cache_dir):
        from sklearn.datasets import load_digits

        images = load_digits().images  # 0..16, 16 = full ink
        for item in items:
            pixels = (255 - np.rint(images[item.payload] * 255 / 16)).astype(np.uint8)
            yield encode_png(Image.fromarray(pixels, mode="L").convert("RGB"))
