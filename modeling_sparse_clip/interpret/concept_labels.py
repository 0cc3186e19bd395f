"""Concept labels: name every feature by the vocabulary words whose TEXT embeddings activate it most.

As in the paper, each word of the vocabulary (WordNet first lemmas + the 20K most common English
words) goes through the text tower alone; feature i is labelled by the words with the largest
activation of i. Scores are activations of the L2-normalised embedding (the share of the word's
embedding that feature i carries), so long or frequent words with large norms do not dominate.

The result is one safetensors file (tensors + the vocabulary in its metadata) in `interpret_dir`
(`<model_dir>/interpret/` when writable, else the feature cache), named by the model fingerprint
and the vocabulary: change either and it is recomputed.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_sparse_clip.caching import TensorCache, fingerprint, load_tensors
from modeling_sparse_clip.constants import FEATURE_CACHE_DIR
from modeling_sparse_clip.data.vocabulary import WordLookup
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.sparse_embeddings import normalize_rows

LABELS_KIND = "concept_labels"


def interpret_dir(model_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where a model's labels and atlases live: `<model_dir>/interpret` when that folder is writable
    (they travel with the model), else `cache_dir` (default: the feature cache; a Hub snapshot, say)."""
    if model_dir is not None and Path(model_dir).is_dir():
        target = Path(model_dir) / "interpret"
        try:
            target.mkdir(exist_ok=True)
        except OSError:
            pass
        if target.is_dir() and os.access(target, os.W_OK):
            return target
    return Path(cache_dir if cache_dir is not None else FEATURE_CACHE_DIR)


def interpret_cache(model_dir=None, cache_dir=None) -> TensorCache:
    """The TensorCache holding a model's labels and atlases (see `interpret_dir`)."""
    return TensorCache(interpret_dir(model_dir, cache_dir))


SPACE_CACHE_DIR = "space_cache"


def cached_file(kind: str, key: str, model_dir=None, cache_dir=None) -> Path | None:
    """An existing cache file of this kind and key: first in the model's own `space_cache/` (built with
    the model and shipped with it, read even when the folder is read-only, e.g. a Hub snapshot), then in
    `interpret_dir`. None when neither has it."""
    roots = [Path(model_dir) / SPACE_CACHE_DIR] if model_dir is not None and Path(model_dir).is_dir() else []
    for root in [*roots, interpret_dir(model_dir, cache_dir)]:
        path = TensorCache(root).path(kind, key)
        if path.exists():
            return path
    return None


