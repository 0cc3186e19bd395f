"""Sparsity of feature activations: L0 per input, active and dead features."""

import datasets
import evaluate
import numpy as np
import scipy.sparse as sp

_DESCRIPTION = """
Sparsity statistics of a feature matrix A (N inputs x W features), e.g. Sparse CLIP embeddings
(`get_image_features(...).pooler_output`) or SAE codes.

    L0_n              = #{i : A[n, i] != 0}                    (non-zero dimensions of input n)
    l0_mean, l0_median = mean / median of L0_n over inputs
    l0_percent_of_width = 100 * l0_mean / W                      (the paper's "0.66% of dims active")
    active feature i  <=> #{n : A[n, i] > tau} >= 1              (fires above tau on at least one input)
    active_features_percent = 100 * #active / W
    dead_features     = W - #active
A dense model scores L0 = W. Activations arrive as sparse rows: per input, the indices of its
non-zero features and their values (dense rows simply list every index).
"""

_KWARGS_DESCRIPTION = """
Args:
    active_indices (`list[list[int]]`): per input, the indices of its non-zero features.
    active_values (`list[list[float]]`): per input, the values at those indices.
    width (`int`, required): number of features W.
    tau (`float`, default 0.001): threshold for a feature to count as firing (Clarity's tau).
Returns:
    `l0_mean`, `l0_median`, `l0_std`, `l0_percent_of_width`, `active_features`,
    `active_features_percent`, `dead_features`, `num_inputs`, `width`.
Examples:
    >>> metric = evaluate.load("benchmarks/metrics/sparsity")
    >>> metric.compute(active_indices=[[0, 2], [2]], active_values=[[1.0, 0.5], [2.0]], width=4)["l0_mean"]
    1.5
"""

_CITATION = """
@inproceedings{qin2026sparseclip, title={Sparse CLIP: Co-Optimizing Interpretability and Performance in Contrastive Learning},
  author={Qin, Chuan and Venhoff, Constantin and Joseph, Sonia and Xiao, Fanyi and Scherer, Stefan}, booktitle={ICLR}, year={2026}}
"""

def _rows_to_csr(indices, values, width):
    """Per-row sparse (indices, values) -> CSR [rows, width]. (Each metric module is self-contained.)"""
    lengths = np.array([len(row) for row in indices], dtype=np.int64)
    if len(values) != len(indices) or any(len(v) != n for v, n in zip(values, lengths)):
        raise ValueError("Each row needs as many values as indices.")
    flat_indices = np.concatenate([np.asarray(r, np.int64).ravel() for r in indices] + [np.zeros(0, np.int64)])
    flat_values = np.concatenate([np.asarray(r, np.float64).ravel() for r in values] + [np.zeros(0)])
    if width is None:
        width = int(flat_indices.max()) + 1 if flat_indices.size else 1
    if flat_indices.size and (flat_indices.min() < 0 or flat_indices.max() >= width):
        raise ValueError(f"Embedding indices must lie in [0, {width}); got {flat_indices.min()}..{flat_indices.max()}.")
    matrix = sp.csr_matrix((flat_values, flat_indices, np.concatenate([[0], np.cumsum(lengths)])), shape=(len(lengths), width))
    matrix.sum_duplicates()
    return matrix


def _normalize_rows(matrix):
    """L2-normalise rows of a dense or sparse matrix; zero rows stay zero."""
    if sp.issparse(matrix):
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


class Sparsity(evaluate.Metric):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Hand `_compute` numpy arrays, not Python lists (see zero_shot_accuracy for why this is set here).
        self.info.format = "numpy"

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "active_indices": datasets.Sequence(datasets.Value("int32")),
                    "active_values": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, active_indices, active_values, width=None, tau=0.001):
        if width is None:
            raise ValueError("Pass width= (the number of features); sparsity percentages and dead features need it.")
        acts = _rows_to_csr(active_indices, active_values, int(width))
        acts.eliminate_zeros()  # explicit zeros are not active dimensions
        l0 = acts.getnnz(axis=1)
        fires = np.zeros(width, dtype=bool)
        fires[np.unique(acts.indices[acts.data > tau])] = True
        active = int(fires.sum())
        return {
            "l0_mean": float(l0.mean()) if len(l0) else float("nan"),
            "l0_median": float(np.median(l0)) if len(l0) else float("nan"),
            "l0_std": float(l0.std()) if len(l0) else float("nan"),
            "l0_percent_of_width": float(100.0 * l0.mean() / width) if len(l0) else float("nan"),
            "active_features": active,
            "active_features_percent": 100.0 * active / width,
            "dead_features": int(width - active),
            "num_inputs": int(acts.shape[0]),
            "width": int(width),
        }
