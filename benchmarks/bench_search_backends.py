"""Top-10 search over sparse embeddings, side by side with the strongest baselines, in one run.

At each size (default 100K and 1M synthetic items from the project's own generator,
`bench_sparse_storage_retrieval.draw_items`: Zipf feature frequencies, measured L0 ~246 of 16,384)
and, with --model, on a real embedded corpus (its images are the items, its captions the queries):

  * ours, exact        `search_backends` "exact" (`SparseIndex`, numba inverted lists, prange threads)
  * scipy CSR          the two-liner `Q @ X.T` + argpartition (float32), in 100K-row chunks
  * FAISS FlatIP 512   dense 512-d fp32 random unit vectors (what a dense CLIP user runs), same threads
  * FAISS FlatIP full  the same sparse vectors densified to fp32 (100K only: 6.5 GB at 16,384 wide),
                       searched in 10K-row chunks (densifying outside the timer)
  * Seismic            `search_backends` "seismic" at several (query_cut, heap_factor) settings
  * Milvus Lite        `search_backends` "milvus" (pure-Python Lite: proves the API, not Milvus speed)

recall@10 is against a float64 brute force (same tie rule as the exact index). Build time, queries
per second (all queries in one batch call; by default from the process's CPU time, see --clock), memory (bytes of the index structure; for Seismic and
Milvus the process RSS growth while building). All engines run with the same thread count.

    python -m benchmarks.bench_search_backends [--sizes 100000,1000000] [--threads 2] [--model PATH]
"""

from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from transformers import HfArgumentParser

from benchmarks.bench_sparse_storage_retrieval import draw_items, synthetic_stats
from modeling_sparse_clip.search_backends import build_index
from modeling_sparse_clip.sparse_index import exact_topk, merge_topk


@dataclass
class SearchBenchArguments:
    sizes: str = field(default="100000,1000000", metadata={"help": "synthetic index sizes ('' for none)"})
    width: int = 16_384
    density: float = 0.015
    zipf_exponent: float = 0.5
    queries: int = 200
    k: int = 10
    threads: int = field(default=1, metadata={"help": "threads for every engine (numba, FAISS/BLAS, Seismic)"})
    clock: str = field(default="cpu", metadata={"help": "cpu (process CPU time; use with 1 thread on a shared machine) or wall"})
    seismic_settings: str = field(default="10:0.7,30:0.9,60:1.0", metadata={"help": "query_cut:heap_factor,..."})
    seismic_n_postings: int = field(default=0, metadata={"help": "Seismic build n_postings (0: its default, 3500)"})
    seismic_centroid_fraction: float = field(default=0.1, metadata={"help": "Seismic build centroid_fraction (its default 0.1)"})
    seismic_max_items: int = field(default=1_000_000, metadata={"help": "Seismic only up to this size (its build is the slow part)"})
    milvus_max_items: int = field(default=100_000, metadata={"help": "Milvus Lite only up to this size"})
    milvus_queries: int = 20
    faiss_full_max_items: int = 100_000
    model: str | None = field(default=None, metadata={"help": "a Sparse CLIP folder: also run on its embedded corpus"})
    seed: int = 0
    output: str = "benchmarks/results/search_backends.json"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reference_topk(items: sp.csr_matrix, queries: sp.csr_matrix, k: int, chunk: int = 100_000):
    """float64 brute force, in row chunks (the exactness reference)."""
    q = queries.astype(np.float64)
    best_s, best_p = np.full((q.shape[0], k), -np.inf), np.full((q.shape[0], k), -1, dtype=np.int64)
    for lo in range(0, items.shape[0], chunk):
        block = (q @ items[lo : lo + chunk].astype(np.float64).T).toarray()
        s, p = exact_topk(block, k, positions=np.arange(lo, lo + block.shape[1]))
        best_s, best_p = merge_topk(best_s, best_p, s, p, k)
    return best_p


def recall(found: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, ref)]))


def scipy_topk(items: sp.csr_matrix, queries: sp.csr_matrix, k: int, chunk: int = 100_000):
    """The two-liner a scipy user writes (float32 product + argpartition), chunked to bound memory."""
    best_s, best_p = None, None
    for lo in range(0, items.shape[0], chunk):
        scores = (queries @ items[lo : lo + chunk].T).toarray()
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        s, p = np.take_along_axis(scores, part, 1), part + lo
        if best_s is not None:
            s, p = np.concatenate([best_s, s], 1), np.concatenate([best_p, p], 1)
            order = np.argsort(-s, axis=1, kind="stable")[:, :k]
            s, p = np.take_along_axis(s, order, 1), np.take_along_axis(p, order, 1)
        best_s, best_p = s, p
    return best_p


