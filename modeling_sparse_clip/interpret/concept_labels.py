"""Concept labels: name every feature by the vocabulary words whose TEXT embeddings activate it most.

As in the paper, each word of the vocabulary (WordNet first lemmas + the 20K most common English
words) goes through the text tower alone; feature i is labelled by the words with the largest
activation of i. Scores are activations of the L2-normalised embedding (the share of the word's
embedding that feature i carries), so long or frequent words with large norms do not dominate.

The result is cached next to the model (`<model_dir>/interpret/concept_labels_<vocabulary hash>.safetensors`), keyed
by a hash of the vocabulary and of the weights; when the model folder is read-only (a Hub
snapshot) the cache goes to `<cache_dir>/<fingerprint>/`.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from .encoding import DEFAULT_CACHE_DIR, FeatureEncoder, hash_strings, load_safetensors_with_metadata

LABELS_FILE = "concept_labels_{vocabulary_hash}.safetensors"  # one file per vocabulary: no cache thrash


def interpret_dir(encoder: FeatureEncoder, model_dir: str | os.PathLike | None = None, cache_dir=None) -> Path:
    """Where the caches of this model live: `<model_dir>/interpret` if writable, else a cache dir."""
    model_dir = model_dir or getattr(encoder, "source", None)
    if model_dir and Path(model_dir).is_dir():
        target = Path(model_dir) / "interpret"
        try:
            target.mkdir(exist_ok=True)
            probe = target / ".write-probe"
            probe.touch()
            probe.unlink()
            return target
        except OSError:
            pass
    return Path(cache_dir or encoder.cache_dir or DEFAULT_CACHE_DIR) / encoder.fingerprint()


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
        self._word_index = {w: i for i, w in enumerate(self.vocabulary)}

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

    def has_word(self, word: str) -> bool:
        return word in self._word_index

    def suggestions(self, word: str, n: int = 5) -> list[str]:
        """Vocabulary words close in spelling to `word` (for 'unknown word' messages)."""
        prefix = [w for w in self.vocabulary if w.startswith(word[:3].lower())] if len(word) >= 3 else self.vocabulary
        return difflib.get_close_matches(word.lower(), prefix or self.vocabulary, n=n, cutoff=0.6)

    def features_labelled(self, word: str, n: int = 10) -> list[int]:
        """Features whose top-`n` words include `word`, best rank first."""
        if word not in self._word_index:
            return []
        rows, cols = np.nonzero(self.top_words[:, :n] == self._word_index[word])
        return [int(r) for r in rows[np.argsort(cols, kind="stable")]]

    # -- storage --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"fingerprint": self.fingerprint, "vocabulary_hash": hash_strings(self.vocabulary)}
        save_file(
            {"top_words": self.top_words.astype(np.int32), "top_scores": self.top_scores.astype(np.float32), "word_counts": self.word_counts.astype(np.int32)},
            str(path),
            metadata=metadata,
        )
        path.with_suffix(".vocab.json").write_text(json.dumps(self.vocabulary))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ConceptLabels":
        path = Path(path)
        arrays, metadata = load_safetensors_with_metadata(path)
        vocabulary = json.loads(path.with_suffix(".vocab.json").read_text())
        return cls(vocabulary, arrays["top_words"], arrays["top_scores"], arrays["word_counts"], metadata.get("fingerprint", ""))

    @staticmethod
    def cache_matches(path: Path, fingerprint: str, vocabulary: Sequence[str]) -> bool:
        from safetensors import safe_open

        if not path.exists() or not path.with_suffix(".vocab.json").exists():
            return False
        with safe_open(str(path), "np") as f:
            metadata = f.metadata() or {}
        return metadata.get("fingerprint") == fingerprint and metadata.get("vocabulary_hash") == hash_strings(vocabulary)


@torch.no_grad()
def compute_concept_labels(
    encoder: FeatureEncoder,
    vocabulary: Sequence[str],
    top_k: int = 20,
    batch_size: int = 256,
    chunk_size: int = 2048,
    progress: bool = True,
) -> ConceptLabels:
    """Run the vocabulary through the text tower and keep, per feature, the `top_k` words.

    Memory stays bounded (a running top-k over chunks of words), so dense baselines work too.
    """
    vocabulary = list(vocabulary)
    if not vocabulary:
        raise ValueError("The vocabulary is empty: pass the word list from modeling_sparse_clip.data.build_vocabulary().")
    pooled = encoder.pooled_texts(vocabulary, batch_size=batch_size, progress=progress, cache_key=hash_strings(vocabulary))
    num_features = encoder.num_features
    k = min(top_k, len(vocabulary))
    best_scores = torch.full((num_features, k), -1.0)
    best_words = torch.full((num_features, k), -1, dtype=torch.long)
    word_counts = torch.zeros(num_features, dtype=torch.long)
    starts = range(0, len(vocabulary), chunk_size)
    for start in tqdm(starts, desc="concept labels", unit="chunk", disable=not progress or len(starts) < 2):
        acts = encoder.project("text", torch.from_numpy(pooled[start : start + chunk_size])).float().cpu()
        scores = torch.nn.functional.normalize(acts, dim=-1).t()  # features x words
        word_counts += (scores > 0).sum(dim=1)
        ids = torch.arange(start, start + scores.shape[1]).expand(num_features, -1)
        merged_scores = torch.cat([best_scores, scores], dim=1)
        merged_words = torch.cat([best_words, ids], dim=1)
        best_scores, order = merged_scores.topk(k, dim=1)
        best_words = merged_words.gather(1, order)
    best_words[best_scores <= 0] = -1  # a word with zero activation does not name the feature
    return ConceptLabels(
        vocabulary,
        best_words.numpy().astype(np.int32),
        best_scores.clamp(min=0).numpy().astype(np.float32),
        word_counts.numpy().astype(np.int32),
        encoder.fingerprint(),
    )


def load_or_compute_concept_labels(
    encoder: FeatureEncoder,
    vocabulary: Sequence[str] | None = None,
    model_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    top_k: int = 20,
    progress: bool = True,
) -> ConceptLabels:
    """Concept labels from the cache when vocabulary and weights match, else computed and cached."""
    if vocabulary is None:
        from modeling_sparse_clip.data import build_vocabulary

        vocabulary = build_vocabulary()
    vocabulary = list(vocabulary)
    path = interpret_dir(encoder, model_dir, cache_dir) / LABELS_FILE.format(vocabulary_hash=hash_strings(vocabulary))
    if ConceptLabels.cache_matches(path, encoder.fingerprint(), vocabulary):
        labels = ConceptLabels.load(path)
        if labels.top_words.shape[1] >= min(top_k, len(vocabulary)):
            return labels
    labels = compute_concept_labels(encoder, vocabulary, top_k=top_k, progress=progress)
    try:
        labels.save(path)
    except OSError:
        pass
    return labels


def concept_features(encoder: FeatureEncoder, concept: str, top_k: int = 2) -> list[tuple[int, float]]:
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
