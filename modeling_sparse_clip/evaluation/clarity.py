"""Clarity (Dreyer et al. 2025) of features, as in Sparse CLIP's eq. 2, with its random-image baseline.

For feature i:  I_i = {images n : A[n, i] > tau}   (tau = 0.001).
Features with |I_i| >= n_min (= 2) are the "active features"; for each, with u_n the reference
embedding of image n normalised to unit length,
    clarity_i = 1/(|I_i|(|I_i|-1)) * sum_{j != k in I_i} u_j . u_k          (mean pairwise cosine)
              = ( ||sum_{n in I_i} u_n||^2 - |I_i| ) / ( |I_i| (|I_i| - 1) )  (the O(|I_i| d) form used here)
    Clarity   = mean of clarity_i over active features.
Random baseline: for every active feature, the same quantity for |I_i| images drawn uniformly at
random without replacement from all N images (seeded); averaged over features and `baseline_draws`
draws. A model whose features group images no better than chance scores at the baseline.

The reference encoder is pluggable (any per-image embeddings). The paper used OpenAI CLIP ViT; the
embedded suite uses the global-pooled features of a frozen ImageNet EfficientNet-Lite0 (the pretrained
image encoder available offline), so absolute values are not comparable with the paper's 0.485 / 0.549.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..sparse_embeddings import SparseEmbeddings
from .cosine import float64_csr, unit_reference_rows


def set_clarity(membership, unit_embeddings):
    """clarity of each column's image set: membership is a sparse 0/1 [N, F] matrix; O(nnz * d)."""
    sizes = np.asarray(membership.sum(axis=0)).ravel()
    sums = np.asarray(membership.T @ unit_embeddings)  # [F, d]: sum of unit vectors per set
    return ((sums**2).sum(axis=1) - sizes) / (sizes * (sizes - 1)), sizes


def random_sets(num_images, sizes, rng):
    """For each size n_i, n_i distinct images drawn uniformly: a sparse 0/1 [N, len(sizes)] matrix.

    Vectorised rejection sampling: draw every member at once, redraw the (rare) repeats within a set
    until none are left; large sets (over a quarter of the images) use a permutation instead."""
    sizes = np.asarray(sizes, np.int64)
    large = sizes > num_images // 4
    cols = np.repeat(np.arange(len(sizes)), np.where(large, 0, sizes))
    rows = rng.integers(0, num_images, size=len(cols))
    while True:
        order = np.lexsort((rows, cols))
        repeat = np.zeros(len(cols), dtype=bool)
        repeat[order[1:]] = (cols[order[1:]] == cols[order[:-1]]) & (rows[order[1:]] == rows[order[:-1]])
        if not repeat.any():
            break
        rows[repeat] = rng.integers(0, num_images, size=int(repeat.sum()))
    big = np.flatnonzero(large)
    rows = np.concatenate([rows] + [rng.permutation(num_images)[: sizes[f]] for f in big])
    cols = np.concatenate([cols] + [np.full(sizes[f], f) for f in big])
    return sp.csc_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_images, len(sizes)))


def evaluate(
    activations: SparseEmbeddings,
    reference_embeddings,
    tau: float = 0.001,
    n_min: int = 2,
    baseline_draws: int = 1,
    seed: int = 0,
    return_per_feature: bool = False,
) -> dict:
    """`clarity`, `random_baseline_clarity`, `num_active_features`, `active_features_percent`,
    `mean_images_per_feature`, `num_images` (+ `clarity_per_feature` {feature: value} on request).

    `activations`: the model's [N, W] image activations; `reference_embeddings`: [N, d] embeddings of
    the same images by the reference encoder."""
    if n_min < 2:
        raise ValueError("n_min must be >= 2: a pairwise mean needs two images.")
    units = unit_reference_rows(reference_embeddings)
    if len(units) != len(activations):
        raise ValueError(f"{len(units)} reference embeddings for {len(activations)} images.")
    num_images = len(activations)
    fires = (float64_csr(activations) > tau).astype(np.float64).tocsc()
    counts = np.diff(fires.indptr)
    active = np.flatnonzero(counts >= n_min)
    result = {"num_images": int(num_images), "num_active_features": int(len(active)),
              "active_features_percent": 100.0 * len(active) / activations.width}
    if len(active) == 0:
        result.update(clarity=float("nan"), random_baseline_clarity=float("nan"), mean_images_per_feature=0.0)
        return result
    clarity, sizes = set_clarity(fires[:, active], units)
    result["clarity"] = float(clarity.mean())
    result["mean_images_per_feature"] = float(sizes.mean())

    # Random baseline: the same set sizes, random image sets.
    rng = np.random.default_rng(seed)
    baseline = [set_clarity(random_sets(num_images, sizes.astype(np.int64), rng), units)[0].mean() for _ in range(baseline_draws)]
    result["random_baseline_clarity"] = float(np.mean(baseline))
    if return_per_feature:
        result["clarity_per_feature"] = {int(f): float(c) for f, c in zip(active, clarity)}
    return result
