"""Storage and retrieval at scale: sparse embeddings vs dense ones.

Storage: bytes per embedding as dense fp32 vs CSR (int32 indices + fp32/fp16/bf16 values + one int64
row pointer), computed and measured from real files (safetensors, Parquet) of 10,000 rows, at
(a) the measured density (default 1.5% of 16,384 until an embedded model is given with --model) and
(b) the paper's 0.47% and 0.66% of 55,296.

Retrieval over 100K and 1M items. No embedded corpus has a million real items, so the items and
queries are SYNTHETIC sparse vectors: each feature f is active in an item independently with
probability freq_f, where freq follows a Zipf-like law freq_f ~ rank^-s scaled so that the mean
number of non-zeros equals the measured L0; values are Exp(1) (with --model: freq_f and the values
are taken from that model's embeddings of real images instead). Methods, all on one CPU thread:
  * sparse index   `SparseIndex` (inverted lists, float64 accumulation, exact top-10)
  * dense full     brute force over the same vectors stored densely in fp32 (the 1M x 16,384 fp32 matrix
                   is 64 GB, so it is streamed in 10K-row chunks densified OUTSIDE the timer; only the
                   matmul + top-k merge is timed, over all N items)
  * dense 512-d    brute force over random unit fp32 vectors of width 512 (what a dense CLIP user runs)
Exactness: the index's top-10 is compared with a float64 dense brute force (same tie rule).

    python -m benchmarks.bench_sparse_storage_retrieval [--sizes 100000,1000000] [--model PATH]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from transformers import HfArgumentParser

from modeling_sparse_clip.constants import OPENCLIPART_PNG_DIR
from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings
from modeling_sparse_clip.sparse_index import SparseIndex, exact_topk, merge_topk


@dataclass
class StorageRetrievalArguments:
    width: int = field(default=16_384, metadata={"help": "embedding width of the measured model"})
    density: float = field(default=0.015, metadata={"help": "fraction of non-zero dims when no --model is given"})
    zipf_exponent: float = field(default=0.5, metadata={"help": "s in freq_f ~ rank^-s (synthetic feature frequencies)"})
    sizes: str = field(default="100000,1000000", metadata={"help": "index sizes"})
    queries: int = field(default=200, metadata={"help": "queries timed on the sparse index and dense 512-d"})
    dense_full_queries: int = field(default=32, metadata={"help": "queries for the dense full-width brute force and exactness"})
    k: int = 10
    model: str | None = field(default=None, metadata={"help": "a SparseCLIPModel folder: take L0, feature frequencies and values from it"})
    images: str = field(default=str(OPENCLIPART_PNG_DIR), metadata={"help": "folder of real images for --model"})
    max_images: int = 2000
    seed: int = 0
    output: str = field(default="benchmarks/results/sparse_storage_retrieval.json")


# ----------------------------------------------------------------------------------------------
# Statistics of the embeddings to imitate
# ----------------------------------------------------------------------------------------------
def synthetic_stats(width: int, density: float, zipf_exponent: float, seed: int) -> dict:
    freq = np.arange(1, width + 1, dtype=np.float64) ** -zipf_exponent
    freq *= density * width / freq.sum()
    if freq.max() > 1:
        raise ValueError(f"zipf_exponent={zipf_exponent} makes the top feature more than always active at this density; lower it.")
    rng = np.random.default_rng(seed)
    return {"source": f"synthetic Zipf s={zipf_exponent}, density {density:.3%}", "width": width, "freq": freq,
            "values": rng.exponential(size=100_000).astype(np.float32) + 1e-3}


def model_stats(path: str, images_dir: str, max_images: int) -> dict:
    """L0, per-feature frequency and the value distribution of a model's embeddings of real images."""
    from PIL import Image

    from modeling_sparse_clip.encoding import SparseCLIPEncoder, as_rgb

    files = sorted(p for p in Path(images_dir).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:max_images]
    if not files:
        raise FileNotFoundError(f"No images under {images_dir}: install apt openclipart-png or pass --images.")
    encoder = SparseCLIPEncoder.from_pretrained(path, batch_size=64)
    emb = encoder.encode_images([as_rgb(Image.open(f)) for f in files], desc=Path(images_dir).name)
    csr = emb.to_scipy()
    freq = np.bincount(csr.indices, minlength=emb.width) / len(emb)
    return {"source": f"{path} on {len(files)} images from {images_dir}", "width": emb.width, "freq": freq,
            "values": csr.data.astype(np.float32)}


