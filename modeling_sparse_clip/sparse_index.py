"""Exact top-k retrieval over sparse embeddings with inverted lists.

Items are stored as posting lists per feature in segments of `segment_size` items (for feature f
of a segment: the segment's items that use f and their values). A query touches only the posting
lists of its own non-zero features, so the work per query is sum over its features of the list
lengths (~ N * sum_f freq_f^2) instead of N * width for a dense scan. Scores are accumulated in
float64 from the stored float32 values, so they equal a float64 dense brute force up to
summation-order rounding (~1e-16 relative).

Speed: segments are small (16,384 items by default), so a query's float64 accumulator over a
segment (128 KiB) stays in the L2 cache while its posting lists stream in; queries run in parallel
threads (numba `prange`; `numba.set_num_threads` sets how many). Batching 8 queries per posting
read (an items x 8 accumulator) was measured and was slower: the scattered accumulator updates,
not the reads, are the cost.

Exactness contract: the top-k returned is the top-k of the full score vector, ordered by score
descending and, for equal scores, by insertion position ascending; `exact_topk` applies the same
rule to any dense score matrix (what the tests and benchmark compare against).

Two interchangeable kernels: `numba` (compiled, the default) and `scipy` (sparse-sparse product
to a dense score block, then `exact_topk`). This module needs numpy, scipy and numba only: torch is
imported only when torch tensors are passed in (a search server can run without it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .sparse_embeddings import SparseEmbeddings, as_csr

METRICS = ("dot", "cosine")
BACKENDS = ("numba", "scipy")
_INDEX_FILE, _META_FILE, _FORMAT = "sparse_index.safetensors", "sparse_index.json", "sparse_clip.sparse_index"


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


# ----------------------------------------------------------------------------------------------
# Top-k with a deterministic tie rule, shared by every path (and by the dense references)
# ----------------------------------------------------------------------------------------------
def exact_topk(scores, k: int, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `scores` (Q, n; numpy or torch): the k best (score desc, then position asc) as
    (scores, positions). `positions` (n,) are the global positions of the columns (default 0..n-1).
    NaN scores never win."""
    scores = scores.detach().cpu().numpy() if _is_torch(scores) else np.asarray(scores)
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


def _numba_cache_dir() -> str:
    """numba writes compiled kernels next to the package source unless told otherwise (a read-only
    site-packages, or a shared checkout, then gets __pycache__ files it does not expect): unless the
    user set NUMBA_CACHE_DIR, they go under the project cache (<SPARSE_CLIP_CACHE>/numba)."""
    # constants.CACHE_ROOT's rule, read here directly: constants.py imports the (torch) Hub file.
    cache_root = Path(os.environ.get("SPARSE_CLIP_CACHE", ".cache"))
    return os.environ.get("NUMBA_CACHE_DIR") or str((cache_root / "numba").resolve())


