"""Peak memory and time of the loss step: the dense global-batch loss vs the sparse-aware loss.

2 gloo processes, width 55,296 (ViT-L/14 x 72, the paper's widest), global batch 4,096, fp32, L2-normalised
non-negative embeddings with a given fraction of non-zeros. Each (path, density) runs in a fresh pair of
processes; per rank it measures the loss step (forward + backward to the local embeddings and the logit
scale): the peak resident set size (VmHWM, reset through /proc/self/clear_refs just before the step) minus
the resident size before it, i.e. what the step adds on top of the local embeddings, and its wall time.

  dense         `contrastive_loss` with the dense gather (every rank holds both global matrices + grads)
  sparse_aware  `sparse_contrastive_loss` (non-zeros only; its dense fallback disabled here)

The dense path's memory and time do not depend on the density (dense kernels), so it runs once
(`--dense_density`). From the measurements: ratios per density, the densities where the two paths cross
(sparse-aware memory and time fitted linearly in the density), and a table of the widest width whose loss
fits a 32K global batch on one 80 GB GPU, with its assumptions.

    python -m benchmarks.bench_loss_memory [--densities 0.005,0.01,0.02] [--global_batch 4096] [--width 55296]
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import HfArgumentParser

from benchmarks.bench_sparse_gather import _free_port, _local_embeddings, _mem_available_gb, _proc_kb

WORLD = 2


@dataclass
class LossMemoryArguments:
    width: int = field(default=55_296, metadata={"help": "embedding width (paper ViT-L/14: 768 x 72)"})
    global_batch: int = field(default=4_096, metadata={"help": "global batch (split over 2 processes)"})
    densities: str = field(default="0.005,0.01,0.02", metadata={"help": "fractions of non-zero dims for the sparse-aware runs"})
    dense_density: float = field(default=0.01, metadata={"help": "density of the one dense run (dense cost does not depend on it)"})
    threads_per_rank: int = field(default=1)
    seed: int = 0
    target_batch: int = field(default=32_768, metadata={"help": "global batch of the widest-width table"})
    target_gpus: int = field(default=64, metadata={"help": "GPUs sharing that batch (local batch = target_batch / target_gpus)"})
    gpu_gb: float = field(default=80.0)
    reserved_gb: str = field(default="20,40", metadata={"help": "GB per GPU assumed taken by towers, optimiser and activations"})
    output: str = field(default="benchmarks/results/loss_memory.json")


def _worker(rank: int, port: int, args: LossMemoryArguments, path: str, density: float, out_dir: str):
    from modeling_sparse_clip.modeling_sparse_clip import contrastive_loss
    from modeling_sparse_clip.sparse_contrastive_loss import sparse_contrastive_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads_per_rank)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    rows = args.global_batch // WORLD
    img = _local_embeddings(rows, args.width, density, args.seed + 2 * rank)
    txt = _local_embeddings(rows, args.width, density, args.seed + 2 * rank + 1)
    scale = torch.tensor(50.0, requires_grad=True)
    loss_fn = contrastive_loss if path == "dense" else (lambda i, t, s: sparse_contrastive_loss(i, t, s, dense_fallback_density=1.0))
    dist.barrier()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    rss_before, start = _proc_kb("VmRSS"), time.perf_counter()
    loss = loss_fn(img, txt, scale)
    forward_seconds = time.perf_counter() - start
    loss.backward()
    seconds, peak = time.perf_counter() - start, _proc_kb("VmHWM")
    result = {
        "rank": rank, "path": path, "density_requested": density,
        "density_measured": float((img.detach() != 0).float().mean()),
        "peak_loss_MB": (peak - rss_before) / 1024, "rss_before_MB": rss_before / 1024,
        "seconds": seconds, "forward_seconds": forward_seconds, "loss": float(loss), "grad_scale": float(scale.grad),
    }
    Path(out_dir, f"{path}_{density}_{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _run(args: LossMemoryArguments, path: str, density: float, out_dir: Path) -> dict:
    mp.spawn(_worker, args=(_free_port(), args, path, density, str(out_dir)), nprocs=WORLD, join=True)
    ranks = [json.loads(Path(out_dir, f"{path}_{density}_{r}.json").read_text()) for r in range(WORLD)]
    return {
        "path": path, "density": density, "density_measured": sum(r["density_measured"] for r in ranks) / WORLD,
        "peak_loss_MB": max(r["peak_loss_MB"] for r in ranks), "seconds": max(r["seconds"] for r in ranks),
        "forward_seconds": max(r["forward_seconds"] for r in ranks),
        "loss_mean_over_ranks": sum(r["loss"] for r in ranks) / WORLD, "grad_scale_mean_over_ranks": sum(r["grad_scale"] for r in ranks) / WORLD,
    }


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares y = a + b x."""
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def widest_width_table(args: LossMemoryArguments, dense: dict, sparse_fit: tuple[float, float], densities: list[float]) -> dict:
    """Per-element costs from the runs, applied to `target_batch` over `target_gpus` GPUs."""
    local, global_ = args.global_batch // WORLD, args.global_batch
    a, b = sparse_fit  # sparse-aware peak MB = a + b * density
    per_local_element = a * 2**20 / (local * args.width)  # bytes per local (row x width) element: local grads etc.
    per_global_nonzero = b * 2**20 / (global_ * args.width)  # bytes per global non-zero (indices, values, their grads)
    # the dense path's local part costs at least what the sparse path's does; the rest is per global element
    per_global_element = max(dense["peak_loss_MB"] * 2**20 - a * 2**20, 0) / (global_ * args.width)
    target_local = args.target_batch // args.target_gpus
    rows = []
    for reserved in (float(r) for r in args.reserved_gb.split(",")):
        budget = (args.gpu_gb - reserved) * 1e9
        row = {"reserved_GB": reserved,
               "dense": int(budget / (per_global_element * args.target_batch + per_local_element * target_local))}
        for d in densities:
            row[f"sparse_aware_{d:g}"] = int(budget / (per_global_nonzero * d * args.target_batch + per_local_element * target_local))
        rows.append(row)
    return {
        "bytes_per_global_element_dense": per_global_element, "bytes_per_local_element": per_local_element,
        "bytes_per_global_nonzero_sparse_aware": per_global_nonzero, "target_batch": args.target_batch,
        "target_gpus": args.target_gpus, "target_local_batch": target_local, "gpu_GB": args.gpu_gb, "rows": rows,
        "assumptions": [
            f"global batch {args.target_batch:,} split over {args.target_gpus} GPUs (local {target_local}); fp32 loss as measured here "
            "(a bf16 loss would halve the value bytes, not the index bytes)",
            "loss memory = measured bytes per element x elements: dense = per global (row x width) element x global batch x width "
            "+ per local element x local batch x width; sparse-aware = per global non-zero x global batch x width x density + the same local term",
            "per-element costs from this CPU run (2 ranks); GPU allocators and kernels (cuSPARSE workspaces) differ",
            "density is a fixed fraction of the width at every width (the paper finds L0 roughly constant in absolute terms as width grows, "
            "so this is conservative for the sparse-aware path)",
            "reserved_GB: towers, optimiser states and tower activations, not modelled (two values shown)",
        ],
    }