def draw_items(stats: dict, n: int, rng: np.random.Generator) -> sp.csr_matrix:
    """n rows; feature f active independently with probability freq_f (built column by column)."""
    freq, width = stats["freq"], stats["width"]
    counts = rng.binomial(n, np.clip(freq, 0, 1))
    rows = np.empty(int(counts.sum()), dtype=np.int32)
    pos = 0
    for f in np.flatnonzero(counts):
        rows[pos : pos + counts[f]] = np.sort(rng.choice(n, counts[f], replace=False))
        pos += counts[f]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    values = rng.choice(stats["values"], size=len(rows))
    return sp.csc_matrix((values, rows, indptr), shape=(n, width)).tocsr()


# ----------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------
def storage_rows(cases: list[tuple[str, int, float]], seed: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(seed)
    for name, width, density in cases:
        nnz = density * width
        dense = 4 * width
        sample = draw_items({"freq": np.full(width, density), "width": width, "values": rng.exponential(size=10_000).astype(np.float32) + 1e-3},
                            10_000, rng)
        row = {"case": name, "width": width, "density": density, "nnz_per_embedding": nnz, "dense_fp32_bytes": dense}
        with tempfile.TemporaryDirectory() as tmp:
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                tag = str(dtype).split(".")[1]
                emb = SparseEmbeddings.from_scipy(sample, dtype)
                row[f"csr_{tag}_bytes"] = nnz * (4 + emb.values.element_size()) + 8
                emb.save(Path(tmp, "e.safetensors"))
                emb.to_parquet(Path(tmp, "e.parquet"))
                row[f"safetensors_{tag}_bytes_measured"] = os.path.getsize(Path(tmp, "e.safetensors")) / len(emb)
                row[f"parquet_{tag}_bytes_measured"] = os.path.getsize(Path(tmp, "e.parquet")) / len(emb)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------
def dense_full_bruteforce(chunks: list[sp.csr_matrix], queries: sp.csr_matrix, k: int, dtype: torch.dtype, chunk_rows: int):
    """Top-k of queries x items over densified chunks; returns (top-k scores, positions, timed seconds)."""
    q = torch.from_numpy(queries.toarray()).to(dtype)
    best_s = np.full((q.shape[0], k), -np.inf)
    best_p = np.full((q.shape[0], k), -1, dtype=np.int64)
    timed, base = 0.0, 0
    for chunk in chunks:
        for lo in range(0, chunk.shape[0], chunk_rows):
            block = torch.from_numpy(chunk[lo : lo + chunk_rows].toarray()).to(dtype)  # not timed
            start = time.perf_counter()
            scores = q @ block.T
            if dtype == torch.float64:
                s, p = exact_topk(scores, k, positions=np.arange(base, base + block.shape[0]))
            else:
                top = scores.topk(min(k, block.shape[0]), dim=1)
                s, p = top.values.double().numpy(), top.indices.numpy() + base
            best_s, best_p = merge_topk(best_s, best_p, s, p, k)
            timed += time.perf_counter() - start
            base += block.shape[0]
    return best_s, best_p, timed


def dense_512_bruteforce(n: int, n_queries: int, k: int, seed: int, chunk_rows: int = 100_000) -> float:
    g = torch.Generator().manual_seed(seed)
    items = torch.nn.functional.normalize(torch.randn(n, 512, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(n_queries, 512, generator=g), dim=1)
    start = time.perf_counter()
    best = None
    for lo in range(0, n, chunk_rows):
        top = (queries @ items[lo : lo + chunk_rows].T).topk(k, dim=1)
        vals, idx = top.values, top.indices + lo
        if best is not None:
            vals, idx = torch.cat([best[0], vals], 1), torch.cat([best[1], idx], 1)
            order = vals.topk(k, dim=1).indices
            vals, idx = vals.gather(1, order), idx.gather(1, order)
        best = (vals, idx)
    return time.perf_counter() - start


def main(args: StorageRetrievalArguments):
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    import numba

    numba.set_num_threads(1)
    stats = model_stats(args.model, args.images, args.max_images) if args.model else synthetic_stats(args.width, args.density, args.zipf_exponent, args.seed)
    width, freq = stats["width"], stats["freq"]
    l0 = float(freq.sum())
    print(f"embedding statistics: {stats['source']}: width {width:,}, mean L0 {l0:.1f} ({l0 / width:.3%}), "
          f"max feature frequency {freq.max():.3f}, sum freq^2 {np.sum(freq ** 2):.2f} (postings touched per query per item)")

    # -- storage ------------------------------------------------------------------------------
    storage = storage_rows([(("measured" if args.model else "synthetic default") + f" ({l0 / width:.2%} of {width:,})", width, l0 / width),
                            ("paper Sparse+ 0.47%", 55_296, 0.0047), ("paper Sparse 0.66%", 55_296, 0.0066)], args.seed)
    print("\nStorage per embedding (bytes; CSR = int32 indices + values + int64 row pointer; files: 10,000 rows)")
    print("| case | width | L0 | dense fp32 | CSR fp32 | CSR fp16/bf16 | fp16 ratio | safetensors fp16 | parquet fp16 |\n|---|---|---|---|---|---|---|---|---|")
    for r in storage:
        print(f"| {r['case']} | {r['width']:,} | {r['nnz_per_embedding']:.0f} | {r['dense_fp32_bytes']:,} | {r['csr_float32_bytes']:,.0f} | "
              f"{r['csr_float16_bytes']:,.0f} | 1/{r['dense_fp32_bytes'] / r['csr_float16_bytes']:.0f} | "
              f"{r['safetensors_float16_bytes_measured']:,.0f} | {r['parquet_float16_bytes_measured']:,.0f} |")

    # -- retrieval ----------------------------------------------------------------------------
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rng = np.random.default_rng(args.seed + 1)
    query_csr = draw_items(stats, args.queries, np.random.default_rng(args.seed + 2))
    queries = SparseEmbeddings.from_scipy(query_csr)
    check = query_csr[: args.dense_full_queries]
    chunk_size = 100_000
    chunks, results = [], []
    for n in sizes:
        while sum(c.shape[0] for c in chunks) < n:
            chunks.append(draw_items(stats, min(chunk_size, n - sum(c.shape[0] for c in chunks)), rng))
        index = SparseIndex(width)
        for c in tqdm(chunks, desc=f"index {n:,}"):
            index.add(SparseEmbeddings.from_scipy(c))
        index.search(queries[:2], k=args.k)  # compile + seal outside the timer
        start = time.perf_counter()
        found = index.search(queries, k=args.k)
        sparse_s = time.perf_counter() - start
        ref_s, ref_p, _ = dense_full_bruteforce(chunks, check, args.k, torch.float64, 5_000)
        exact = bool(np.array_equal(found.positions[: len(ref_p)], ref_p))
        f32_s, f32_p, dense_s = dense_full_bruteforce(chunks, check, args.k, torch.float32, 10_000)
        d512_s = dense_512_bruteforce(n, args.queries, args.k, args.seed)
        row = {
            "items": n, "nnz_per_item": float(sum(c.nnz for c in chunks) / n),
            "sparse_qps": args.queries / sparse_s, "dense_full_qps": args.dense_full_queries / dense_s,
            "dense512_qps": args.queries / d512_s,
            "top10_identical_to_float64_bruteforce": exact,
            "fp32_dense_top10_agreement": float(np.mean([set(a) == set(b) for a, b in zip(f32_p, ref_p)])),
            "index_bytes": index.nbytes(), "dense_full_fp32_bytes": 4 * n * width, "dense512_fp32_bytes": 4 * n * 512,
        }
        row["speedup_vs_dense_full"] = row["sparse_qps"] / row["dense_full_qps"]
        row["speedup_vs_dense512"] = row["sparse_qps"] / row["dense512_qps"]
        results.append(row)
        del index

    print(f"\nExact top-{args.k} retrieval, 1 CPU thread each ({args.queries} queries; dense full width: "
          f"{args.dense_full_queries} queries, chunked, matmul+top-k timed). Items: {stats['source']}")
    print("| items | nnz/item | sparse q/s | dense full q/s | dense 512 q/s | vs full | vs 512 | top-10 = fp64 brute force | index MB | dense full MB | dense 512 MB |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['items']:,} | {r['nnz_per_item']:.0f} | {r['sparse_qps']:.1f} | {r['dense_full_qps']:.2f} | {r['dense512_qps']:.1f} | "
              f"{r['speedup_vs_dense_full']:.0f}x | {r['speedup_vs_dense512']:.2f}x | {r['top10_identical_to_float64_bruteforce']} | "
              f"{r['index_bytes'] / 1e6:,.0f} | {r['dense_full_fp32_bytes'] / 1e6:,.0f} | {r['dense512_fp32_bytes'] / 1e6:,.0f} |")
    if len(results) > 1:
        a, b = results[0], results[-1]
        grow = b["items"] / a["items"]
        print(f"\nScaling {a['items']:,} -> {b['items']:,} items ({grow:.0f}x): q/s falls {a['sparse_qps'] / b['sparse_qps']:.1f}x (sparse), "
              f"{a['dense_full_qps'] / b['dense_full_qps']:.1f}x (dense full), {a['dense512_qps'] / b['dense512_qps']:.1f}x (dense 512)")

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({
        "arguments": asdict(args), "statistics": {"source": stats["source"], "width": width, "mean_l0": l0,
                                                   "max_freq": float(freq.max()), "sum_freq_sq": float(np.sum(freq ** 2))},
        "threads": 1, "storage": storage, "retrieval": results,
    }, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(StorageRetrievalArguments).parse_args_into_dataclasses()
    main(arguments)