def _numba_kernel():
    """Compile once (cached on disk, see `_numba_cache_dir`)."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is None:
        import numba

        numba.config.CACHE_DIR = _numba_cache_dir()  # read when the cached dispatcher is created

        @numba.njit(parallel=True, cache=True, nogil=True)
        def segment_topk(q_indptr, q_idx, q_val, p_indptr, p_items, p_val, item_scale, use_scale, base,
                         out_scores, out_pos, acc):
            """One segment, all queries (in parallel threads). Query i adds its features' posting lists
            into its thread's accumulator row of acc (zero on entry and exit), then merges the segment into its running top-k in
            out_scores/out_pos; items are visited in ascending order, so a strict `>` keeps earlier
            positions first among equal scores."""
            k = out_scores.shape[1]
            n_items = item_scale.shape[0]
            for i in numba.prange(q_indptr.shape[0] - 1):
                a = acc[numba.get_thread_id()]  # one accumulator per thread, reused by its queries
                for j in range(q_indptr[i], q_indptr[i + 1]):
                    feature = q_idx[j]
                    qv = q_val[j]
                    for p in range(p_indptr[feature], p_indptr[feature + 1]):
                        a[p_items[p]] += qv * p_val[p]
                kth = out_scores[i, k - 1]
                for item in range(n_items):
                    s = a[item]
                    if s == 0.0 and kth >= 0.0:  # most items share no feature with the query
                        continue
                    a[item] = 0.0
                    if use_scale:
                        s = s * item_scale[item]
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
    def from_rows(cls, start: int, rows) -> "_Segment":
        """From a float32 scipy CSR block of rows."""
        csc = rows.tocsc()
        csc.sort_indices()
        norms = np.sqrt(np.asarray(rows.astype(np.float64).power(2).sum(axis=1)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return cls(start, rows.shape[0], csc.indptr.astype(np.int64), csc.indices.astype(np.int32),
                   csc.data.astype(np.float32), inv)

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

    `add` takes `SparseEmbeddings`, scipy sparse matrices or dense (n, width) torch/numpy arrays,
    buffers them and seals them into segments of `segment_size` items; `search` visits every segment.
    """

    def __init__(self, width: int, segment_size: int = 16_384):
        if width <= 0 or segment_size <= 0:
            raise ValueError("width and segment_size must be positive.")
        self.width, self.segment_size = int(width), int(segment_size)
        self._segments: list[_Segment] = []
        self._pending: list = []  # float32 scipy CSR blocks not yet sealed
        self._pending_rows = 0
        self._ids: list | None = None  # None: ids are positions
        self._count = 0

    # -- building -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def add(self, embeddings, ids: Sequence | None = None) -> None:
        """Append items. `ids` (ints or strings) label them in results; give ids on every call or on
        none (then ids = positions)."""
        rows = as_csr(embeddings)
        if rows.shape[1] != self.width:
            raise ValueError(f"Embeddings have width {rows.shape[1]}, the index {self.width}.")
        if ids is not None and len(ids) != rows.shape[0]:
            raise ValueError(f"Got {len(ids)} ids for {rows.shape[0]} embeddings.")
        if (ids is None) != (self._ids is None) and self._count > 0:
            raise ValueError("Give ids on every add() or on none (then results report insertion positions).")
        if ids is not None:
            self._ids = (self._ids or []) + list(ids)
        if rows.shape[0] == 0:
            return
        self._pending.append(rows)
        self._pending_rows += rows.shape[0]
        self._count += rows.shape[0]
        if self._pending_rows >= self.segment_size:
            self._seal(final=False)

    def _seal(self, final: bool = True) -> None:
        """Turn buffered rows into segments (full ones only, unless `final`)."""
        if not self._pending:
            return
        import scipy.sparse as sp

        rows = sp.vstack(self._pending, format="csr") if len(self._pending) > 1 else self._pending[0]
        start = self._count - rows.shape[0]
        done = 0
        while rows.shape[0] - done >= self.segment_size or (final and done < rows.shape[0]):
            stop = min(done + self.segment_size, rows.shape[0])
            self._segments.append(_Segment.from_rows(start + done, rows[done:stop]))
            done = stop
        rest = rows[done:]
        self._pending, self._pending_rows = ([rest] if rest.shape[0] else []), rest.shape[0]

    def ids(self) -> list:
        return list(range(self._count)) if self._ids is None else list(self._ids)

    def nbytes(self) -> int:
        """Bytes of the sealed posting lists and norms."""
        self._seal()
        return sum(s.nbytes() for s in self._segments)

    # -- searching ----------------------------------------------------------------------------------
    def search(self, queries, k: int = 10, metric: str = "dot", backend: str = "numba",
               query_batch: int = 256) -> SearchResult:
        """Exact top-k items per query by `metric` ("dot" or "cosine"); see the module doc for ties.
        `queries`: anything `add` takes. `backend` is the kernel ("numba" or "scipy")."""
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} is unknown; use one of {METRICS}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; use one of {BACKENDS}.")
        if k < 1:
            raise ValueError("k must be >= 1.")
        q = as_csr(queries)
        if q.shape[1] != self.width:
            raise ValueError(f"Queries have width {q.shape[1]}, the index {self.width}.")
        self._seal()
        k_eff = min(k, self._count)
        q = q.astype(np.float64)
        q_scale = 1.0
        if metric == "cosine":
            q_norms = np.sqrt(np.asarray(q.power(2).sum(axis=1)).ravel())
            q_scale = np.divide(1.0, q_norms, out=np.zeros_like(q_norms), where=q_norms > 0)[:, None]
        n_q = q.shape[0]
        scores = np.full((n_q, k_eff), -np.inf)
        positions = np.full((n_q, k_eff), -1, dtype=np.int64)
        for lo in range(0, n_q, query_batch):
            s, p = self._search_block(q[lo : lo + query_batch], k_eff, metric == "cosine", backend)
            scores[lo : lo + query_batch], positions[lo : lo + query_batch] = s, p
        scores = scores * q_scale
        ids = self._ids
        return SearchResult(scores, positions, [[ids[p] if ids is not None else int(p) for p in row] for row in positions])

    def _search_block(self, q, k, cosine, backend):
        best_s = np.full((q.shape[0], k), -np.inf)
        best_p = np.full((q.shape[0], k), -1, dtype=np.int64)
        if k == 0 or q.shape[0] == 0:
            return best_s, best_p
        if backend == "numba":
            kernel = _numba_kernel()
            q.sort_indices()
            indptr, indices = q.indptr.astype(np.int64), q.indices.astype(np.int32)
            import numba

            acc = np.zeros((numba.get_num_threads(), max((s.n for s in self._segments), default=0)))
            for seg in self._segments:
                kernel(indptr, indices, q.data, seg.indptr, seg.items, seg.values, seg.inv_norms, cosine, seg.start,
                       best_s, best_p, acc[:, : seg.n])
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
        """`sparse_index.safetensors` (posting lists, norms, integer ids) + `sparse_index.json`,
        written atomically (a folder either holds a complete index or none)."""
        from safetensors.numpy import save_file

        from .atomic import atomic_dir

        self._seal()
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
        with atomic_dir(directory) as tmp:
            tmp.mkdir(parents=True)
            save_file(tensors, str(tmp / _INDEX_FILE))
            (tmp / _META_FILE).write_text(json.dumps(meta))

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
