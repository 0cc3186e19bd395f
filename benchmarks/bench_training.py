"""Training-side costs of the embedded recipe, measured in one run:

1. throughput (pairs/s of forward+backward+optimiser step) of the embedded model with and without
   cached tower features, and of the wide relu head vs the dense head (same towers, same batches);
2. peak memory of the loss step (features -> normalise -> logits -> loss -> backward) at global
   batch 4,096 for widths 512, 16,384 and 55,296, one process on the CPU, each in a fresh subprocess
   (peak resident set size minus the process's baseline).

    python -m benchmarks.bench_training --pairs 256 --batch_size 64
"""

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser


@dataclass
class Args:
    pairs: int = field(default=256, metadata={"help": "real corpus pairs used for the throughput runs"})
    batch_size: int = field(default=64)
    steps: int = field(default=4, metadata={"help": "timed optimiser steps per configuration"})
    memory_batch: int = field(default=4096)
    memory_widths: list[int] = field(default_factory=lambda: [512, 16384, 55296])
    skip_memory: bool = field(default=False)
    output_json: str = field(default="benchmarks/results/training.json")


def _throughput(model, batches, steps: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        model(**batch, return_loss=True).loss.backward()
        optimizer.step()

    step(batches[0])  # warm-up
    started = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return steps * batches[0][next(iter(batches[0]))].shape[0] / (time.perf_counter() - started)


def throughput(args: Args) -> dict:
    from modeling_sparse_clip import SparseCLIPModel
    from modeling_sparse_clip.data import build_corpus
    from modeling_sparse_clip.pretrained_towers import embedded_processor, load_efficientnet_lite0_tower, load_minilm_tower
    from training.pair_datasets import CachedPairDataset, ImageTextCollator, PairDataset
    from training.tower_cache import encode_tower_features
    from training.train_sparse_clip import _set_trainable

    config = json.loads((Path(__file__).parents[1] / "training/configs/embedded_sparse.json").read_text())
    processor = embedded_processor(image_size=config["image_size"], max_length=config["max_text_length"])
    corpus = build_corpus(max_per_source=config["max_per_source"])["train"].shuffle(seed=0).select(range(args.pairs))
    vision, text = load_efficientnet_lite0_tower(), load_minilm_tower()
    results = {}
    for head, width, activation in (("wide relu", config["projection_dim"], "relu"), ("dense", 512, "none")):
        torch.manual_seed(0)
        model = SparseCLIPModel.from_towers(vision=vision, text=text, projection_dim=width, activation=activation, text_pooling="mean")
        _set_trainable(model.vision_model, "none", "vision")
        _set_trainable(model.text_model, "none", "text")
        collate = ImageTextCollator(processor, config["max_text_length"])
        pairs = PairDataset(corpus)
        raw = [collate([pairs[i] for i in range(s, s + args.batch_size)]) for s in range(0, args.pairs, args.batch_size)]
        results[f"{head} head ({width}), through frozen towers"] = _throughput(model, raw, args.steps)
        started = time.perf_counter()
        features = encode_tower_features(model, processor, corpus, batch_size=args.batch_size, desc="bench")
        cache_seconds = time.perf_counter() - started
        cached = CachedPairDataset(features)
        batches = [
            {k: torch.stack([cached[i][k] for i in range(s, s + args.batch_size)]) for k in ("image_tower_embeds", "text_tower_embeds")}
            for s in range(0, args.pairs, args.batch_size)
        ]
        results[f"{head} head ({width}), cached tower features"] = _throughput(model, batches, args.steps * 25)
        results[f"one-off cost of caching {args.pairs} pairs (pairs/s)"] = args.pairs / cache_seconds
    return results


MEMORY_CHILD = """
import resource, sys, torch, torch.nn.functional as F
from modeling_sparse_clip.modeling_sparse_clip import contrastive_loss
batch, width = int(sys.argv[1]), int(sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
g = torch.Generator().manual_seed(0)
# relu features at ~1% density, as a trained sparse model produces; density does not change dense memory
img = (torch.rand(batch, width, generator=g) < 0.01) * torch.rand(batch, width, generator=g)
txt = (torch.rand(batch, width, generator=g) < 0.01) * torch.rand(batch, width, generator=g)
img.requires_grad_(True); txt.requires_grad_(True)
inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loss = contrastive_loss(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), torch.tensor(50.0))
loss.backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((inputs - base) / 1024, (peak - base) / 1024)
"""


def loss_memory(args: Args) -> dict:
    results = {}
    for width in args.memory_widths:
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(args.memory_batch), str(width)], capture_output=True, text=True, check=True)
        inputs_mb, peak_mb = map(float, out.stdout.split())
        results[width] = {"features_MB": round(inputs_mb, 1), "peak_MB": round(peak_mb, 1)}
    return results


def main():
    (args,) = HfArgumentParser(Args).parse_args_into_dataclasses()
    report = {"cpu_threads": torch.get_num_threads()}
    report["throughput_pairs_per_s"] = throughput(args)
    print(f"\nTraining throughput, embedded recipe ({torch.get_num_threads()} CPU threads, batch {args.batch_size})")
    for name, value in report["throughput_pairs_per_s"].items():
        print(f"  {name:60s} {value:10.1f}")
    t = report["throughput_pairs_per_s"]
    keys = list(t)
    report["ratios"] = {
        "cached / through towers (wide relu)": t[keys[1]] / t[keys[0]],
        "wide relu / dense head, through towers": t[keys[0]] / t[keys[3]],
        "wide relu / dense head, cached": t[keys[1]] / t[keys[4]],
    }
    for name, value in report["ratios"].items():
        print(f"  ratio {name:54s} {value:10.2f}")
    if not args.skip_memory:
        report["loss_step_memory"] = loss_memory(args)
        print(f"\nPeak memory of the loss step, global batch {args.memory_batch}, one process (fp32)")
        print(f"  {'width':>8s} {'features MB':>12s} {'peak MB':>10s}")
        for width, row in report["loss_step_memory"].items():
            print(f"  {width:8d} {row['features_MB']:12.1f} {row['peak_MB']:10.1f}")
    out = Path(args.output_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
