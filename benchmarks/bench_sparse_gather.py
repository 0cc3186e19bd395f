"""Bytes and memory of the global-batch contrastive loss: dense vs sparse all-gather.

Runs the model's own `contrastive_loss` (forward + backward) in 2 gloo processes at the paper's
widest setting (width 55,296, global batch 4,096) with embeddings of a given density, once per
(density, gather) pair, each in a fresh pair of processes:

  dense        the model's `all_gather_with_grad` (torch.distributed.nn all_gather; all-to-all backward)
  sparse       `sparse_all_gather_with_grad`: non-zeros forward, exact dense reduce-scatter backward
  sparse_grad  `sparse_all_gather_with_sparse_grad`: non-zeros both ways (exact upstream of ReLU)

Per rank and step it reports
  * payload bytes sent to peers (from the collectives' tensor sizes; dense: (world-1) x rows x width
    x 4 per gather, forward and backward),
  * socket bytes actually written by the process (`wchar` of /proc/self/io: gloo writes its TCP
    traffic with write/writev, so this is the real wire payload of this rank),
  * peak memory of the loss step: the peak resident set size (VmHWM of /proc/self/status, reset by
    writing 5 to /proc/self/clear_refs just before the step) minus the resident size before it,
    i.e. what the step adds on top of the (already allocated, L2-normalised) local embeddings.
  * the loss and a hash of the gradients, so the run also shows that every mode computes the same.

    python -m benchmarks.bench_sparse_gather [--densities 0.01,0.1] [--global_batch 4096] [--width 55296]
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import HfArgumentParser

WORLD = 2


@dataclass
class GatherBenchArguments:
    width: int = field(default=55_296, metadata={"help": "embedding width (paper ViT-L/14: 768 x 72)"})
    global_batch: int = field(default=4_096, metadata={"help": "global batch (split over 2 processes)"})
    densities: str = field(default="0.01,0.1", metadata={"help": "comma-separated fractions of non-zero dims"})
    gathers: str = field(default="dense,sparse,sparse_grad", metadata={"help": "which gathers to run"})
    threads_per_rank: int = field(default=1, metadata={"help": "torch threads per process"})
    seed: int = 0
    reuse: bool = field(default=False, metadata={"help": "skip (density, gather) runs whose per-rank JSON files exist"})
    output: str = field(default="benchmarks/results/sparse_gather.json")


def _proc_kb(field_name: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} missing from /proc/self/status")


def _wchar() -> int:
    for line in open("/proc/self/io"):
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("wchar missing from /proc/self/io")


def _sha(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def _local_embeddings(rows: int, width: int, density: float, seed: int) -> torch.Tensor:
    """L2-normalised non-negative rows with ~density*width non-zeros at uniform random positions."""
    g = torch.Generator().manual_seed(seed)
    per_row = max(1, round(density * width))
    x = torch.zeros(rows, width)
    cols = torch.randint(width, (rows, per_row), generator=g)
    x.scatter_(1, cols, torch.rand(rows, per_row, generator=g) + 0.01)
    x /= x.norm(dim=1, keepdim=True)
    return x.requires_grad_(True)


def _worker(rank: int, port: int, args: GatherBenchArguments, density: float, gather: str, out_dir: str):
    from modeling_sparse_clip.modeling_sparse_clip import all_gather_with_grad, contrastive_loss
    from modeling_sparse_clip.sparse_gather import (
        log_communication,
        sparse_all_gather_with_grad,
        sparse_all_gather_with_sparse_grad,
    )

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads_per_rank)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    fn = {"dense": all_gather_with_grad, "sparse": sparse_all_gather_with_grad,
          "sparse_grad": sparse_all_gather_with_sparse_grad}[gather]
    rows = args.global_batch // WORLD
    img = _local_embeddings(rows, args.width, density, args.seed + 2 * rank)
    txt = _local_embeddings(rows, args.width, density, args.seed + 2 * rank + 1)
    scale = torch.tensor(50.0, requires_grad=True)
    dist.barrier()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    rss_before, wchar_before, start = _proc_kb("VmRSS"), _wchar(), time.perf_counter()
    with log_communication() as log:
        loss = contrastive_loss(img, txt, scale, gather_fn=fn)
        loss.backward()
    seconds, wchar_after, peak = time.perf_counter() - start, _wchar(), _proc_kb("VmHWM")
    dense_payload = 2 * 2 * (WORLD - 1) * rows * args.width * img.element_size()  # 2 gathers x (fwd + bwd)
    support = (img.detach() != 0)
    result = {
        "rank": rank, "density_requested": density, "gather": gather,
        "density_measured": float(support.float().mean()),
        "modes": log.modes or ["dense", "dense"],
        "payload_bytes": log.total if gather != "dense" else dense_payload,
        "payload_by_collective": log.bytes_sent if gather != "dense" else {"all_gather": dense_payload // 2, "all_to_all_backward": dense_payload // 2},
        "socket_bytes_written": wchar_after - wchar_before,
        "peak_rss_delta_mb": (peak - rss_before) / 1024, "rss_before_mb": rss_before / 1024, "peak_rss_mb": peak / 1024,
        "seconds": seconds, "loss": float(loss), "loss_hex": float(loss).hex(),
        "grad_img_sha": _sha(img.grad), "grad_img_on_support_sha": _sha(torch.where(support, img.grad, torch.zeros_like(img.grad))),
        "grad_scale": float(scale.grad),
    }
    Path(out_dir, f"{gather}_{density}_{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_available_gb() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main(args: GatherBenchArguments):
    from tqdm.auto import tqdm

    densities = [float(d) for d in args.densities.split(",")]
    gathers = args.gathers.split(",")
    rows = args.global_batch // WORLD
    block_gb = rows * args.width * 4 / 2**30
    out_dir = Path(args.output).with_suffix("")
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for density in densities:
        for gather in tqdm(gathers, desc=f"density {density:.2%}"):
            files = [Path(out_dir, f"{gather}_{density}_{r}.json") for r in range(WORLD)]
            if args.reuse and all(f.exists() for f in files):
                runs.append([json.loads(f.read_text()) for f in files])
                continue
            need = WORLD * 8 * block_gb  # the dense path's worst case, per process ~8 local blocks
            if _mem_available_gb() < need:
                print(f"warning: {_mem_available_gb():.1f} GiB available, the dense gather may need ~{need:.1f} GiB")
            mp.spawn(_worker, args=(_free_port(), args, density, gather, str(out_dir)), nprocs=WORLD, join=True)
            runs.append([json.loads(Path(out_dir, f"{gather}_{density}_{r}.json").read_text()) for r in range(WORLD)])

    rows_out = []
    for ranks in runs:
        r0 = ranks[0]
        dense = next(rs[0] for rs in runs if rs[0]["gather"] == "dense" and rs[0]["density_requested"] == r0["density_requested"]) \
            if "dense" in gathers else None
        row = {
            "density": r0["density_requested"], "density_measured": sum(r["density_measured"] for r in ranks) / WORLD,
            "gather": r0["gather"], "mode": r0["modes"][0],
            "payload_MB_per_rank": max(r["payload_bytes"] for r in ranks) / 1e6,
            "socket_MB_per_rank": max(r["socket_bytes_written"] for r in ranks) / 1e6,
            "peak_loss_MB": max(r["peak_rss_delta_mb"] for r in ranks),
            "peak_rss_MB": max(r["peak_rss_mb"] for r in ranks),
            "seconds": max(r["seconds"] for r in ranks),
            "loss": r0["loss"],
        }
        if dense is not None:
            row["bytes_ratio_vs_dense"] = dense["socket_bytes_written"] / max(1, max(r["socket_bytes_written"] for r in ranks))
            row["payload_ratio_vs_dense"] = dense["payload_bytes"] / max(1, max(r["payload_bytes"] for r in ranks))
            row["memory_ratio_vs_dense"] = dense["peak_rss_delta_mb"] / max(1e-9, max(r["peak_rss_delta_mb"] for r in ranks))
            row["loss_bitwise_equal_dense"] = all(
                r["loss_hex"] == d["loss_hex"] for r, d in zip(ranks, next(rs for rs in runs if rs[0]["gather"] == "dense" and rs[0]["density_requested"] == r0["density_requested"])))
            dense_ranks = next(rs for rs in runs if rs[0]["gather"] == "dense" and rs[0]["density_requested"] == r0["density_requested"])
            row["grad_bitwise_equal_dense"] = all(r["grad_img_sha"] == d["grad_img_sha"] for r, d in zip(ranks, dense_ranks))
            row["grad_on_support_bitwise_equal_dense"] = all(
                r["grad_img_on_support_sha"] == d["grad_img_on_support_sha"] for r, d in zip(ranks, dense_ranks))
        rows_out.append(row)

    header = (f"Global-batch contrastive loss, width {args.width:,}, global batch {args.global_batch:,}, {WORLD} gloo processes "
              f"({args.threads_per_rank} thread each), fp32; per rank per step (forward + backward)")
    print("\n" + header)
    cols = ["density", "gather", "mode", "payload MB", "socket MB", "bytes ratio", "loss peak MB", "mem ratio", "s",
            "loss = dense", "grad = dense", "grad on nz = dense"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows_out:
        print(f"| {r['density_measured']:.2%} | {r['gather']} | {r['mode']} | {r['payload_MB_per_rank']:.1f} | "
              f"{r['socket_MB_per_rank']:.1f} | {r.get('bytes_ratio_vs_dense', float('nan')):.1f}x | {r['peak_loss_MB']:.0f} | "
              f"{r.get('memory_ratio_vs_dense', float('nan')):.2f}x | {r['seconds']:.0f} | {r.get('loss_bitwise_equal_dense')} | "
              f"{r.get('grad_bitwise_equal_dense')} | {r.get('grad_on_support_bitwise_equal_dense')} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({
        "arguments": asdict(args), "world_size": WORLD, "dtype": "float32",
        "memory_method": "VmHWM (reset via /proc/self/clear_refs) minus VmRSS before the loss step, per process, max over ranks",
        "bytes_method": "payload: collective tensor sizes x (world-1); socket: /proc/self/io wchar delta (gloo TCP writes)",
        "rows": rows_out, "per_rank": runs,
    }, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(GatherBenchArguments).parse_args_into_dataclasses()
    main(arguments)