@dataclass
class ConceptLabels:
    """Top vocabulary words of each feature.

    vocabulary: the words, in vocabulary order.
    top_words: int32 [num_features, k], indices into `vocabulary`, best first (-1 = no more words).
    top_scores: float32 [num_features, k], normalised activation of each top word.
    word_counts: int32 [num_features], how many vocabulary words activate the feature at all.
    """

    vocabulary: list[str]
    top_words: np.ndarray
    top_scores: np.ndarray
    word_counts: np.ndarray
    fingerprint: str = ""

    def __post_init__(self):
        self._lookup = WordLookup(self.vocabulary)

    @property
    def num_features(self) -> int:
        return int(self.top_words.shape[0])

    def words(self, feature: int, n: int = 10) -> list[tuple[str, float]]:
        """The top `n` (word, score) pairs of a feature (fewer if fewer words activate it)."""
        self.check_feature(feature)
        ids, scores = self.top_words[feature, :n], self.top_scores[feature, :n]
        return [(self.vocabulary[i], float(s)) for i, s in zip(ids, scores) if i >= 0 and s > 0]

    def label(self, feature: int, n: int = 3) -> str:
        words = [w for w, _ in self.words(feature, n)]
        return ", ".join(words) if words else "(no word activates it)"

    def check_feature(self, feature: int) -> None:
        if not 0 <= int(feature) < self.num_features:
            raise KeyError(f"Feature {feature} does not exist: this model has features 0..{self.num_features - 1}.")

    def resolve_word(self, word: str) -> str | None:
        """The vocabulary's form of `word` (case-insensitive, the exact form preferred), or None."""
        return self._lookup.resolve(word)

    def has_word(self, word: str) -> bool:
        return self._lookup.resolve(word) is not None

    def suggestions(self, word: str, n: int = 5) -> list[str]:
        """Vocabulary words close in spelling to `word`, ignoring case (for 'unknown word' messages)."""
        query = word.casefold()
        if len(query) >= 3:
            candidates = [w for w in self.vocabulary if w.casefold().startswith(query[:3])] or self.vocabulary
        else:
            candidates = self.vocabulary
        by_folded = {}
        for w in candidates:
            by_folded.setdefault(w.casefold(), w)
        return [by_folded[m] for m in difflib.get_close_matches(query, list(by_folded), n=n, cutoff=0.6)]

    def features_labelled(self, word: str, n: int = 10) -> list[int]:
        """Features whose top-`n` words include `word` (looked up as `resolve_word`), best rank first."""
        position = self._lookup.position(word)
        if position is None:
            return []
        rows, cols = np.nonzero(self.top_words[:, :n] == position)
        return [int(r) for r in rows[np.argsort(cols, kind="stable")]]

    # -- storage (one safetensors file: the arrays, and the vocabulary in its metadata) ------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "top_words": torch.from_numpy(self.top_words.astype(np.int32)),
            "top_scores": torch.from_numpy(self.top_scores.astype(np.float32)),
            "word_counts": torch.from_numpy(self.word_counts.astype(np.int32)),
        }

    def metadata(self) -> dict[str, str]:
        return {"model_fingerprint": self.fingerprint, "vocabulary": json.dumps(self.vocabulary)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> "ConceptLabels":
        return cls(
            json.loads(metadata["vocabulary"]),
            tensors["top_words"].numpy(),
            tensors["top_scores"].numpy(),
            tensors["word_counts"].numpy(),
            metadata.get("model_fingerprint", ""),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ConceptLabels":
        return cls.from_tensors(*load_tensors(path))


@torch.no_grad()
def compute_concept_labels(
    encoder: SparseCLIPEncoder,
    vocabulary: Sequence[str],
    top_k: int = 20,
    batch_size: int = 256,
    chunk_size: int = 2048,
    progress: Callable[[int, int], None] | None = None,
    pool_chunk: int = 8192,
) -> ConceptLabels:
    """Run the vocabulary through the text tower and keep, per feature, the `top_k` words.

    The pooled tower outputs are cached by the encoder (keyed by the text tower and each block of
    `pool_chunk` words), so checkpoints that share a frozen text tower only re-project. Memory stays
    bounded (a running top-k over chunks of words), so dense baselines work too. `progress(done, total)`
    is called after each block of words has gone through the tower (the Space's start-up page shows it).
    """
    vocabulary = list(vocabulary)
    if not vocabulary:
        raise ValueError("The vocabulary is empty: pass the word list from modeling_sparse_clip.data.build_vocabulary().")
    parts = []
    for start in range(0, len(vocabulary), pool_chunk):
        block = vocabulary[start : start + pool_chunk]
        parts.append(encoder.pool_texts(block, cache_key=fingerprint(block), desc="vocabulary", batch_size=batch_size))
        if progress is not None:
            progress(start + len(block), len(vocabulary))
    pooled = torch.cat(parts)
    num_features = encoder.width
    k = min(top_k, len(vocabulary))
    best_scores = torch.full((num_features, k), -1.0)
    best_words = torch.full((num_features, k), -1, dtype=torch.long)
    word_counts = torch.zeros(num_features, dtype=torch.long)
    starts = range(0, len(vocabulary), chunk_size)
    for start in tqdm(starts, desc="concept labels", unit="chunk", disable=not encoder.progress or len(starts) < 2):
        scores = normalize_rows(encoder.project_texts(pooled[start : start + chunk_size])).to_dense().t()  # features x words
        word_counts += (scores > 0).sum(dim=1)
        ids = torch.arange(start, start + scores.shape[1]).expand(num_features, -1)
        best_scores, order = torch.cat([best_scores, scores], dim=1).topk(k, dim=1)
        best_words = torch.cat([best_words, ids], dim=1).gather(1, order)
    best_words[best_scores <= 0] = -1  # a word with zero activation does not name the feature
    return ConceptLabels(
        vocabulary,
        best_words.numpy().astype(np.int32),
        best_scores.clamp(min=0).numpy().astype(np.float32),
        word_counts.numpy().astype(np.int32),
        encoder.fingerprint(),
    )


def load_or_compute_concept_labels(
    encoder: SparseCLIPEncoder,
    vocabulary: Sequence[str] | None = None,
    model_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    top_k: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> ConceptLabels:
    """Concept labels from the cache (`cached_file`: the model's `space_cache/`, then
    `interpret_dir(model_dir, cache_dir)`) when the model and the vocabulary match, else computed and cached."""
    if vocabulary is None:
        from modeling_sparse_clip.data import load_vocabulary

        vocabulary = load_vocabulary()  # read back when built before (build_vocabulary writes it)
    vocabulary = list(vocabulary)
    key = labels_key(encoder, vocabulary, top_k)
    path = cached_file(LABELS_KIND, key, model_dir, cache_dir)
    if path is not None:
        return ConceptLabels.load(path)
    labels = compute_concept_labels(encoder, vocabulary, top_k=top_k, progress=progress)
    interpret_cache(model_dir, cache_dir).save(LABELS_KIND, key, labels.tensors(), labels.metadata())
    return labels


def labels_key(encoder: SparseCLIPEncoder, vocabulary: Sequence[str], top_k: int = 20) -> str:
    """What names a model's labels in the caches: the model and the vocabulary."""
    return fingerprint(encoder.fingerprint(), list(vocabulary), top_k)


def concept_features(encoder: SparseCLIPEncoder, concept: str, top_k: int = 2) -> list[tuple[int, float]]:
    """The `top_k` features a concept word activates most through the text tower (the paper's
    way of turning a word into features to steer). Returns (feature, normalised activation) pairs."""
    concept = concept.strip()
    if not concept:
        raise ValueError("The concept is empty: type a word such as 'dog'.")
    acts = encoder.encode_text(concept)
    norm = float(np.linalg.norm(acts))
    if norm == 0:
        raise ValueError(f"No feature is active for {concept!r}: the text tower maps it to an all-zero embedding.")
    order = np.argsort(-acts)[:top_k]
    return [(int(i), float(acts[i] / norm)) for i in order if acts[i] > 0]
