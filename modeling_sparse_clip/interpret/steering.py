"""Steering: edit feature activations, then see what zero-shot prediction and retrieval do.

As in the paper, a concept word becomes features through the TEXT tower (its top-K features);
suppressing sets them to 0 and boosting sets them to a steering strength SS. Edits act on the
un-normalised activations, before the L2 normalisation every similarity uses.

`strength_scale="max"` (default) reads SS in units of the embedding's own largest activation, so
the same SS means the same thing for every model and image; `"absolute"` sets the raw value SS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from modeling_sparse_clip.encoding import SparseCLIPEncoder

from .concept_labels import concept_features

STRENGTH_SCALES = ("max", "absolute")


@dataclass
class SteeringEdit:
    """Which features to suppress (-> 0) and boost (-> strength)."""

    suppress: list[int] = field(default_factory=list)
    boost: list[int] = field(default_factory=list)
    strength: float = 2.0
    strength_scale: str = "max"

    def __post_init__(self):
        if self.strength_scale not in STRENGTH_SCALES:
            raise ValueError(f"strength_scale={self.strength_scale!r} is unknown; use one of {STRENGTH_SCALES}.")
        if self.strength < 0:
            raise ValueError(f"A steering strength must be >= 0 (got {self.strength}); use suppress to remove a concept.")

    def is_empty(self) -> bool:
        return not self.suppress and not self.boost

    def describe(self) -> str:
        parts = []
        if self.suppress:
            parts.append("suppress " + ", ".join(f"f{i}" for i in self.suppress) + " -> 0")
        if self.boost:
            unit = " x max activation" if self.strength_scale == "max" else ""
            parts.append("boost " + ", ".join(f"f{i}" for i in self.boost) + f" -> {self.strength:g}{unit}")
        return "; ".join(parts) or "no edit"


def steer(activations: np.ndarray, edit: SteeringEdit) -> np.ndarray:
    """A copy of `activations` ([F] or [n, F], un-normalised) with the edit applied per row."""
    acts = np.array(activations, dtype=np.float32, copy=True)
    rows = acts[None] if acts.ndim == 1 else acts
    num_features = rows.shape[1]
    for feature in [*edit.suppress, *edit.boost]:
        if not 0 <= feature < num_features:
            raise KeyError(f"Feature {feature} does not exist: this model has features 0..{num_features - 1}.")
    if edit.suppress:
        rows[:, edit.suppress] = 0.0
    if edit.boost:
        if edit.strength_scale == "max":
            values = edit.strength * rows.max(axis=1, keepdims=True)
        else:
            values = np.full((rows.shape[0], 1), edit.strength, np.float32)
        rows[:, edit.boost] = values
    return rows[0] if acts.ndim == 1 else rows


def edit_from_concepts(
    encoder: SparseCLIPEncoder,
    suppress: Sequence[str] = (),
    boost: Sequence[str] = (),
    top_k: int = 2,
    strength: float = 2.0,
    strength_scale: str = "max",
) -> tuple[SteeringEdit, dict[str, list[int]]]:
    """A `SteeringEdit` from concept words; also returns which features each word became."""
    resolved = {}
    for word in [*suppress, *boost]:
        resolved[word] = [f for f, _ in concept_features(encoder, word, top_k)]
    edit = SteeringEdit(
        suppress=sorted({f for w in suppress for f in resolved[w]}),
        boost=sorted({f for w in boost for f in resolved[w]}),
        strength=strength,
        strength_scale=strength_scale,
    )
    return edit, resolved


def retrieve(query_activation: np.ndarray, gallery, k: int = 5) -> list[tuple[int, float]]:
    """Top-k (row, cosine similarity) of a gallery: a `SparseIndex` (exact inverted-list search) or
    L2-normalised `SparseEmbeddings` (scored directly)."""
    from modeling_sparse_clip.sparse_index import SparseIndex

    query = torch.from_numpy(np.asarray(query_activation, np.float32))
    if isinstance(gallery, SparseIndex):
        found = gallery.search(query[None], k=k, metric="cosine", backend="scipy")
        return [(int(p), float(s)) for p, s in zip(found.positions[0], found.scores[0])]
    norm = float(query.norm())
    query = query / norm if norm > 0 else query
    rows = torch.repeat_interleave(torch.arange(len(gallery)), gallery.row_nnz())
    scores = torch.zeros(len(gallery)).index_add_(0, rows, gallery.values.float() * query[gallery.indices.long()]).numpy()
    k = min(k, len(scores))
    order = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = order[np.argsort(-scores[order], kind="stable")]
    return [(int(i), float(scores[i])) for i in order]


@dataclass
class SteeringResult:
    edit: SteeringEdit
    features_of: dict[str, list[int]]
    before: list[tuple[str, float]]
    after: list[tuple[str, float]]
    retrieval_before: list[tuple[int, float]]
    retrieval_after: list[tuple[int, float]]
    # the captioning VLM's answer (modeling_sparse_clip.vlm) before/after, when a captioner is given
    caption_before: str | None = None
    caption_after: str | None = None


def steer_image(
    encoder: SparseCLIPEncoder,
    image_activation: np.ndarray,
    classifier=None,
    gallery=None,
    suppress: Sequence[str] = (),
    boost: Sequence[str] = (),
    suppress_features: Sequence[int] = (),
    boost_features: Sequence[int] = (),
    top_k: int = 2,
    strength: float = 2.0,
    strength_scale: str = "max",
    n: int = 5,
    captioner=None,
) -> SteeringResult:
    """Zero-shot top-n and gallery retrieval for an image embedding, before and after an edit.

    `classifier`: a `modeling_sparse_clip.evaluation.zero_shot.ZeroShotClassifier` (its `top`);
    `gallery`: a `SparseIndex` or normalised `SparseEmbeddings` (see `retrieve`); `captioner`, if
    given, is a callable (activations -> caption) for the VLM caption hook."""
    edit, resolved = edit_from_concepts(encoder, suppress, boost, top_k, strength, strength_scale)
    edit.suppress = sorted(set(edit.suppress) | {int(f) for f in suppress_features})
    edit.boost = sorted(set(edit.boost) | {int(f) for f in boost_features})
    steered = steer(image_activation, edit)
    result = SteeringResult(
        edit=edit,
        features_of=resolved,
        before=classifier.top(image_activation, n) if classifier else [],
        after=classifier.top(steered, n) if classifier else [],
        retrieval_before=retrieve(image_activation, gallery, n) if gallery is not None else [],
        retrieval_after=retrieve(steered, gallery, n) if gallery is not None else [],
    )
    if captioner is not None:
        result.caption_before, result.caption_after = captioner(image_activation), captioner(steered)
    return result
