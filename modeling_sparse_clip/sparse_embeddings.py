"""Sparse embedding batches: CSR storage, conversions and files (the package's one sparse type).

A Sparse CLIP embedding has ~0.5-2% non-zero dimensions, so a batch is stored as CSR:
`indptr` (int64, n+1), `indices` (int32 column ids, sorted within each row), `values`
(fp16 / bf16 / fp32) and the embedding `width`. It converts to and from dense torch tensors,
`scipy.sparse.csr_matrix`, safetensors files and Parquet / `datasets.Dataset` columns
(`indices`, `values`); every round trip is exact.

The module imports without torch (a search server needs numpy/scipy only): the batch type holds
torch tensors, so it needs torch, but `as_csr` and `load_scipy` turn saved batches and scipy/numpy
input into the scipy CSR matrices that `sparse_index` and `search_backends` search, torch or not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

try:
    import torch
except ImportError:  # a torch-free process: SparseEmbeddings cannot be built, as_csr/load_scipy work
    torch = None

VALUE_DTYPES = (torch.float16, torch.bfloat16, torch.float32) if torch is not None else ()
_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"} if torch is not None else {}
_DTYPES_BY_NAME = {name: dtype for dtype, name in _DTYPE_NAMES.items()}
_FORMAT = "sparse_clip.csr"
_SCHEMA_KEY = b"sparse_clip"  # Parquet schema metadata: width and value dtype


def _check_value_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in VALUE_DTYPES:
        raise ValueError(f"Sparse embedding values must be one of {[_DTYPE_NAMES[d] for d in VALUE_DTYPES]}, got {dtype}.")
    return dtype


@dataclass
class SparseEmbeddings:
    """A batch of sparse embeddings in CSR form (row i = indices/values[indptr[i]:indptr[i+1]])."""

    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    width: int

    def __post_init__(self):
        self.width = int(self.width)
        if self.indptr.dtype != torch.int64 or self.indptr.dim() != 1 or len(self.indptr) < 1:
            raise ValueError("indptr must be a 1-D int64 tensor of length n_rows + 1.")
        if self.indices.dtype != torch.int32 or self.indices.dim() != 1:
            raise ValueError("indices must be a 1-D int32 tensor.")
        _check_value_dtype(self.values.dtype)
        if self.values.shape != self.indices.shape:
            raise ValueError(f"indices and values differ in length: {len(self.indices)} vs {len(self.values)}.")
        if int(self.indptr[0]) != 0 or int(self.indptr[-1]) != len(self.indices):
            raise ValueError("indptr must start at 0 and end at len(indices).")
        if len(self.indptr) > 1 and bool((self.indptr[1:] < self.indptr[:-1]).any()):
            raise ValueError("indptr must be non-decreasing.")
        if len(self.indices) and (int(self.indices.min()) < 0 or int(self.indices.max()) >= self.width):
            raise ValueError(f"indices must lie in [0, width={self.width}).")

    # -- shape and statistics -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.width)

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def row_nnz(self) -> torch.Tensor:
        """Stored entries per row (the L0 of each embedding, when no explicit zeros are stored)."""
        return self.indptr[1:] - self.indptr[:-1]

    def density(self) -> float:
        return self.nnz / max(1, len(self) * self.width)

    def nbytes(self) -> int:
        """Bytes of the three CSR arrays (what the embeddings cost in memory or on disk, unpadded)."""
        return sum(t.numel() * t.element_size() for t in (self.indptr, self.indices, self.values))

    def __repr__(self) -> str:
        return (
            f"SparseEmbeddings(rows={len(self)}, width={self.width}, nnz={self.nnz}, "
            f"density={self.density():.4%}, dtype={_DTYPE_NAMES[self.dtype]})"
        )

    # -- rows ----------------------------------------------------------------------------------
    def __getitem__(self, rows: int | slice) -> "SparseEmbeddings":
        """Rows `rows` (an int or a step-1 slice) as a new batch."""
        if isinstance(rows, int):
            if not -len(self) <= rows < len(self):
                raise IndexError(f"row {rows} out of range for {len(self)} rows")
            rows = slice(rows % len(self), rows % len(self) + 1)
        start, stop, step = rows.indices(len(self))
        if step != 1:
            raise ValueError("Only contiguous row slices are supported.")
        stop = max(start, stop)
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        return SparseEmbeddings(self.indptr[start : stop + 1] - lo, self.indices[lo:hi], self.values[lo:hi], self.width)

    def row(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, values) of row i."""
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.indices[lo:hi], self.values[lo:hi]

    @classmethod
    def concat(cls, batches: Sequence["SparseEmbeddings"]) -> "SparseEmbeddings":
        if not batches:
            raise ValueError("concat needs at least one batch.")
        widths, dtypes = {b.width for b in batches}, {b.dtype for b in batches}
        if len(widths) != 1 or len(dtypes) != 1:
            raise ValueError(f"Cannot concatenate batches of different widths {widths} or dtypes {dtypes}.")
        offsets = torch.tensor([0] + [b.nnz for b in batches], dtype=torch.int64).cumsum(0)
        indptr = torch.cat([batches[0].indptr[:1]] + [b.indptr[1:] + off for b, off in zip(batches, offsets[:-1])])
        return cls(indptr, torch.cat([b.indices for b in batches]), torch.cat([b.values for b in batches]), widths.pop())

    def to(self, dtype: torch.dtype) -> "SparseEmbeddings":
        """Cast the values (may round; fp32 -> fp16/bf16 can underflow small values to stored zeros)."""
        return SparseEmbeddings(self.indptr, self.indices, self.values.to(_check_value_dtype(dtype)), self.width)

    def equal(self, other: "SparseEmbeddings") -> bool:
        """Bit-for-bit equality of structure, dtype and values."""
        return (
            self.width == other.width
            and self.dtype == other.dtype
            and torch.equal(self.indptr, other.indptr)
            and torch.equal(self.indices, other.indices)
            and torch.equal(self.values.view(torch.int16 if self.values.element_size() == 2 else torch.int32),
                            other.values.view(torch.int16 if other.values.element_size() == 2 else torch.int32))
        )

    # -- dense tensors ---------------------------------------------------------------------------
    @classmethod
    def from_dense(cls, dense: torch.Tensor, dtype: torch.dtype | None = None) -> "SparseEmbeddings":
        """Keep the non-zeros of a (rows, width) tensor; values are cast to `dtype` FIRST (so
        values that underflow in fp16/bf16 are dropped, and `to_dense()` returns exactly
        `dense.to(dtype)`)."""
        if dense.dim() != 2:
            raise ValueError(f"Expected a (rows, width) tensor, got shape {tuple(dense.shape)}.")
        dense = dense.detach().to("cpu", _check_value_dtype(dtype or dense.dtype))
        rows, cols = (dense != 0).nonzero(as_tuple=True)  # row-major, so columns sorted within rows
        counts = torch.bincount(rows, minlength=dense.shape[0])
        indptr = torch.zeros(dense.shape[0] + 1, dtype=torch.int64)
        indptr[1:] = counts.cumsum(0)
        return cls(indptr, cols.to(torch.int32), dense[rows, cols], dense.shape[1])

    def to_dense(self) -> torch.Tensor:
        dense = torch.zeros(len(self), self.width, dtype=self.dtype)
        rows = torch.repeat_interleave(torch.arange(len(self)), self.row_nnz())
        dense[rows, self.indices.long()] = self.values
        return dense

    # -- scipy -----------------------------------------------------------------------------------
    @classmethod
    def from_scipy(cls, matrix, dtype: torch.dtype | None = None) -> "SparseEmbeddings":
        """From any scipy sparse matrix (converted to CSR with sorted, de-duplicated indices)."""
        import scipy.sparse as sp

        csr = sp.csr_matrix(matrix, copy=True)
        csr.sum_duplicates()  # also sorts indices
        values = torch.from_numpy(np.ascontiguousarray(csr.data, dtype=np.float32 if csr.data.dtype != np.float64 else np.float64))
        return cls(
            torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int32)),
            values.to(_check_value_dtype(dtype or torch.float32)),
            csr.shape[1],
        )

    def to_scipy(self):
        """A `scipy.sparse.csr_matrix`. scipy has no fp16/bf16, so those values become float32
        (exactly: every fp16/bf16 number is a float32 number)."""
        import scipy.sparse as sp

        values = self.values if self.dtype == torch.float32 else self.values.float()
        return sp.csr_matrix((values.numpy(), self.indices.numpy(), self.indptr.numpy()), shape=self.shape)

    # -- safetensors -------------------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Write a safetensors file with tensors `indptr`, `indices`, `values` and the width in its metadata."""
        from safetensors.torch import save_file

        meta = {"format": _FORMAT, "width": str(self.width), **(metadata or {})}
        save_file({"indptr": self.indptr.contiguous(), "indices": self.indices.contiguous(), "values": self.values.contiguous()},
                  str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "SparseEmbeddings":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT or "width" not in meta:
                raise ValueError(f"{path} is not a sparse embedding file (expected metadata format={_FORMAT!r} and width).")
            return cls(f.get_tensor("indptr"), f.get_tensor("indices"), f.get_tensor("values"), int(meta["width"]))

    # -- Arrow / Parquet / datasets -------------------------------------------------------------------
    def to_arrow(self):
        """A pyarrow Table with list columns `indices` (int32) and `values` (float16/float32; bfloat16,
        which Arrow lacks, is stored bit-exactly as uint16). Width and dtype go in the schema metadata."""
        import pyarrow as pa

        big = self.nnz >= 2**31
        offsets = pa.array(self.indptr.numpy() if big else self.indptr.numpy().astype(np.int32))
        list_type = pa.LargeListArray if big else pa.ListArray
        values = self.values.view(torch.int16).numpy().view(np.uint16) if self.dtype == torch.bfloat16 else self.values.numpy()
        table = pa.table({
            "indices": list_type.from_arrays(offsets, pa.array(self.indices.numpy())),
            "values": list_type.from_arrays(offsets, pa.array(values)),
        })
        meta = json.dumps({"width": self.width, "dtype": _DTYPE_NAMES[self.dtype]}).encode()
        return table.replace_schema_metadata({**(table.schema.metadata or {}), _SCHEMA_KEY: meta})

    @classmethod
    def from_arrow(cls, table, width: int | None = None, dtype: torch.dtype | None = None) -> "SparseEmbeddings":
        """From a pyarrow Table (or anything with `indices` and `values` list columns, e.g. a
        `datasets.Dataset`'s `.data.table`). `width`/`dtype` default to the schema metadata."""
        meta = json.loads((table.schema.metadata or {}).get(_SCHEMA_KEY, b"{}"))
        width = width if width is not None else meta.get("width")
        if width is None:
            raise ValueError("The table carries no sparse_clip width metadata: pass width=<embedding width>.")
        stored = meta.get("dtype")
        indptr, indices = _flatten_list_column(table.column("indices"))
        indptr_v, values = _flatten_list_column(table.column("values"))
        if not np.array_equal(indptr, indptr_v):
            raise ValueError("Rows of `indices` and `values` have different lengths.")
        if stored == "bfloat16" or values.dtype == np.uint16:
            tensor = torch.from_numpy(values.astype(np.uint16).view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(values))
            if tensor.dtype == torch.float64:
                tensor = tensor.to(dtype or torch.float32)
        if dtype is not None:
            tensor = tensor.to(_check_value_dtype(dtype))
        return cls(torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(indices.astype(np.int32)), tensor, int(width))

    def to_parquet(self, path: str | Path) -> None:
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(), str(path))

    @classmethod
    def from_parquet(cls, path: str | Path, width: int | None = None) -> "SparseEmbeddings":
        import pyarrow.parquet as pq

        return cls.from_arrow(pq.read_table(str(path), columns=["indices", "values"]), width=width)

    def to_dataset(self, **extra_columns):
        """A `datasets.Dataset` with columns `indices`, `values` (+ any equal-length `extra_columns`,
        e.g. ids or captions); `from_dataset` reads it back exactly."""
        import datasets

        # datasets keeps its own schema metadata only, so width and dtype ride in the info description.
        info = datasets.DatasetInfo(description=json.dumps({"sparse_clip": {"width": self.width, "dtype": _DTYPE_NAMES[self.dtype]}}))
        dataset = datasets.Dataset(self.to_arrow(), info=info)
        for name, column in extra_columns.items():
            dataset = dataset.add_column(name, list(column))
        return dataset

    @classmethod
    def from_dataset(cls, dataset, width: int | None = None) -> "SparseEmbeddings":
        """From a `datasets.Dataset` with `indices` and `values` columns (after any select/shuffle).
        `width` defaults to what `to_dataset` wrote in `dataset.info.description`, or the Parquet
        metadata of `to_parquet` when the dataset was loaded from such a file."""
        meta = dataset.data.table.schema.metadata or {}
        stored = meta.get(_SCHEMA_KEY)
        try:
            stored = json.dumps(json.loads(dataset.info.description or "")["sparse_clip"]).encode()
        except (ValueError, KeyError, TypeError):
            pass
        table = dataset.select_columns(["indices", "values"]).with_format("arrow")[:]
        if stored is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), _SCHEMA_KEY: stored})
        return cls.from_arrow(table, width=width)


