"""SparseIndex: exact top-k equal to a dense float64 brute force (dot and cosine, ids, ties, several
segments, both kernels, after save/load)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings
from modeling_sparse_clip.sparse_index import SparseIndex, exact_topk

WIDTH, N_ITEMS = 1024, 3000


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    items = torch.relu(torch.randn(N_ITEMS, WIDTH, generator=g) - 2.1)  # ~1.8% density
    items[::7, :8] += 1.0  # a few very frequent features, as in real sparse embeddings
    items[100] = items[2500]  # exact duplicates: ties broken by position
    items[1234] = 0  # an empty item: cosine 0, never NaN
    queries = torch.relu(torch.randn(25, WIDTH, generator=g) - 2.1)
    queries[0] = items[2500]
    queries[1] = 0  # an empty query
    queries[2] = items[7] * 3.0
    return items, queries


def _build(items, segment_size, ids=None):
    index = SparseIndex(WIDTH, segment_size=segment_size)
    for lo in range(0, N_ITEMS, 700):  # batches straddle segment boundaries; one batch in fp16
        batch = SparseEmbeddings.from_dense(items[lo : lo + 700], torch.float16 if lo == 700 else torch.float32)
        index.add(batch, ids=None if ids is None else ids[lo : lo + 700])
    return index


def _stored(items):
    # What the index holds: rows 700..1399 were added in fp16.
    stored = items.clone()
    stored[700:1400] = stored[700:1400].half().float()
    return stored.double()


def _brute_force(items, queries, metric, k=10):
    scores = queries.double() @ items.T
    if metric == "cosine":
        qn, xn = queries.double().norm(dim=1), items.norm(dim=1)
        scores = scores * torch.where(qn > 0, 1 / qn, 0)[:, None] * torch.where(xn > 0, 1 / xn, 0)[None, :]
    return exact_topk(scores, k)


def test_exact_topk_rule_matches_a_plain_sort():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(6, 40)).astype(float)  # many ties
    values, positions = exact_topk(scores, 7)
    for row in range(6):
        expected = sorted(range(40), key=lambda j: (-scores[row, j], j))[:7]
        assert positions[row].tolist() == expected
        assert values[row].tolist() == [scores[row, j] for j in expected]


@pytest.mark.parametrize("backend", ["numba", "scipy"])
@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("segment_size", [512, 100_000])
def test_topk_equals_dense_brute_force(data, backend, metric, segment_size):
    items, queries = data
    index = _build(items, segment_size)
    assert len(index) == N_ITEMS
    result = index.search(SparseEmbeddings.from_dense(queries), k=10, metric=metric, backend=backend)
    ref_scores, ref_positions = _brute_force(_stored(items), queries, metric)
    np.testing.assert_array_equal(result.positions, ref_positions)
    np.testing.assert_allclose(result.scores, ref_scores, rtol=1e-12, atol=1e-300)
    assert result.ids[0][:2] == [100, 2500]  # the duplicate pair, earlier position first
    if metric == "cosine":
        assert result.scores[0, 0] == pytest.approx(1.0) and result.positions[2, 0] == 7
        assert np.all(result.scores[1] == 0)  # empty query: every score 0, lowest positions


def test_ids_and_save_load(data, tmp_path):
    items, queries = data
    ids = [f"item-{i:05d}" for i in range(N_ITEMS)]
    index = _build(items, 512, ids=ids)
    index.save(tmp_path / "str_ids")
    loaded = SparseIndex.load(tmp_path / "str_ids")
    ref_positions = _brute_force(_stored(items), queries, "cosine")[1]
    for idx in (index, loaded):
        result = idx.search(queries, k=10, metric="cosine")
        assert result.ids == [[ids[p] for p in row] for row in ref_positions]
    int_ids = list(range(10_000, 10_000 + N_ITEMS))
    _build(items, 1000, ids=int_ids).save(tmp_path / "int_ids")
    loaded = SparseIndex.load(tmp_path / "int_ids")
    result = loaded.search(queries, k=10, metric="dot")
    assert result.ids == [[int_ids[p] for p in row] for row in _brute_force(_stored(items), queries, "dot")[1]]
    assert loaded.nbytes() > 0 and len(loaded) == N_ITEMS


def test_small_index_and_errors(data, tmp_path):
    items, queries = data
    index = SparseIndex(WIDTH)
    index.add(items[:4])
    result = index.search(queries[:3], k=10)
    assert result.positions.shape == (3, 4)  # k capped at the number of items
    with pytest.raises(ValueError, match="width"):
        index.add(items[:2, :100])
    with pytest.raises(ValueError, match="ids on every add"):
        index.add(items[4:6], ids=["a", "b"])
    with pytest.raises(ValueError, match="metric"):
        index.search(queries, metric="euclid")
    with pytest.raises(FileNotFoundError, match="SparseIndex.save"):
        SparseIndex.load(tmp_path)


def test_threads_and_query_batches_give_the_same_exact_answer(data):
    """The kernel runs queries in parallel threads (numba prange, one accumulator per thread): any
    thread count and query batch size gives the brute-force top-k."""
    import numba

    items, queries = data
    index = _build(items, 1000)
    ref_positions = _brute_force(_stored(items), queries, "dot")[1]
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            for batch in (1, 7, 256):
                np.testing.assert_array_equal(index.search(queries, k=10, query_batch=batch).positions, ref_positions)
    finally:
        numba.set_num_threads(before)


def test_scipy_and_numpy_inputs(data):
    items, queries = data
    index = SparseIndex(WIDTH)
    index.add(sp.csr_matrix(items.numpy()))
    ref_positions = _brute_force(items.double(), queries, "dot")[1]
    np.testing.assert_array_equal(index.search(queries.numpy(), k=10).positions, ref_positions)
