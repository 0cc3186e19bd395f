"""What the `evaluate` metric shells hand the task functions: their inputs as `SparseEmbeddings`.

The metric modules take sparse rows (per input, the indices of its non-zero features and their values:
`evaluate` stores them in Arrow) and arrays; these two functions turn either into the one sparse type.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..sparse_embeddings import SparseEmbeddings


def rows_width(*row_lists) -> int:
    """1 + the largest index in any of the sparse-row lists (the width when none is given)."""
    return 1 + max([int(np.max(r)) for rows in row_lists for r in rows if len(r)], default=0)


def embeddings_from_rows(indices, values, width: int | None = None) -> SparseEmbeddings:
    """Per-row (indices, values) -> SparseEmbeddings [rows, width] (duplicate indices are summed)."""
    lengths = np.array([len(row) for row in indices], dtype=np.int64)
    if len(values) != len(indices) or any(len(v) != n for v, n in zip(values, lengths)):
        raise ValueError("Each row needs as many values as indices.")
    flat_indices = np.concatenate([np.asarray(r, np.int64).ravel() for r in indices] + [np.zeros(0, np.int64)])
    flat_values = np.concatenate([np.asarray(r, np.float32).ravel() for r in values] + [np.zeros(0, np.float32)])
    if width is None:
        width = int(flat_indices.max()) + 1 if flat_indices.size else 1
    if flat_indices.size and (flat_indices.min() < 0 or flat_indices.max() >= width):
        raise ValueError(f"Embedding indices must lie in [0, {width}); got {flat_indices.min()}..{flat_indices.max()}.")
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return SparseEmbeddings.from_scipy(sp.csr_matrix((flat_values, flat_indices, indptr), shape=(len(lengths), int(width))))


def embeddings_from_matrix(matrix) -> SparseEmbeddings:
    """A [rows, width] numpy array, torch tensor or scipy sparse matrix -> SparseEmbeddings (float32)."""
    if sp.issparse(matrix):
        return SparseEmbeddings.from_scipy(matrix)
    if isinstance(matrix, torch.Tensor):
        return SparseEmbeddings.from_dense(matrix.detach().cpu().float())
    return SparseEmbeddings.from_dense(torch.from_numpy(np.atleast_2d(np.asarray(matrix, np.float32))))
