"""Caption normalisation shared by every source and by the user-data loaders."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_SEPARATORS = re.compile(r"[_\s]+")
_EMOJI_SHORTCODE = re.compile(r"^:(.+):$")


def normalize_caption(text: str | None) -> str:
    """NFKC, shortcodes unwrapped (`:grinning_face:`), underscores to spaces, whitespace collapsed, lower case.

    Lower case because every tokenizer used here (CLIP BPE, uncased BERT) lower-cases anyway, and it
    makes duplicates from different sources ("Grinning Face" / "grinning face") collapse.
    """
    if text is None:
        return ""
    text = unicodedata.normalize("NFKC", str(text)).strip()
    match = _EMOJI_SHORTCODE.match(text)
    if match:
        text = match.group(1)
    text = _SEPARATORS.sub(" ", text).strip(" ,;:")
    return text.lower()


def normalize_captions(texts: Iterable[str | None] | str | None) -> list[str]:
    """Normalise a caption or list of captions; drop empty ones and duplicates, keep the order."""
    if texts is None:
        return []
    if isinstance(texts, str):
        texts = [texts]
    seen: dict[str, None] = {}
    for text in texts:
        caption = normalize_caption(text)
        if caption:
            seen.setdefault(caption, None)
    return list(seen)


def label_to_words(label: str) -> str:
    """A class label as prompt words: `face-smiling` -> `face smiling`, `signs_and_symbols` -> `signs and symbols`."""
    return normalize_caption(label.replace("-", " "))