def _flatten_list_column(column) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat values) of a possibly chunked and sliced Arrow list column."""
    offsets, flats, base = [np.zeros(1, dtype=np.int64)], [], 0
    for chunk in column.chunks:
        if chunk.null_count:
            raise ValueError("Sparse embedding rows must not be null.")
        chunk_offsets = chunk.offsets.to_numpy().astype(np.int64)
        flats.append(chunk.values.slice(int(chunk_offsets[0]), int(chunk_offsets[-1] - chunk_offsets[0])).to_numpy(zero_copy_only=False))
        offsets.append(chunk_offsets[1:] - chunk_offsets[0] + base)
        base += int(chunk_offsets[-1] - chunk_offsets[0])
    flat = np.concatenate(flats) if flats else np.zeros(0)
    return np.concatenate(offsets), flat


def normalize_rows(embeddings: SparseEmbeddings) -> SparseEmbeddings:
    """Each row divided by its L2 norm (float32; all-zero rows stay zero): cosine-ready embeddings."""
    values = embeddings.values.float()
    rows = torch.repeat_interleave(torch.arange(len(embeddings)), embeddings.row_nnz())
    norms = torch.zeros(len(embeddings), dtype=torch.float64).index_add_(0, rows, values.double() ** 2).sqrt()
    norms[norms == 0] = 1.0
    return SparseEmbeddings(embeddings.indptr, embeddings.indices, (values.double() / norms[rows]).float(), embeddings.width)


def as_csr(embeddings):
    """A float32 `scipy.sparse.csr_matrix` (sorted indices) of `SparseEmbeddings`, a scipy sparse
    matrix, or a dense (n, width) torch tensor / numpy array (float64 input is rounded to float32,
    the precision every search backend stores). Torch is touched only for torch input."""
    import scipy.sparse as sp

    if isinstance(embeddings, SparseEmbeddings):
        csr = embeddings.to_scipy()
    elif sp.issparse(embeddings):
        csr = sp.csr_matrix(embeddings, dtype=np.float32, copy=True)
        csr.sum_duplicates()
    elif type(embeddings).__module__.split(".")[0] == "torch":
        dense = embeddings.detach().cpu()
        csr = SparseEmbeddings.from_dense(dense, torch.float32 if dense.dtype == torch.float64 else None).to_scipy()
    else:
        dense = np.asarray(embeddings)
        if dense.ndim != 2:
            raise ValueError(f"Expected a (rows, width) array, got shape {dense.shape}.")
        csr = sp.csr_matrix(dense.astype(np.float32))
    if csr.dtype != np.float32:
        csr = csr.astype(np.float32)
    csr.sort_indices()
    return csr


def load_scipy(path: str | Path):
    """A file written by `SparseEmbeddings.save`, read as a float32 scipy CSR matrix WITHOUT torch
    (fp16 values widen exactly; bfloat16, which numpy lacks, needs torch: use `SparseEmbeddings.load`)."""
    import scipy.sparse as sp
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != _FORMAT or "width" not in meta:
            raise ValueError(f"{path} is not a sparse embedding file (expected metadata format={_FORMAT!r} and width).")
        try:
            values = f.get_tensor("values")
        except (TypeError, ValueError) as error:  # bfloat16
            raise ValueError(f"{path} holds values numpy cannot read ({error}); load it with SparseEmbeddings.load.") from error
        indptr, indices = f.get_tensor("indptr"), f.get_tensor("indices")
    return sp.csr_matrix((values.astype(np.float32), indices, indptr), shape=(len(indptr) - 1, int(meta["width"])))


__all__ = ["SparseEmbeddings", "VALUE_DTYPES", "as_csr", "load_scipy", "normalize_rows"]
