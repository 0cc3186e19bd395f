"""Everything the embedded job reads, built (or loaded from the cache) in one call: the corpus, the
held-out evaluation sets, the concept vocabulary and the data card. `sparse-clip-build-data` runs it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from ..constants import DATA_CACHE_DIR
from .corpus import build_corpus, corpus_report
from .data_card import write_data_card
from .eval_sets import EvalSet, load_eval_sets
from .vocabulary import build_vocabulary


@dataclass
class EmbeddedData:
    corpus: datasets.DatasetDict
    eval_sets: dict[str, EvalSet]
    vocabulary: list[str]
    data_card: Path
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step

    def summary(self) -> dict:
        """Counts and timings, JSON-ready."""
        return {
            "counts": corpus_report(self.corpus),
            "eval_sets": {name: len(e) for name, e in self.eval_sets.items()},
            "vocabulary_size": len(self.vocabulary),
            "timings": self.timings,
        }


def build_embedded_data(
    cache_dir: str | os.PathLike = DATA_CACHE_DIR,
    data_card: str | os.PathLike = "outputs/DATA_CARD.md",
    fashion_mnist_eval_size: int | None = 1000,
    retrieval_size: int | None = 500,
) -> EmbeddedData:
    timings = {}
    start = time.perf_counter()
    corpus = build_corpus(cache_dir)
    timings["corpus_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    eval_sets = load_eval_sets(cache_dir, fashion_mnist_size=fashion_mnist_eval_size, retrieval_size=retrieval_size, corpus=corpus)
    timings["eval_sets_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    vocabulary = build_vocabulary(Path(cache_dir) / "vocabulary.txt")
    timings["vocabulary_s"] = round(time.perf_counter() - start, 1)
    card = write_data_card(corpus, eval_sets, data_card)
    return EmbeddedData(corpus, eval_sets, vocabulary, card, timings)
