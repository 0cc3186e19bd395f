"""Row normalisation for the evaluation math, in float64 (scipy at the edge).

The task modules score with float64 cosines so that near-ties between classes, images and captions
are decided the same way on every machine; `modeling_sparse_clip.sparse_embeddings.normalize_rows`
returns float32 values (what storage and search want), which would move those ties.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..sparse_embeddings import SparseEmbeddings


def float64_csr(embeddings: SparseEmbeddings) -> sp.csr_matrix:
    """A float64 copy of the embeddings as a scipy CSR matrix (safe to modify)."""
    return embeddings.to_scipy().astype(np.float64)


def unit_rows(matrix):
    """L2-normalise the rows of a scipy sparse or dense matrix; all-zero rows stay zero."""
    if sp.issparse(matrix):
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def unit_reference_rows(embeddings) -> np.ndarray:
    """Reference embeddings (array, tensor or rows) as float64 unit vectors. An all-zero embedding has
    no direction, so cosine similarity is undefined for it: error."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    embeddings = np.asarray(np.stack(list(embeddings)) if getattr(embeddings, "dtype", None) == object else embeddings, np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{int((norms == 0).sum())} reference embeddings are all zeros; cosine similarity is undefined for them.")
    return embeddings / norms
