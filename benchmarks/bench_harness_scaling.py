"""How the cost of Clarity and the modality score grows with the number of images.

    python -m benchmarks.bench_harness_scaling --sizes 1000 10000 50000 --width 16384 --l0 108

The inputs are SYNTHETIC: sparse non-negative activations at the sparsity you pass (`--l0` non-zero
features per input out of `--width`; the default 108 / 16,384 = 0.66% is the paper's "Sparse"), with
feature frequencies following a power law (`--zipf`, like trained sparse features: a few common,
many rare) and exponential magnitudes; reference embeddings are random `--reference_dim`-d vectors
(1280 = EfficientNet-Lite0's pooled width). Cost depends on the counts, not on the values, so this
measures the evaluation library, not a model. Each size reports the full `evaluate` metric call
(`load_metric(...).compute`: Arrow ingestion of the sparse rows, conversion, the math) and the math alone
(the task function on `SparseEmbeddings`, `modeling_sparse_clip.evaluation.clarity.evaluate` /
`modality.evaluate`: what the benchmark runner calls), in wall and process-CPU seconds, then the
log-log slope of wall time against size (1.0 = linear).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import HfArgumentParser

from modeling_sparse_clip.evaluation import clarity, load_metric, modality
from modeling_sparse_clip.evaluation.metric_inputs import embeddings_from_rows


@dataclass
class ScalingArguments:
    sizes: list[int] = field(default_factory=lambda: [1000, 10000, 50000], metadata={"help": "Numbers of images."})
    width: int = field(default=16384, metadata={"help": "Number of features."})
    l0: int = field(default=108, metadata={"help": "Target non-zero features per input (108/16384 = 0.66 percent, the paper's Sparse)."})
    zipf: float = field(default=0.7, metadata={"help": "Feature frequency ~ 1 / rank^zipf."})
    reference_dim: int = field(default=1280, metadata={"help": "Width of the reference image embeddings."})
    seed: int = field(default=0)
    output: str = field(default="outputs/bench/harness_scaling.json")


def synthetic_rows(n: int, width: int, l0: int, zipf: float, rng: np.random.Generator):
    """Sparse rows with ~l0 distinct features each (sampled with replacement, duplicates dropped)."""
    p = 1.0 / np.arange(1, width + 1) ** zipf
    p = p[rng.permutation(width)] / p.sum()
    draws = np.sort(rng.choice(width, size=(n, l0), p=p), axis=1)
    keep = np.ones_like(draws, dtype=bool)
    keep[:, 1:] = draws[:, 1:] != draws[:, :-1]
    indices = [row[mask].astype(np.int32) for row, mask in zip(draws, keep)]
    values = [rng.exponential(size=len(row)).astype(np.float32) + 0.01 for row in indices]
    return indices, values


def timed(fn):
    """Wall seconds (and, in `timed.cpu`, process CPU seconds: steadier on a shared machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    timed.cpu = time.process_time() - cpu
    return time.perf_counter() - start, result


def run(args: ScalingArguments) -> dict:
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in args.sizes:
        image_indices, image_values = synthetic_rows(n, args.width, args.l0, args.zipf, rng)
        text_indices, text_values = synthetic_rows(n, args.width, args.l0, args.zipf, rng)
        reference = rng.normal(size=(n, args.reference_dim)).astype(np.float32)
        images = embeddings_from_rows(image_indices, image_values, args.width)
        texts = embeddings_from_rows(text_indices, text_values, args.width)
        clarity_metric, modality_metric = load_metric("clarity"), load_metric("modality_score")
        clarity_math, clarity_result = timed(lambda: clarity.evaluate(images, reference))
        clarity_math_cpu = timed.cpu
        clarity_full, _ = timed(lambda: clarity_metric.compute(active_indices=image_indices, active_values=image_values,
                                                               reference_embeddings=reference, width=args.width))
        clarity_full_cpu = timed.cpu
        modality_math, _ = timed(lambda: modality.evaluate(images, texts))
        modality_math_cpu = timed.cpu
        modality_full, _ = timed(lambda: modality_metric.compute(image_indices=image_indices, image_values=image_values,
                                                                 text_indices=text_indices, text_values=text_values, width=args.width))
        modality_full_cpu = timed.cpu
        row = {
            "images": n,
            "mean_l0": float(np.mean([len(r) for r in image_indices])),
            "clarity_active_features": clarity_result["num_active_features"],
            "clarity_seconds_full": round(clarity_full, 3),
            "clarity_seconds_math": round(clarity_math, 3),
            "modality_seconds_full": round(modality_full, 3),
            "modality_seconds_math": round(modality_math, 3),
            "cpu_seconds": {"clarity_full": round(clarity_full_cpu, 3), "clarity_math": round(clarity_math_cpu, 3),
                            "modality_full": round(modality_full_cpu, 3), "modality_math": round(modality_math_cpu, 3)},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    slopes = {}
    for key in ("clarity_seconds_full", "clarity_seconds_math", "modality_seconds_full", "modality_seconds_math"):
        x = np.log([r["images"] for r in rows])
        y = np.log([max(r[key], 1e-6) for r in rows])
        slopes[key] = round(float(np.polyfit(x, y, 1)[0]), 2) if len(rows) > 1 else None
    report = {"rows": rows, "log_log_slope": slopes, "arguments": asdict(args), "torch_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count()}
    print()
    print(f"| images | mean L0 | Clarity full (s) | Clarity math (s) | modality full (s) | modality math (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {r['mean_l0']:.1f} | {r['clarity_seconds_full']} | {r['clarity_seconds_math']} | "
              f"{r['modality_seconds_full']} | {r['modality_seconds_math']} |")
    print(f"log-log slopes (1.0 = linear): {slopes}")
    print(f"process CPU seconds (steadier than wall time on a shared machine): " + "; ".join(f"{r['images']}: {r['cpu_seconds']}" for r in rows))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(ScalingArguments).parse_args_into_dataclasses(args=argv)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
