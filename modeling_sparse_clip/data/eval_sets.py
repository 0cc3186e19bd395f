"""Named evaluation sets, all held out of the training split (disjoint by image hash).

zero-shot classification: `fashion_mnist` (the real test split, 10 classes), `emoji_subgroups`
(held-out OpenMoji / Google emoji by Unicode sub-group), `openclipart_categories` (held-out clip art
by top-level category); retrieval: `emoji_retrieval`, `game_icons_retrieval` (held-out images with
their captions). The held-out emoji / icons / clip art come from the corpus's test split.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import datasets

from .captions import label_to_words
from .corpus import build_corpus, column_values
from ..constants import DATA_CACHE_DIR
from .sources import (
    EMOJI_SOURCES,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_TEMPLATES,
    SOURCES,
    fashion_mnist_png,
    read_fashion_mnist,
)

logger = logging.getLogger(__name__)

EMOJI_TEMPLATES = ["{}", "an emoji of {}.", "a {} emoji."]
CLIPART_TEMPLATES = ["{}", "clip art of {}.", "a drawing of {}."]
# Not concepts: a catch-all folder and one of templates / gradients / patterns.
CLIPART_EXCLUDED_CATEGORIES = {"unsorted", "special"}


@dataclass
class EvalSet:
    """A named evaluation set, the one type every evaluation task and suite takes.

    zero_shot: `dataset` has columns image, label (an index into `class_names`), and `templates` are
    the prompts the class names are put in; retrieval: columns image, text (a list of captions per image).
    """

    name: str
    task: Literal["zero_shot", "retrieval"]
    dataset: datasets.Dataset
    class_names: list[str] | None = None
    templates: list[str] | None = None

    def __len__(self) -> int:
        return len(self.dataset)


def _rank(key: str) -> bytes:
    return hashlib.sha256(f"eval:{key}".encode()).digest()


def _take(indices: list[int], keys: list[str], limit: int | None) -> list[int]:
    """A deterministic subset of `indices` (hash-ranked by key), returned in the original order."""
    if limit is None or len(indices) <= limit:
        return indices
    return sorted(sorted(indices, key=lambda i: _rank(keys[i]))[:limit])


def fashion_mnist_eval(size: int | None = 1000) -> EvalSet:
    """The real Fashion-MNIST test split, subsampled to `size` images with equal classes (None = all 10K)."""
    images, labels = read_fashion_mnist("test")
    per_class = None if size is None else max(1, size // len(FASHION_MNIST_CLASSES))
    keep: list[int] = []
    label_list, keys = labels.tolist(), [str(i) for i in range(len(labels))]
    for class_index in range(len(FASHION_MNIST_CLASSES)):
        keep += _take([i for i, y in enumerate(label_list) if y == class_index], keys, per_class)
    keep.sort()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=FASHION_MNIST_CLASSES)})
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": fashion_mnist_png(images[i]), "path": None} for i in keep], "label": [int(labels[i]) for i in keep]},
        features=features,
    )
    return EvalSet("fashion_mnist", "zero_shot", dataset, list(FASHION_MNIST_CLASSES), list(FASHION_MNIST_TEMPLATES))


def _zero_shot_from(test: datasets.Dataset, name: str, sources: tuple[str, ...], templates: list[str],
                    excluded: set[str] = frozenset(), min_per_class: int = 3, size: int | None = None) -> EvalSet | None:
    source_col, label_col, text_col = (column_values(test, c) for c in ("source", "label", "text"))
    rows = [i for i, (s, y) in enumerate(zip(source_col, label_col)) if s in sources and y and y not in excluded]
    if not rows:
        return None
    class_of = [label_to_words(y) for y in label_col]
    counts = Counter(class_of[i] for i in rows)
    rows = [i for i in rows if counts[class_of[i]] >= min_per_class]
    rows = _take(rows, [f"{i}:{t[0]}" for i, t in enumerate(text_col)], size)
    class_names = sorted({class_of[i] for i in rows})
    index = {c: k for k, c in enumerate(class_names)}
    dataset = test.select(rows).select_columns(["image"])
    dataset = dataset.add_column("label", [index[class_of[i]] for i in rows], feature=datasets.ClassLabel(names=class_names))
    return EvalSet(name, "zero_shot", dataset, class_names, list(templates))


def _retrieval_from(test: datasets.Dataset, name: str, sources: tuple[str, ...], size: int | None) -> EvalSet | None:
    """Held-out images with their captions; one image per first caption, so the right match is unique."""
    seen: set[str] = set()
    rows = []
    texts = column_values(test, "text")
    for i, source in enumerate(column_values(test, "source")):
        if source in sources and texts[i][0] not in seen:
            seen.add(texts[i][0])
            rows.append(i)
    if not rows:
        return None
    rows = _take(rows, [t[0] for t in texts], size)
    return EvalSet(name, "retrieval", test.select(rows).select_columns(["image", "text"]))


def load_eval_sets(
    cache_dir: str | os.PathLike = DATA_CACHE_DIR,
    fashion_mnist_size: int | None = 1000,
    retrieval_size: int | None = 500,
    zero_shot_size: int | None = 1000,
    corpus: datasets.DatasetDict | None = None,
) -> dict[str, EvalSet]:
    """Every evaluation set whose source is installed (missing ones are skipped with a log line).

    The held-out sets are drawn from the test split of the default corpus (built or loaded from the
    cache); pass `corpus` to draw them from another one.
    """
    eval_sets: dict[str, EvalSet] = {}
    if SOURCES["fashion_mnist"].missing(cache_dir) is None:
        eval_sets["fashion_mnist"] = fashion_mnist_eval(fashion_mnist_size)
    else:
        logger.warning("fashion_mnist eval: not installed; %s", SOURCES["fashion_mnist"].missing(cache_dir))
    test = (corpus if corpus is not None else build_corpus(cache_dir))["test"]
    candidates = [
        _zero_shot_from(test, "emoji_subgroups", ("openmoji", "google_emoji"), EMOJI_TEMPLATES, size=zero_shot_size),
        _zero_shot_from(test, "openclipart_categories", ("openclipart",), CLIPART_TEMPLATES,
                        excluded=CLIPART_EXCLUDED_CATEGORIES, size=zero_shot_size),
        _retrieval_from(test, "emoji_retrieval", EMOJI_SOURCES, retrieval_size),
        _retrieval_from(test, "game_icons_retrieval", ("game_icons",), retrieval_size),
    ]
    for eval_set in candidates:
        if eval_set is not None:
            eval_sets[eval_set.name] = eval_set
    for name in ("emoji_subgroups", "openclipart_categories", "emoji_retrieval", "game_icons_retrieval"):
        if name not in eval_sets:
            logger.warning("%s: skipped, its source is not in the corpus (run `make sources`)", name)
    logger.info("eval sets: %s", ", ".join(f"{n} ({len(e)})" for n, e in eval_sets.items()))
    return eval_sets