CLOCK = {"name": "cpu"}  # "cpu": process CPU seconds (robust on a shared machine, 1 thread); "wall"


def timed(fn):
    """(result, seconds). With --clock cpu the seconds are this process's CPU time (all its threads),
    which on a machine shared with other jobs measures the work instead of the time slices it got."""
    clock = time.process_time if CLOCK["name"] == "cpu" else time.perf_counter
    start = clock()
    out = fn()
    return out, clock() - start


def run_case(name: str, items: sp.csr_matrix, queries: sp.csr_matrix, args: SearchBenchArguments) -> list[dict]:
    import faiss

    n, width = items.shape
    nq, k = queries.shape[0], args.k
    rows = []

    def add(method, build_s, search_s, n_queries, rec, memory, **extra):
        row = {"case": name, "items": n, "method": method, "build_s": build_s, "qps": n_queries / search_s if search_s else None,
               "recall_at_10": rec, "memory_bytes": memory, **extra}
        rows.append(row)
        print(f"  {method:<34} build {build_s:8.1f} s   {row['qps'] or 0:9.1f} q/s   recall@10 "
              f"{'-' if rec is None else f'{rec:.4f}'}   {memory / 1e6:9,.0f} MB", flush=True)

    print(f"\n== {name}: {n:,} items x {width:,}, nnz/item {items.nnz / n:.1f}, {nq} queries, {args.threads} threads, "
          f"load average {os.getloadavg()}", flush=True)
    ref, ref_s = timed(lambda: reference_topk(items, queries, k))
    print(f"  (float64 brute-force reference: {ref_s:.1f} s)")

    # -- ours, exact ------------------------------------------------------------------------------
    index, build_s = timed(lambda: build_index(items, backend="exact"))
    index.search(queries[:2], k=k)  # compile / load the cached kernel outside the timer
    found, search_s = timed(lambda: index.search(queries, k=k))
    identical = bool(np.array_equal(found.positions, ref))
    add("ours exact (numba)", build_s, search_s, nq, recall(found.positions, ref), index.nbytes(), top10_identical=identical)
    exact_qps = rows[-1]["qps"]
    del index
    gc.collect()

    # -- scipy -----------------------------------------------------------------------------------
    found, search_s = timed(lambda: scipy_topk(items, queries, k))
    add("scipy CSR Q @ X.T", 0.0, search_s, nq, recall(found, ref), items.data.nbytes + items.indices.nbytes + items.indptr.nbytes)

    # -- FAISS dense 512 -------------------------------------------------------------------------
    rng = np.random.default_rng(args.seed)
    dense = rng.standard_normal((n, 512), dtype=np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    dq = rng.standard_normal((nq, 512), dtype=np.float32)
    dq /= np.linalg.norm(dq, axis=1, keepdims=True)
    flat, build_s = timed(lambda: (lambda ix: (ix.add(dense), ix)[1])(faiss.IndexFlatIP(512)))
    flat.search(dq[:2], k)
    _, search_s = timed(lambda: flat.search(dq, k))
    add("FAISS FlatIP 512-d (dense)", build_s, search_s, nq, None, 4 * n * 512)
    faiss512_qps = rows[-1]["qps"]
    del flat, dense
    gc.collect()

    # -- FAISS full width ------------------------------------------------------------------------
    if n <= args.faiss_full_max_items:
        qd = queries.toarray().astype(np.float32)
        best_s, best_p, search_s = np.full((nq, k), -np.inf), np.full((nq, k), -1, dtype=np.int64), 0.0
        for lo in range(0, n, 10_000):
            block = items[lo : lo + 10_000].toarray()  # densified outside the timer
            (s, p), t = timed(lambda: faiss.knn(qd, block, k, metric=faiss.METRIC_INNER_PRODUCT))
            search_s += t
            best_s, best_p = merge_topk(best_s, best_p, s.astype(np.float64), p + lo, k)
        add("FAISS FlatIP full width (fp32)", 0.0, search_s, nq, recall(best_p, ref), 4 * n * width)

    # -- Seismic ---------------------------------------------------------------------------------
    n_postings = args.seismic_n_postings or 3500  # Seismic's default: lists pruned to ~3,500 postings
    settings = args.seismic_settings.split(",") if n <= args.seismic_max_items else []
    if settings:
        before = rss_bytes()
        seismic_index, build_s = timed(lambda: build_index(items, backend="seismic", n_postings=n_postings, num_threads=args.threads,
                                                           centroid_fraction=args.seismic_centroid_fraction))
        memory = rss_bytes() - before
    for setting in settings:
        cut, heap = setting.split(":")
        search = lambda: seismic_index.search(queries, k=k, query_cut=int(cut), heap_factor=float(heap), num_threads=args.threads)  # noqa: E731
        search()
        found, search_s = timed(search)
        add(f"Seismic cut {cut} heap {heap}", build_s, search_s, nq, recall(found.positions, ref), memory, n_postings=n_postings,
            speedup_vs_exact=(nq / search_s) / exact_qps, centroid_fraction=args.seismic_centroid_fraction)
    if settings:
        del seismic_index
        gc.collect()

    # -- Milvus Lite -----------------------------------------------------------------------------
    if n <= args.milvus_max_items:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            before = rss_bytes()
            milvus, build_s = timed(lambda: build_index(items, backend="milvus", uri=str(Path(tmp) / "bench.db"), collection="bench"))
            memory = rss_bytes() - before
            mq = args.milvus_queries
            found, search_s = timed(lambda: milvus.search(queries[:mq], k=k))
            add("Milvus Lite (pymilvus)", build_s, search_s, mq, recall(found.positions, ref[:mq]), memory)
            milvus.close()

    for r in rows:
        r["vs_faiss512"] = r["qps"] / faiss512_qps if r["qps"] else None
    return rows


def embedded_corpus(model: str):
    """Items: the embedded corpus's images; queries: its captions (one per image), both through the
    one encoder."""
    from modeling_sparse_clip.data.corpus import build_corpus, column_values
    from modeling_sparse_clip.encoding import SparseCLIPEncoder

    corpus = build_corpus()
    split = corpus["train"]
    encoder = SparseCLIPEncoder.from_pretrained(model, batch_size=64)
    images = encoder.encode_images(column_values(split, "image"), desc="corpus images")
    texts = [t[0] if isinstance(t, list) else t for t in column_values(split, "text")]
    captions = encoder.encode_texts(texts, desc="corpus captions")
    return images.to_scipy(), captions.to_scipy()


def main(args: SearchBenchArguments):
    import faiss
    import numba

    CLOCK["name"] = args.clock
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    numba.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    stats = synthetic_stats(args.width, args.density, args.zipf_exponent, args.seed)
    results = {"arguments": asdict(args), "threads": args.threads, "clock": args.clock, "cpu_count": os.cpu_count(),
               "load_average_start": os.getloadavg(), "cases": []}
    queries = draw_items(stats, args.queries, np.random.default_rng(args.seed + 2)).astype(np.float32)
    for n in [int(s) for s in args.sizes.split(",") if s]:
        items = draw_items(stats, n, np.random.default_rng(args.seed + 1)).astype(np.float32)
        results["cases"] += run_case(f"synthetic {n:,}", items, queries, args)
        del items
        gc.collect()
        write(args.output, results)  # after each case: a long run that dies keeps what it measured
    if args.model:
        items, captions = embedded_corpus(args.model)
        pick = np.random.default_rng(args.seed).choice(captions.shape[0], min(args.queries, captions.shape[0]), replace=False)
        results["cases"] += run_case(f"embedded corpus ({args.model})", items, captions[np.sort(pick)], args)
    results["load_average_end"] = os.getloadavg()

    print("\n| case | method | build s | q/s | vs FAISS-512 | recall@10 | memory MB |\n|---|---|---|---|---|---|---|")
    for r in results["cases"]:
        print(f"| {r['case']} | {r['method']} | {r['build_s']:.1f} | {r['qps']:.1f} | {r['vs_faiss512']:.2f}x | "
              f"{'-' if r['recall_at_10'] is None else format(r['recall_at_10'], '.3f')} | {r['memory_bytes'] / 1e6:,.0f} |")
    print(f"\nthreads {args.threads}, {args.clock} clock; load average start {results['load_average_start']}, end {results['load_average_end']}")
    write(args.output, results)
    print(f"wrote {args.output}")


def write(path: str, results: dict) -> None:
    from modeling_sparse_clip.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(results, indent=2))


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(SearchBenchArguments).parse_args_into_dataclasses()
    main(arguments)
