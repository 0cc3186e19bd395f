"""Sparsity of feature activations: L0 per input, active and dead features.

    L0_n                = #{i : A[n, i] != 0}                  (non-zero dimensions of input n)
    l0_mean, l0_median  = mean / median of L0_n over inputs
    l0_percent_of_width = 100 * l0_mean / W                    (the paper's "0.66% of dims active")
    active feature i   <=> #{n : A[n, i] > tau} >= 1            (fires above tau on at least one input)
    active_features_percent = 100 * #active / W;  dead_features = W - #active
A dense model scores L0 = W.
"""

from __future__ import annotations

import numpy as np

from ..sparse_embeddings import SparseEmbeddings


def evaluate(activations: SparseEmbeddings, tau: float = 0.001) -> dict:
    """`l0_mean`, `l0_median`, `l0_std`, `l0_percent_of_width`, `active_features`,
    `active_features_percent`, `dead_features`, `num_inputs`, `width` of an [N, W] activation batch."""
    width = activations.width
    values = activations.values.double().numpy()  # float64: tau is compared as the float it is
    indices = activations.indices.numpy()
    stored = values != 0  # explicit zeros are not active dimensions
    rows = np.repeat(np.arange(len(activations)), activations.row_nnz().numpy())
    l0 = np.bincount(rows[stored], minlength=len(activations))
    fires = np.zeros(width, dtype=bool)
    fires[np.unique(indices[values > tau])] = True
    active = int(fires.sum())
    return {
        "l0_mean": float(l0.mean()) if len(l0) else float("nan"),
        "l0_median": float(np.median(l0)) if len(l0) else float("nan"),
        "l0_std": float(l0.std()) if len(l0) else float("nan"),
        "l0_percent_of_width": float(100.0 * l0.mean() / width) if len(l0) else float("nan"),
        "active_features": active,
        "active_features_percent": 100.0 * active / width,
        "dead_features": int(width - active),
        "num_inputs": len(activations),
        "width": int(width),
    }
