"""One search interface over sparse embeddings, several engines behind it.

    index = build_index(embeddings, backend="exact")        # or "seismic", "milvus"
    result = index.search(queries, k=10)                      # SearchResult: scores, positions, ids
    index.save("my_index"); index = load_index("my_index")    # the backend is read back from the folder

Backends (all score by inner product; metric="cosine" scores normalised rows):
  * "exact"   our `SparseIndex` (numba inverted lists): the exact top-k, one machine, in memory.
  * "seismic" Seismic (PyPI `pyseismic-lsr`, SIGIR 2024): approximate, one machine, fast; its
              accuracy/speed trade-off is set by `query_cut` and `heap_factor` at search time and
              `n_postings` / `summary_energy` at build time.
  * "milvus"  Milvus through `pymilvus` (SPARSE_FLOAT_VECTOR + SPARSE_INVERTED_INDEX, metric IP):
              `uri` a file path is Milvus Lite (embedded, in-process: proves the code path, not the
              speed); `uri="http://host:19530"` (+ `token`) is a Milvus standalone or distributed
              server that shards past one machine, through the same code.

Items are addressed by insertion position (0..n-1); `ids` (ints or strings) label them in results.
This module imports numpy (and scipy/numba for "exact") only: no torch, so it runs in a search server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .sparse_embeddings import as_csr
from .sparse_index import SearchResult, SparseIndex

BACKENDS = ("exact", "seismic", "milvus")
METRICS = ("dot", "cosine")
_CONFIG_FILE, _IDS_FILE = "search_index.json", "ids.json"


def _normalized(csr):
    """Rows scaled to unit L2 norm (float32; empty rows stay empty)."""
    norms = np.sqrt(np.asarray(csr.astype(np.float64).power(2).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    import scipy.sparse as sp

    return (sp.diags(scale) @ csr.astype(np.float64)).astype(np.float32).tocsr()


class SparseSearchIndex:
    """What every backend offers: `search`, `save`, `load`, `len`. Build with `build_index`."""

    backend: str = ""

    def __init__(self, width: int, count: int, metric: str, ids: Sequence | None):
        self.width, self.count, self.metric = int(width), int(count), metric
        self._ids = None if ids is None else list(ids)

    def __len__(self) -> int:
        return self.count

    def _prepare(self, embeddings):
        csr = as_csr(embeddings)
        if csr.shape[1] != self.width:
            raise ValueError(f"Vectors have width {csr.shape[1]}, the index {self.width}.")
        return _normalized(csr) if self.metric == "cosine" else csr

    def _result(self, scores: np.ndarray, positions: np.ndarray) -> SearchResult:
        ids = self._ids
        return SearchResult(scores, positions, [[(ids[p] if ids is not None else int(p)) for p in row if p >= 0] for row in positions])

    def search(self, queries, k: int = 10, **options) -> SearchResult:
        raise NotImplementedError

    # -- files ------------------------------------------------------------------------------------
    def _config(self) -> dict:
        return {"backend": self.backend, "width": self.width, "count": self.count, "metric": self.metric}

    def save(self, directory: str | Path) -> None:
        """Write the index to `directory` atomically (the folder holds a complete index or none)."""
        from .atomic import atomic_dir

        with atomic_dir(directory) as tmp:
            tmp.mkdir(parents=True)
            self._save_data(tmp)
            if self._ids is not None:
                (tmp / _IDS_FILE).write_text(json.dumps([i if isinstance(i, (int, str)) else int(i) for i in self._ids]))
            (tmp / _CONFIG_FILE).write_text(json.dumps(self._config()))

    def _save_data(self, directory: Path) -> None:
        raise NotImplementedError


class ExactSearchIndex(SparseSearchIndex):
    """Our `SparseIndex`: exact top-k (ties by position). Search options: `kernel` ("numba"/"scipy")."""

    backend = "exact"

    def __init__(self, index: SparseIndex, metric: str, ids):
        super().__init__(index.width, len(index), metric, ids)
        self.index = index

    @classmethod
    def build(cls, embeddings, metric: str = "dot", ids=None, segment_size: int = 16_384):
        csr = as_csr(embeddings)
        index = SparseIndex(csr.shape[1], segment_size=segment_size)
        index.add(csr)
        index.nbytes()  # seal now, so build time is measured here and not at the first search
        return cls(index, metric, ids)

    def search(self, queries, k: int = 10, kernel: str = "numba") -> SearchResult:
        found = self.index.search(as_csr(queries), k=k, metric=self.metric, backend=kernel)
        return self._result(found.scores, found.positions)

    def nbytes(self) -> int:
        return self.index.nbytes()

    def _save_data(self, directory: Path) -> None:
        self.index.save(directory / "sparse_index")

    @classmethod
    def _load(cls, directory: Path, config: dict, ids):
        return cls(SparseIndex.load(directory / "sparse_index"), config["metric"], ids)


class SeismicSearchIndex(SparseSearchIndex):
    """Seismic: approximate, one machine. Build options go to `SeismicIndex.build_from_dataset`
    (`n_postings`, `centroid_fraction`, `summary_energy`, `num_threads`, ...); search options:
    `query_cut` (query features kept, largest first), `heap_factor` (<1 prunes more), `num_threads`."""

    backend = "seismic"

    def __init__(self, index, width: int, count: int, metric: str, ids):
        super().__init__(width, count, metric, ids)
        self.index = index

    @classmethod
    def build(cls, embeddings, metric: str = "dot", ids=None, **build_options):
        import seismic

        tmp = cls(None, as_csr(embeddings).shape[1], 0, metric, ids)
        csr = tmp._prepare(embeddings)
        dataset = seismic.SeismicDataset(dim=csr.shape[1])
        # Documents are named by their position; Seismic skips empty rows (they score 0 anyway).
        dataset.add_documents_by_id([str(i) for i in range(csr.shape[0])], csr.indices.astype(np.int64),
                                    csr.data.astype(np.float32), csr.indptr.astype(np.int64))
        tmp.index, tmp.count = seismic.SeismicIndex.build_from_dataset(dataset, **build_options), csr.shape[0]
        return tmp

    def search(self, queries, k: int = 10, query_cut: int = 30, heap_factor: float = 0.9, num_threads: int = 0) -> SearchResult:
        import seismic

        q = self._prepare(queries)
        text = seismic.get_seismic_string()  # Seismic takes component ids as fixed-width strings
        components = [q.indices[q.indptr[i] : q.indptr[i + 1]].astype(text) for i in range(q.shape[0])]
        values = [q.data[q.indptr[i] : q.indptr[i + 1]].astype(np.float32) for i in range(q.shape[0])]
        found = self.index.batch_search(np.arange(q.shape[0]).astype(text), components, values, k=k,
                                        query_cut=query_cut, heap_factor=heap_factor, num_threads=num_threads)
        scores = np.full((q.shape[0], k), -np.inf)
        positions = np.full((q.shape[0], k), -1, dtype=np.int64)
        for hits in found:  # Seismic returns queries out of order: place each by its query id
            if hits:  # a query matching nothing comes back empty, without its id
                row = int(hits[0][0])
                for j, (_, score, doc) in enumerate(hits[:k]):
                    scores[row, j], positions[row, j] = score, int(doc)
        return self._result(scores, positions)

    def _save_data(self, directory: Path) -> None:
        self.index.save(str(directory / "seismic"))  # writes seismic.index.seismic

    @classmethod
    def _load(cls, directory: Path, config: dict, ids):
        import seismic

        return cls(seismic.SeismicIndex.load(str(directory / "seismic.index.seismic")), config["width"], config["count"],
                   config["metric"], ids)


class MilvusSearchIndex(SparseSearchIndex):
    """Milvus: items live in a collection (primary key = position, one SPARSE_FLOAT_VECTOR field).
    `uri`: a file path = Milvus Lite; `http://host:19530` (+ `token`) = a Milvus server. Search
    option `drop_ratio_search` (0 = score every posting) trades accuracy for speed, as in Milvus."""

    backend = "milvus"
    _FIELD = "sparse"

    def __init__(self, client, uri: str, collection: str, width: int, count: int, metric: str, ids, token: str = ""):
        super().__init__(width, count, metric, ids)
        self.client, self.uri, self.collection, self.token = client, uri, collection, token

    @staticmethod
    def _rows(csr) -> list[dict]:
        return [dict(zip(csr.indices[csr.indptr[i] : csr.indptr[i + 1]].tolist(), csr.data[csr.indptr[i] : csr.indptr[i + 1]].tolist()))
                for i in range(csr.shape[0])]

    @classmethod
    def build(cls, embeddings, metric: str = "dot", ids=None, uri: str = "milvus.db", collection: str = "sparse_clip",
              token: str = "", batch_size: int = 5_000):
        from pymilvus import DataType, MilvusClient

        client = MilvusClient(uri, token=token) if token else MilvusClient(uri)
        tmp = cls(client, uri, collection, as_csr(embeddings).shape[1], 0, metric, ids, token)
        csr = tmp._prepare(embeddings)
        if client.has_collection(collection):
            client.drop_collection(collection)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("position", DataType.INT64, is_primary=True)
        schema.add_field(cls._FIELD, DataType.SPARSE_FLOAT_VECTOR)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name=cls._FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        client.create_collection(collection, schema=schema, index_params=index_params)
        for lo in range(0, csr.shape[0], batch_size):
            block = csr[lo : lo + batch_size]
            # Milvus rejects an empty sparse vector: an all-zero item is left out (it scores 0).
            rows = [{"position": lo + i, cls._FIELD: vec} for i, vec in enumerate(cls._rows(block)) if vec]
            if rows:
                client.insert(collection, rows)
        client.flush(collection) if hasattr(client, "flush") else None
        tmp.count = csr.shape[0]
        return tmp

    def search(self, queries, k: int = 10, drop_ratio_search: float = 0.0) -> SearchResult:
        q = self._prepare(queries)
        scores = np.full((q.shape[0], k), -np.inf)
        positions = np.full((q.shape[0], k), -1, dtype=np.int64)
        rows = self._rows(q)
        live = [i for i, vec in enumerate(rows) if vec]  # an empty query matches nothing
        if live:
            found = self.client.search(self.collection, data=[rows[i] for i in live], anns_field=self._FIELD, limit=k,
                                       output_fields=["position"],
                                       search_params={"metric_type": "IP", "params": {"drop_ratio_search": drop_ratio_search}})
            for row, hits in zip(live, found):
                for j, hit in enumerate(list(hits)[:k]):
                    scores[row, j], positions[row, j] = hit["distance"], int(hit.get("id", hit.get("position")))
        return self._result(scores, positions)

    def close(self) -> None:
        self.client.close()

    def _config(self) -> dict:
        return {**super()._config(), "uri": self.uri, "collection": self.collection}

    def save(self, directory: str | Path) -> None:
        """The vectors stay in Milvus (a server, or the Lite file); the folder records where."""
        if "://" not in self.uri and Path(directory).resolve() in Path(self.uri).resolve().parents:
            raise ValueError(f"The Milvus Lite file {self.uri} lies inside {directory}, which save() replaces: save elsewhere.")
        super().save(directory)

    def _save_data(self, directory: Path) -> None:
        pass

    @classmethod
    def _load(cls, directory: Path, config: dict, ids, token: str = ""):
        from pymilvus import MilvusClient

        uri = config["uri"]
        client = MilvusClient(uri, token=token) if token else MilvusClient(uri)
        if not client.has_collection(config["collection"]):
            raise FileNotFoundError(f"Milvus at {uri} has no collection {config['collection']!r} (saved in {directory}).")
        return cls(client, uri, config["collection"], config["width"], config["count"], config["metric"], ids, token)


_CLASSES = {cls.backend: cls for cls in (ExactSearchIndex, SeismicSearchIndex, MilvusSearchIndex)}


def build_index(embeddings, backend: str = "exact", metric: str = "dot", ids: Sequence | None = None, **options) -> SparseSearchIndex:
    """Index `embeddings` (`SparseEmbeddings`, scipy sparse, or dense arrays) with `backend`;
    `options` go to that backend's `build` (see the classes above)."""
    if backend not in _CLASSES:
        raise ValueError(f"backend={backend!r} is unknown; use one of {BACKENDS}.")
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is unknown; use one of {METRICS}.")
    n = as_csr(embeddings).shape[0] if ids is not None else None
    if ids is not None and len(ids) != n:
        raise ValueError(f"Got {len(ids)} ids for {n} embeddings.")
    return _CLASSES[backend].build(embeddings, metric=metric, ids=ids, **options)


def load_index(directory: str | Path, **options) -> SparseSearchIndex:
    """An index saved by `.save(directory)`, whatever its backend."""
    directory = Path(directory)
    if not (directory / _CONFIG_FILE).exists():
        raise FileNotFoundError(f"No {_CONFIG_FILE} in {directory}: save an index there with build_index(...).save first.")
    config = json.loads((directory / _CONFIG_FILE).read_text())
    ids = json.loads((directory / _IDS_FILE).read_text()) if (directory / _IDS_FILE).exists() else None
    return _CLASSES[config["backend"]]._load(directory, config, ids, **options)


__all__ = ["BACKENDS", "METRICS", "SparseSearchIndex", "ExactSearchIndex", "SeismicSearchIndex", "MilvusSearchIndex",
           "build_index", "load_index", "SearchResult"]