def main(args: LossMemoryArguments):
    densities = [float(d) for d in args.densities.split(",")]
    out_dir = Path(args.output).with_suffix("")
    out_dir.mkdir(parents=True, exist_ok=True)
    need_gb = WORLD * 6 * (args.global_batch // WORLD) * args.width * 4 / 2**30
    if _mem_available_gb() < need_gb:
        print(f"warning: {_mem_available_gb():.1f} GiB available, the dense path may need ~{need_gb:.1f} GiB")
    started = time.time()
    sparse = [_run(args, "sparse_aware", d, out_dir) for d in densities]
    dense = _run(args, "dense", args.dense_density, out_dir)
    time_fit = _fit([r["density_measured"] for r in sparse], [r["seconds"] for r in sparse])
    mem_fit = _fit([r["density_measured"] for r in sparse], [r["peak_loss_MB"] for r in sparse])
    crossing = {
        "time": (dense["seconds"] - time_fit[0]) / time_fit[1] if time_fit[1] > 0 else None,
        "memory": (dense["peak_loss_MB"] - mem_fit[0]) / mem_fit[1] if mem_fit[1] > 0 else None,
    }
    for r in sparse:
        r["memory_ratio_dense_over_sparse"] = dense["peak_loss_MB"] / r["peak_loss_MB"]
        r["time_ratio_dense_over_sparse"] = dense["seconds"] / r["seconds"]
        r["loss_abs_diff_vs_dense"] = abs(r["loss_mean_over_ranks"] - dense["loss_mean_over_ranks"]) if r["density"] == args.dense_density else None
    table = widest_width_table(args, dense, mem_fit, [d for d in densities if d <= 0.01])

    print(f"\nLoss step (forward + backward), width {args.width:,}, global batch {args.global_batch:,}, {WORLD} gloo processes "
          f"({args.threads_per_rank} thread each), fp32, per rank (max over ranks); load average {os.getloadavg()[0]:.1f}")
    print("| path | density | peak MB | seconds | dense/sparse memory | dense/sparse time |\n|---|---|---|---|---|---|")
    print(f"| dense | any ({dense['density_measured']:.2%} run) | {dense['peak_loss_MB']:.0f} | {dense['seconds']:.1f} | 1 | 1 |")
    for r in sparse:
        print(f"| sparse-aware | {r['density_measured']:.2%} | {r['peak_loss_MB']:.0f} | {r['seconds']:.1f} | "
              f"{r['memory_ratio_dense_over_sparse']:.1f}x | {r['time_ratio_dense_over_sparse']:.2f}x |")
    fmt = lambda x: "none (sparse-aware grows slower than nothing)" if x is None else f"{x:.1%}"  # noqa: E731
    print(f"crossing density (linear fit of the sparse-aware runs): time {fmt(crossing['time'])}, memory {fmt(crossing['memory'])}")
    print(f"\nWidest width whose loss fits a {args.target_batch:,} global batch on one {args.gpu_gb:g} GB GPU "
          f"({args.target_gpus} GPUs, local {table['target_local_batch']}):")
    keys = [k for k in table["rows"][0] if k != "reserved_GB"]
    print("| reserved GB | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for row in table["rows"]:
        print(f"| {row['reserved_GB']:g} | " + " | ".join(f"{row[k]:,}" for k in keys) + " |")
    for a in table["assumptions"]:
        print(f"  - {a}")
    from modeling_sparse_clip.atomic import atomic_write_text

    atomic_write_text(args.output, json.dumps({
        "arguments": asdict(args), "world_size": WORLD, "dtype": "float32", "wall_seconds": time.time() - started,
        "load_average_1min_at_end": os.getloadavg()[0], "cpu_count": os.cpu_count(),
        "memory_method": "VmHWM (reset via /proc/self/clear_refs) minus VmRSS before the loss step, per process, max over ranks",
        "dense": dense, "sparse_aware": sparse, "sparse_aware_fit": {"time_s": time_fit, "peak_MB": mem_fit},
        "crossing_density": crossing, "widest_width_32k": table,
    }, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(LossMemoryArguments).parse_args_into_dataclasses()
    main(arguments)
