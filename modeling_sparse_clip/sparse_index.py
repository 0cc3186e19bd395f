"""Exact top-k retrieval over sparse embeddings with inverted lists.

Items are stored as posting lists per feature (CSC segments: for feature f, the items that use
it and their values). A query touches only the posting lists of its own non-zero features, so
the work per query is sum over its features of the list lengths (~ N * sum_f freq_f^2) instead
of N * width for a dense scan. Scores are accumulated in float64 from the stored values, so they
equal a float64 dense brute force up to summation-order rounding (~1e-16 relative).

Exactness contract: the top-k returned is the top-k of the full score vector, ordered by score
descending and, for equal scores, by insertion position ascending; `exact_topk` applies the same
rule to any dense score matrix (what the tests and benchmark compare against).

Two interchangeable kernels: `numba` (a compiled accumulate + running top-k, the default) and
`scipy` (sparse-sparse product to a dense score block, then `exact_topk`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .sparse_embeddings import SparseEmbeddings

METRICS = ("dot", "cosine")
BACKENDS = ("numba", "scipy")
_INDEX_FILE, _META_FILE, _FORMAT = "sparse_index.safetensors", "sparse_index.json", "sparse_clip.sparse_index"


# ----------------------------------------------------------------------------------------------
# Top-k with a deterministic tie rule, shared by every path (and by the dense references)
# ----------------------------------------------------------------------------------------------
def exact_topk(scores: np.ndarray | torch.Tensor, k: int, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `scores` (Q, n): the k best (score desc, then position asc) as (scores, positions).

    `positions` (n,) are the global positions of the columns (default 0..n-1). NaN scores never win.
    """
    scores = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    n = scores.shape[1]
    positions = np.arange(n) if positions is None else np.asarray(positions)
    k_eff = min(k, n)
    out_scores = np.full((scores.shape[0], k_eff), -np.inf)
    out_pos = np.full((scores.shape[0], k_eff), -1, dtype=np.int64)
    if k_eff == 0:
        return out_scores, out_pos
    # The k-th largest value per row; everything >= it (ties included) is a candidate.
    kth = -np.partition(-scores, k_eff - 1, axis=1)[:, k_eff - 1 : k_eff]
    for row in range(scores.shape[0]):
        candidates = np.flatnonzero(scores[row] >= kth[row])
        order = np.lexsort((positions[candidates], -scores[row, candidates]))[:k_eff]
        out_scores[row], out_pos[row] = scores[row, candidates[order]], positions[candidates[order]]
    return out_scores, out_pos


