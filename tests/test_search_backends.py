"""One search interface, three engines: each backend's top-10 against a float64 brute force (exact:
identical; Seismic: recall reported and bounded; Milvus Lite: round trip through its file), save/load,
and the exact path importing without torch (numba's cache under the project cache, not the source)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from modeling_sparse_clip.search_backends import build_index, load_index
from modeling_sparse_clip.sparse_index import exact_topk
from tests.isolation import hide_modules

REPO = Path(__file__).resolve().parents[1]
WIDTH, N_ITEMS, N_QUERIES = 2048, 4000, 60


@pytest.fixture(scope="module")
def data():
    """Non-negative sparse vectors with a skewed feature frequency (a few features in most items), as
    Sparse CLIP activations have; duplicates and an empty item and query exercise ties and zeros."""
    rng = np.random.default_rng(0)
    freq = np.minimum(0.9, 0.02 * (np.arange(1, WIDTH + 1) / 50.0) ** -0.7)

    def draw(n):
        dense = (rng.random((n, WIDTH)) < freq) * rng.exponential(size=(n, WIDTH))
        return dense.astype(np.float32)

    items, queries = draw(N_ITEMS), draw(N_QUERIES)
    items[10] = items[3000]  # duplicate pair: ties broken by position
    items[77] = 0
    queries[0] = items[3000]
    queries[1] = 0
    return sp.csr_matrix(items), sp.csr_matrix(queries)


def _reference(items, queries, metric, k=10):
    x, q = items.astype(np.float64), queries.astype(np.float64)
    scores = (q @ x.T).toarray()
    if metric == "cosine":
        xn, qn = np.sqrt(np.asarray(x.power(2).sum(1)).ravel()), np.sqrt(np.asarray(q.power(2).sum(1)).ravel())
        scores = scores * np.divide(1, qn, out=np.zeros_like(qn), where=qn > 0)[:, None] * np.divide(1, xn, out=np.zeros_like(xn), where=xn > 0)[None]
    return exact_topk(scores, k)


def _recall(found, ref) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(found, ref)]))


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_exact_backend_is_the_brute_force_top10(data, metric, tmp_path):
    items, queries = data
    ids = [f"img-{i}" for i in range(N_ITEMS)]
    index = build_index(items, backend="exact", metric=metric, ids=ids, segment_size=1500)
    ref_scores, ref_pos = _reference(items, queries, metric)
    result = index.search(queries, k=10)
    np.testing.assert_array_equal(result.positions, ref_pos)
    np.testing.assert_allclose(result.scores, ref_scores, rtol=1e-12)
    assert result.ids[0][:2] == ["img-10", "img-3000"]
    np.testing.assert_array_equal(index.search(queries, k=10, kernel="scipy").positions, ref_pos)
    index.save(tmp_path / "exact")
    loaded = load_index(tmp_path / "exact")
    assert loaded.backend == "exact" and len(loaded) == N_ITEMS
    again = loaded.search(queries, k=10)
    np.testing.assert_array_equal(again.positions, ref_pos)
    assert again.ids == result.ids


def test_seismic_backend_recall_and_save_load(data, tmp_path):
    pytest.importorskip("seismic")
    items, queries = data
    _, ref_pos = _reference(items, queries, "dot")
    index = build_index(items, backend="seismic", num_threads=1)
    recalls = {}
    for query_cut, heap_factor in ((10, 0.7), (60, 1.0)):
        result = index.search(queries, k=10, query_cut=query_cut, heap_factor=heap_factor, num_threads=1)
        recalls[(query_cut, heap_factor)] = _recall(result.positions[2:], ref_pos[2:])  # skip the empty query
    print(f"Seismic recall@10 vs exact: {recalls}")
    assert min(recalls.values()) >= 0.95  # approximate: measured 0.99 at both settings
    assert result.positions[0, 0] in (10, 3000)  # the query equal to an item finds it
    # scores Seismic reports are the inner products of the items it returns (its stored values are
    # reduced-precision: measured relative error 4e-4)
    true = (queries[2:].astype(np.float64) @ items.astype(np.float64).T).toarray()
    got = result.positions[2:]
    np.testing.assert_allclose(result.scores[2:][got >= 0], np.take_along_axis(true, np.maximum(got, 0), 1)[got >= 0], rtol=3e-3)
    index.save(tmp_path / "seismic")
    loaded = load_index(tmp_path / "seismic")
    np.testing.assert_array_equal(loaded.search(queries, k=10, query_cut=60, heap_factor=1.0, num_threads=1).positions, result.positions)


def test_milvus_lite_round_trip(data, tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    items, queries = data[0][:1500], data[1][:12]
    ref_scores, ref_pos = _reference(items, queries, "dot")
    ids = list(range(5000, 6500))
    index = build_index(items, backend="milvus", ids=ids, uri=str(tmp_path / "milvus.db"), collection="emb")
    result = index.search(queries, k=10)
    assert _recall(result.positions[2:], ref_pos[2:]) == 1.0  # drop_ratio_search=0: every posting scored
    np.testing.assert_allclose(result.scores[2:], ref_scores[2:], rtol=1e-5)
    assert np.all(result.positions[1] == -1)  # the empty query matches nothing
    with pytest.raises(ValueError, match="inside"):
        index.save(tmp_path)  # would replace the folder holding the Lite file
    index.save(tmp_path / "milvus_index")
    index.close()
    loaded = load_index(tmp_path / "milvus_index")
    assert json.loads((tmp_path / "milvus_index" / "search_index.json").read_text())["backend"] == "milvus"
    again = loaded.search(queries, k=10)
    np.testing.assert_array_equal(again.positions, result.positions)
    assert again.ids[2] == [ids[p] for p in result.positions[2]]
    loaded.close()


def test_unknown_backend_and_metric(data):
    with pytest.raises(ValueError, match="backend"):
        build_index(data[0], backend="faiss")
    with pytest.raises(ValueError, match="metric"):
        build_index(data[0], metric="euclid")
    with pytest.raises(ValueError, match="ids"):
        build_index(data[0], ids=[1, 2])


def test_exact_search_imports_without_torch(data, tmp_path):
    """A search server without torch: SparseEmbeddings' module, the exact backend and a saved
    embedding file load; numba's compiled kernel is cached under the project cache, not the source."""
    import torch

    from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings

    items, queries = data
    SparseEmbeddings.from_scipy(items).save(tmp_path / "items.safetensors")
    sp.save_npz(tmp_path / "queries.npz", queries)
    ref = _reference(items, queries, "dot")[1]
    np.save(tmp_path / "ref.npy", ref)
    before = {p for p in (REPO / "modeling_sparse_clip").rglob("*") if p.suffix in (".nbi", ".nbc")}
    script = hide_modules("torch", "transformers") + textwrap.dedent(
        f"""
        import numpy as np, scipy.sparse as sp
        from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings, load_scipy
        from modeling_sparse_clip.search_backends import build_index
        items = load_scipy({str(tmp_path / 'items.safetensors')!r})
        result = build_index(items, backend="exact").search(sp.load_npz({str(tmp_path / 'queries.npz')!r}), k=10)
        assert np.array_equal(result.positions, np.load({str(tmp_path / 'ref.npy')!r}))
        assert not any(m.split(".")[0] in ("torch", "transformers") for m in sys.modules), "torch was imported"
        print("NO-TORCH-OK")
        """
    )
    env = {**os.environ, "SPARSE_CLIP_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert "NO-TORCH-OK" in out.stdout, out.stderr[-3000:]
    assert list((tmp_path / "cache" / "numba").rglob("*.nbi")), "numba cache not under SPARSE_CLIP_CACHE"
    after = {p for p in (REPO / "modeling_sparse_clip").rglob("*") if p.suffix in (".nbi", ".nbc")}
    assert after == before, f"numba wrote next to the package source: {after - before}"
    del torch
