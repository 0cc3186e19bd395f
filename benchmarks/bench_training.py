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
    recipe: str = field(default="embedded_sparse", metadata={"help": "training recipe (shipped name or path) whose towers and width are measured"})
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
        model.clamp_logit_scale_()  # what SparseCLIPTrainer does after every optimiser step

    step(batches[0])  # warm-up
    started = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return steps * batches[0][next(iter(batches[0]))].shape[0] / (time.perf_counter() - started)


def _head_names(head: str, width: int) -> tuple[str, str]:
    return f"{head} head ({width}), through frozen towers", f"{head} head ({width}), cached tower features"


def _ratios(rates: dict, relu: tuple[str, str], dense: tuple[str, str]) -> dict:
    (relu_towers, relu_cached), (dense_towers, dense_cached) = relu, dense
    return {
        "cached / through towers (wide relu)": rates[relu_cached] / rates[relu_towers],
        "wide relu / dense head, through towers": rates[relu_towers] / rates[dense_towers],
        "wide relu / dense head, cached": rates[relu_cached] / rates[dense_cached],
    }


def throughput(args: Args) -> tuple[dict, dict]:
    """pairs/s of each head through the towers and on cached tower features, and their ratios."""
    from modeling_sparse_clip import SparseCLIPModel
    from modeling_sparse_clip.data import build_corpus
    from modeling_sparse_clip.training import (
        CachedPairDataset, ImageTextCollator, PairDataset, encode_tower_features, parse_args, set_trainable,
    )
    from modeling_sparse_clip.training.model_setup import default_processor, load_tower

    # the embedded recipe as the training command reads it (towers, preprocessing, width, pooling, corpus cap)
    model_args, data_args, _ = parse_args([args.recipe, "--output_dir", "unused"])
    processor = default_processor(model_args)
    corpus = build_corpus(cache_dir=data_args.data_cache_dir, max_per_source=data_args.max_per_source)["train"]
    corpus = corpus.shuffle(seed=0).select(range(args.pairs))
    vision, text = load_tower(model_args.vision_tower), load_tower(model_args.text_tower)
    results, names = {}, []
    # the recipe's wide relu head against a dense CLIP-width head, on the same towers and batches
    for head, width, activation in (("wide relu", model_args.projection_dim, "relu"), ("dense", 512, "none")):
        torch.manual_seed(0)
        model = SparseCLIPModel.from_towers(vision=vision, text=text, projection_dim=width, activation=activation,
                                            text_pooling=model_args.text_pooling, vision_pooling=model_args.vision_pooling)
        set_trainable(model.vision_model, "none", "vision")
        set_trainable(model.text_model, "none", "text")
        collate = ImageTextCollator(processor, model_args.max_text_length)
        pairs = PairDataset(corpus)
        raw = [collate([pairs[i] for i in range(s, s + args.batch_size)]) for s in range(0, args.pairs, args.batch_size)]
        through_towers, cached_name = _head_names(head, width)
        names.append((through_towers, cached_name))
        results[through_towers] = _throughput(model, raw, args.steps)
        started = time.perf_counter()
        features = encode_tower_features(model, processor, corpus, batch_size=args.batch_size, desc="bench")
        cache_seconds = time.perf_counter() - started
        cached = CachedPairDataset(features)
        batches = [
            {k: torch.stack([cached[i][k] for i in range(s, s + args.batch_size)]) for k in ("image_tower_embeds", "text_tower_embeds")}
            for s in range(0, args.pairs, args.batch_size)
        ]
        results[cached_name] = _throughput(model, batches, args.steps * 25)
        results[f"one-off cost of caching {args.pairs} pairs (pairs/s)"] = args.pairs / cache_seconds
    return results, _ratios(results, *names)


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


def main(argv: list[str] | None = None):
    (args,) = HfArgumentParser(Args).parse_args_into_dataclasses(args=argv)
    report = {"cpu_threads": torch.get_num_threads()}
    report["throughput_pairs_per_s"], report["ratios"] = throughput(args)
    print(f"\nTraining throughput, {args.recipe} recipe ({torch.get_num_threads()} CPU threads, batch {args.batch_size})")
    for name, value in report["throughput_pairs_per_s"].items():
        print(f"  {name:60s} {value:10.1f}")
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
