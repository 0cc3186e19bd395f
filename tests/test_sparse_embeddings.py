"""SparseEmbeddings: exact round trips (dense, scipy, safetensors, Parquet, datasets) for every value
dtype, and row normalisation. (Encoding models into them: tests/test_encoding.py.)"""

import datasets
import numpy as np
import pytest
import torch

from modeling_sparse_clip.sparse_embeddings import VALUE_DTYPES, SparseEmbeddings, normalize_rows


@pytest.fixture
def dense():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(9, 200, generator=g) - 1.8)  # ~4% density
    x[4] = 0  # an empty row
    x[7, 199] = 3.0  # the last column
    x[2, 5] = 1e-30  # underflows to 0 in fp16 / stays in bf16
    return x


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_dense_round_trip_is_exact(dense, dtype):
    emb = SparseEmbeddings.from_dense(dense, dtype)
    assert emb.shape == (9, 200) and emb.dtype == dtype
    assert emb.indices.dtype == torch.int32 and emb.indptr.dtype == torch.int64
    assert torch.equal(emb.to_dense(), dense.to(dtype))
    assert emb.row_nnz()[4] == 0
    assert emb.nnz == int((dense.to(dtype) != 0).sum())
    # Columns are sorted within rows, as scipy's canonical CSR.
    assert emb.to_scipy().has_sorted_indices


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_scipy_round_trip_is_exact(dense, dtype):
    emb = SparseEmbeddings.from_dense(dense, dtype)
    csr = emb.to_scipy()
    np.testing.assert_array_equal(csr.toarray(), dense.to(dtype).float().numpy())
    assert SparseEmbeddings.from_scipy(csr, dtype).equal(emb)


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_safetensors_round_trip_is_exact(dense, dtype, tmp_path):
    emb = SparseEmbeddings.from_dense(dense, dtype)
    emb.save(tmp_path / "emb.safetensors")
    back = SparseEmbeddings.load(tmp_path / "emb.safetensors")
    assert back.equal(emb) and torch.equal(back.to_dense(), dense.to(dtype))


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_parquet_and_datasets_round_trips_are_exact(dense, dtype, tmp_path):
    emb = SparseEmbeddings.from_dense(dense, dtype)
    emb.to_parquet(tmp_path / "emb.parquet")
    assert SparseEmbeddings.from_parquet(tmp_path / "emb.parquet").equal(emb)
    # datasets: in memory, after save_to_disk, after a select, and read from our Parquet file.
    ds = emb.to_dataset(caption=[f"row {i}" for i in range(len(emb))])
    assert set(ds.column_names) == {"indices", "values", "caption"}
    assert SparseEmbeddings.from_dataset(ds).equal(emb)
    ds.save_to_disk(tmp_path / "ds")
    assert SparseEmbeddings.from_dataset(datasets.load_from_disk(tmp_path / "ds")).equal(emb)
    picked = SparseEmbeddings.from_dataset(ds.select([7, 2, 4]))
    assert torch.equal(picked.to_dense(), dense.to(dtype)[[7, 2, 4]])
    from_file = datasets.Dataset.from_parquet(str(tmp_path / "emb.parquet"))
    assert SparseEmbeddings.from_dataset(from_file, width=200).equal(emb)


def test_datasets_without_width_says_what_to_do(dense, tmp_path):
    SparseEmbeddings.from_dense(dense).to_parquet(tmp_path / "emb.parquet")
    with pytest.raises(ValueError, match="pass width="):
        SparseEmbeddings.from_dataset(datasets.Dataset.from_parquet(str(tmp_path / "emb.parquet")))


def test_rows_concat_and_bad_input(dense, tmp_path):
    emb = SparseEmbeddings.from_dense(dense)
    assert SparseEmbeddings.concat([emb[:3], emb[3:4], emb[4:]]).equal(emb)
    assert torch.equal(emb[7].to_dense()[0], dense[7])
    assert emb.nbytes() == 8 * 10 + 4 * emb.nnz + 4 * emb.nnz
    with pytest.raises(ValueError, match="indices must lie"):
        SparseEmbeddings(emb.indptr, emb.indices, emb.values, width=100)
    with pytest.raises(ValueError, match="must be one of"):
        SparseEmbeddings.from_dense(dense.double())
    torch.save({"x": 1}, tmp_path / "other.pt")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a sparse embedding file"):
        SparseEmbeddings.load(tmp_path / "other.safetensors")


def test_normalize_rows_gives_unit_rows_and_keeps_empty_rows(dense):
    emb = SparseEmbeddings.from_dense(dense)
    unit = normalize_rows(emb)
    expected = torch.nn.functional.normalize(dense.double(), dim=-1).float()
    torch.testing.assert_close(unit.to_dense(), expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(unit.indices, emb.indices) and unit.to_dense()[4].abs().sum() == 0