def merge_topk(best_scores: np.ndarray, best_pos: np.ndarray, new_scores: np.ndarray, new_pos: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge two per-row top-k lists (e.g. of two blocks of items) into one, under `exact_topk`'s
    rule (score desc, then position asc; position -1 marks an empty slot and loses every tie)."""
    scores = np.concatenate([best_scores, new_scores], axis=1)
    pos = np.concatenate([best_pos, new_pos], axis=1)
    out_s, out_p = np.empty((scores.shape[0], k)), np.empty((scores.shape[0], k), dtype=np.int64)
    for row in range(scores.shape[0]):
        order = np.lexsort((np.where(pos[row] < 0, np.iinfo(np.int64).max, pos[row]), -scores[row]))[:k]
        out_s[row], out_p[row] = scores[row, order], pos[row, order]
    return out_s, out_p


# ----------------------------------------------------------------------------------------------
# The compiled kernel
# ----------------------------------------------------------------------------------------------
_NUMBA_KERNEL = None


def _numba_kernel():
    """Compile once: for each query, accumulate its features' posting lists into a dense float64
    accumulator over the segment, then merge the segment into a running top-k (ids ascending, so a
    strict `>` keeps earlier positions first among equal scores)."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is None:
        import numba

        @numba.njit(cache=True, nogil=True)
        def segment_topk(q_indptr, q_idx, q_val, p_indptr, p_items, p_val, item_scale, use_scale, base,
                         out_scores, out_pos, acc):
            k = out_scores.shape[1]
            n_items = acc.shape[0]
            for i in range(q_indptr.shape[0] - 1):
                for j in range(q_indptr[i], q_indptr[i + 1]):
                    feature = q_idx[j]
                    qv = q_val[j]
                    for p in range(p_indptr[feature], p_indptr[feature + 1]):
                        acc[p_items[p]] += qv * p_val[p]
                kth = out_scores[i, k - 1]
                for item in range(n_items):
                    s = acc[item] * item_scale[item] if use_scale else acc[item]
                    acc[item] = 0.0
                    if s > kth:
                        m = k - 1
                        while m > 0 and out_scores[i, m - 1] < s:
                            out_scores[i, m] = out_scores[i, m - 1]
                            out_pos[i, m] = out_pos[i, m - 1]
                            m -= 1
                        out_scores[i, m] = s
                        out_pos[i, m] = base + item
                        kth = out_scores[i, k - 1]

        _NUMBA_KERNEL = segment_topk
    return _NUMBA_KERNEL


# ----------------------------------------------------------------------------------------------
# The index
# ----------------------------------------------------------------------------------------------
@dataclass
class _Segment:
    """Posting lists of items [start, start + n): feature f's items are items[indptr[f]:indptr[f+1]]."""

    start: int
    n: int
    indptr: np.ndarray  # int64 (width + 1)
    items: np.ndarray  # int32, local item numbers, ascending within each list
    values: np.ndarray  # float32
    inv_norms: np.ndarray  # float64 (n,), 1/||x|| (0 for an all-zero item)

    @classmethod
    def from_rows(cls, start: int, rows: SparseEmbeddings) -> "_Segment":
        csc = rows.to_scipy().astype(np.float32).tocsc()
        csc.sort_indices()
        norms = np.sqrt(np.asarray(rows.to_scipy().astype(np.float64).power(2).sum(axis=1)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return cls(start, len(rows), csc.indptr.astype(np.int64), csc.indices.astype(np.int32), csc.data, inv)

    def nbytes(self) -> int:
        return self.indptr.nbytes + self.items.nbytes + self.values.nbytes + self.inv_norms.nbytes


@dataclass
class SearchResult:
    """Top-k per query: `scores` (Q, k) float64, `positions` (Q, k) insertion positions, `ids` (Q lists)."""

    scores: np.ndarray
    positions: np.ndarray
    ids: list[list]


class SparseIndex:
    """Exact top-k search (dot product or cosine) over sparse embeddings, via inverted lists.

    `add` buffers CSR batches and seals them into segments of `segment_size` items (a segment's
    float64 accumulator, 8 bytes x segment_size, stays in cache); `search` visits every segment.
    """

    def __init__(self, width: int, segment_size: int = 131_072):
        if width <= 0 or segment_size <= 0:
            raise ValueError("width and segment_size must be positive.")
        self.width, self.segment_size = int(width), int(segment_size)
        self._segments: list[_Segment] = []
        self._pending: list[SparseEmbeddings] = []
        self._pending_rows = 0
        self._ids: list | None = None  # None: ids are positions
        self._count = 0

    # -- building -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def add(self, embeddings: SparseEmbeddings | torch.Tensor, ids: Sequence | None = None) -> None:
        """Append items (a SparseEmbeddings batch, or a dense (n, width) tensor). `ids` (ints or
        strings) label them in results; give ids on every call or on none (then ids = positions)."""
        if isinstance(embeddings, torch.Tensor):
            embeddings = SparseEmbeddings.from_dense(embeddings, torch.float32 if embeddings.dtype == torch.float64 else None)
        if embeddings.width != self.width:
            raise ValueError(f"Embeddings have width {embeddings.width}, the index {self.width}.")
        if ids is not None and len(ids) != len(embeddings):
            raise ValueError(f"Got {len(ids)} ids for {len(embeddings)} embeddings.")
        if (ids is None) != (self._ids is None) and self._count > 0:
            raise ValueError("Give ids on every add() or on none (then results report insertion positions).")
        if ids is not None:
            self._ids = (self._ids or []) + list(ids)
        if len(embeddings) == 0:
            return
        self._pending.append(embeddings if embeddings.dtype == torch.float32 else embeddings.to(torch.float32))  # exact
        self._pending_rows += len(embeddings)
        self._count += len(embeddings)
        if self._pending_rows >= self.segment_size:
            self._seal(final=False)

    def _seal(self, final: bool = True) -> None:
        """Turn buffered rows into segments (full ones only, unless `final`)."""
        if not self._pending:
            return
        rows = SparseEmbeddings.concat(self._pending) if len(self._pending) > 1 else self._pending[0]
        start = self._count - len(rows)
        done = 0
        while len(rows) - done >= self.segment_size or (final and done < len(rows)):
            stop = min(done + self.segment_size, len(rows))
            self._segments.append(_Segment.from_rows(start + done, rows[done:stop]))
            done = stop
        rest = rows[done:]
        self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)

    def ids(self) -> list:
        return list(range(self._count)) if self._ids is None else list(self._ids)

    def nbytes(self) -> int:
        """Bytes of the sealed posting lists and norms."""
        self._seal()
        return sum(s.nbytes() for s in self._segments)

    # -- searching ----------------------------------------------------------------------------------
    def search(self, queries: SparseEmbeddings | torch.Tensor, k: int = 10, metric: str = "dot",
               backend: str = "numba", query_batch: int = 256) -> SearchResult:
        """Exact top-k items per query by `metric` ("dot" or "cosine"); see the module doc for ties."""
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} is unknown; use one of {METRICS}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; use one of {BACKENDS}.")
        if k < 1:
            raise ValueError("k must be >= 1.")
        if isinstance(queries, torch.Tensor):
            queries = SparseEmbeddings.from_dense(queries, torch.float32 if queries.dtype == torch.float64 else None)
        if queries.width != self.width:
            raise ValueError(f"Queries have width {queries.width}, the index {self.width}.")
        self._seal()
        k_eff = min(k, self._count)
        q = queries.to_scipy().astype(np.float64)
        q.sort_indices()
        q_scale = 1.0
        if metric == "cosine":
            q_norms = np.sqrt(np.asarray(q.power(2).sum(axis=1)).ravel())
            q_scale = np.divide(1.0, q_norms, out=np.zeros_like(q_norms), where=q_norms > 0)[:, None]
        scores = np.full((len(queries), k_eff), -np.inf)
        positions = np.full((len(queries), k_eff), -1, dtype=np.int64)
        for lo in range(0, len(queries), query_batch):
            block = q[lo : lo + query_batch]
            s, p = self._search_block(block, k_eff, metric == "cosine", backend)
            scores[lo : lo + query_batch], positions[lo : lo + query_batch] = s, p
        scores = scores * q_scale
        ids = self.ids() if self._ids is not None else None
        return SearchResult(scores, positions, [[ids[p] if ids else int(p) for p in row] for row in positions])

    def _search_block(self, q, k, cosine, backend):
        best_s = np.full((q.shape[0], k), -np.inf)
        best_p = np.full((q.shape[0], k), -1, dtype=np.int64)
        if k == 0:
            return best_s, best_p
        if backend == "numba":
            kernel = _numba_kernel()
            acc = np.zeros(max((s.n for s in self._segments), default=0))
            indptr, indices, data = q.indptr.astype(np.int64), q.indices.astype(np.int32), q.data
            for seg in self._segments:
                kernel(indptr, indices, data, seg.indptr, seg.items, seg.values, seg.inv_norms, cosine, seg.start,
                       best_s, best_p, acc[: seg.n])
            return best_s, best_p
        import scipy.sparse as sp

        for seg in self._segments:
            postings = sp.csr_matrix((seg.values.astype(np.float64), seg.items, seg.indptr), shape=(self.width, seg.n))
            block = (q @ postings).toarray()
            if cosine:
                block *= seg.inv_norms[None, :]
            s, p = exact_topk(block, k, positions=np.arange(seg.start, seg.start + seg.n))
            best_s, best_p = merge_topk(best_s, best_p, s, p, k)
        return best_s, best_p

    # -- files --------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """`sparse_index.safetensors` (posting lists, norms, integer ids) + `sparse_index.json`."""
        from safetensors.numpy import save_file

        self._seal()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for i, seg in enumerate(self._segments):
            tensors.update({f"{i}.indptr": seg.indptr, f"{i}.items": seg.items, f"{i}.values": seg.values, f"{i}.inv_norms": seg.inv_norms})
        meta = {"format": _FORMAT, "version": 1, "width": self.width, "segment_size": self.segment_size,
                "count": self._count, "segments": [[s.start, s.n] for s in self._segments], "ids": None}
        if self._ids is not None:
            if all(isinstance(i, (int, np.integer)) for i in self._ids):
                tensors["ids"] = np.asarray(self._ids, dtype=np.int64)
                meta["ids"] = "tensor"
            else:
                meta["ids"] = [str(i) for i in self._ids]
        save_file(tensors, str(directory / _INDEX_FILE))
        (directory / _META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: str | Path) -> "SparseIndex":
        from safetensors.numpy import load_file

        directory = Path(directory)
        if not (directory / _META_FILE).exists():
            raise FileNotFoundError(f"No {_META_FILE} in {directory}: save the index with SparseIndex.save first.")
        meta = json.loads((directory / _META_FILE).read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{directory} does not hold a sparse index (format {meta.get('format')!r}).")
        tensors = load_file(str(directory / _INDEX_FILE))
        index = cls(meta["width"], meta["segment_size"])
        for i, (start, n) in enumerate(meta["segments"]):
            index._segments.append(_Segment(start, n, tensors[f"{i}.indptr"], tensors[f"{i}.items"], tensors[f"{i}.values"], tensors[f"{i}.inv_norms"]))
        index._count = meta["count"]
        if meta["ids"] == "tensor":
            index._ids = tensors["ids"].tolist()
        elif meta["ids"] is not None:
            index._ids = list(meta["ids"])
        return index


__all__ = ["SparseIndex", "SearchResult", "exact_topk", "merge_topk", "METRICS", "BACKENDS"]
