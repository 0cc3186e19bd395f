"""Training-side costs of the embedded recipe, measured in one run:

1. throughput (pairs/s of forward+backward+optimiser step) of the embedded model with and without
   cached tower features, and of the wide relu head vs the dense head (same towers, same batches);
2. peak memory of the loss step (features -> normalise -> logits -> loss -> backward) at global
   batch 4,096 for widths 512, 16,384 and 55,296, one process on the CPU, each in a fresh subprocess
   (peak resident set size minus the process's baseline);
3. our Trainer path next to OpenCLIP's own training step on the same towers: an `open_clip.CLIP`
   (small ViT + text transformer, random init) converted to a Sparse CLIP with our converter (same
   weights, dense head, so both compute the same model), the same real corpus batches, fp32 on the CPU.
   OpenCLIP: `model(image, text)` + `open_clip.loss.ClipLoss` + AdamW step + logit-scale clamp (its
   training loop's); ours: `SparseCLIPTrainer.train()` (collated batches, `training_step`, AdamW, the cap
   callback, telemetry); pairs/s of each and the ratio ours / OpenCLIP (best of `--open_clip_repeats`);
4. gradient caching (`--gradient_cache_chunk_size`) vs unchunked on the same model and batch: time and
   peak memory of one training step.

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
    skip_throughput: bool = field(default=False)
    skip_open_clip: bool = field(default=False)
    open_clip_pairs: int = field(default=96, metadata={"help": "real corpus pairs for the OpenCLIP comparison"})
    open_clip_batch: int = field(default=32)
    open_clip_steps: int = field(default=3, metadata={"help": "timed steps per run (after one warm-up step)"})
    open_clip_repeats: int = field(default=2, metadata={"help": "alternating runs of each side; the best is reported"})
    open_clip_image_size: int = field(default=64)
    gradient_cache_batch: int = field(default=128, metadata={"help": "batch of the gradient-caching comparison"})
    gradient_cache_chunk: int = field(default=16, metadata={"help": "chunk size of the gradient-caching comparison"})
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


OPEN_CLIP_CFG = {  # a small OpenCLIP ViT CLIP (what `open_clip.CLIP(**cfg)` builds; random init)
    "embed_dim": 256,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 256, "layers": 4, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 4},
}


def _corpus_batches(args: Args, processor, pairs: int, batch_size: int) -> list[dict]:
    from modeling_sparse_clip.data import build_corpus
    from modeling_sparse_clip.training import ImageTextCollator, PairDataset, parse_args

    _, data_args, _ = parse_args([args.recipe, "--output_dir", "unused"])
    corpus = build_corpus(cache_dir=data_args.data_cache_dir, max_per_source=data_args.max_per_source)["train"]
    rows = PairDataset(corpus.shuffle(seed=0).select(range(pairs)))
    collate = ImageTextCollator(processor, OPEN_CLIP_CFG["text_cfg"]["context_length"])
    batches = []
    for start in range(0, pairs, batch_size):
        batch = collate([rows[i] for i in range(start, start + batch_size)])
        # fixed length (OpenCLIP's tokenizer pads to the context length): same tensors for both sides
        ids = torch.full((batch_size, OPEN_CLIP_CFG["text_cfg"]["context_length"]), processor.tokenizer.pad_token_id)
        ids[:, : batch["input_ids"].shape[1]] = batch["input_ids"]
        batches.append({"input_ids": ids, "pixel_values": batch["pixel_values"]})
    return batches


def _open_clip_run(model, batches: list[dict], steps: int) -> float:
    import math

    from open_clip.loss import ClipLoss

    loss_fn, optimizer = ClipLoss(), torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def step(batch):  # open_clip_train's train_one_epoch, without its data/logging machinery
        optimizer.zero_grad(set_to_none=True)
        image_features, text_features, logit_scale = model(batch["pixel_values"], batch["input_ids"])[:3]
        loss_fn(image_features, text_features, logit_scale).backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    step(batches[0])
    started = time.perf_counter()
    for i in range(steps):
        step(batches[(i + 1) % len(batches)])
    return steps * batches[0]["input_ids"].shape[0] / (time.perf_counter() - started)


def _trainer_run(model, batches: list[dict], steps: int, output_dir: str) -> float:
    from transformers import TrainerCallback

    from modeling_sparse_clip.training import SparseCLIPTrainer, SparseCLIPTrainingArguments

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    rows = [{k: v[i] for k, v in b.items()} for b in batches for i in range(b["input_ids"].shape[0])]
    args = SparseCLIPTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=batches[0]["input_ids"].shape[0], max_steps=steps + 1,
        learning_rate=1e-5, optim="adamw_torch", weight_decay=0.0, lr_scheduler_type="constant", report_to=[],
        save_strategy="no", logging_steps=10**6, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0,
        data_seed=0,
    )
    clock = Clock()
    SparseCLIPTrainer(model=model, args=args, train_dataset=rows, callbacks=[clock]).train()
    return steps * batches[0]["input_ids"].shape[0] / (clock.times[-1] - clock.times[0])


def open_clip_side_by_side(args: Args) -> dict:
    """pairs/s of OpenCLIP's own step and of our Trainer path on the same towers, batches and precision."""
    import copy
    import tempfile
    from dataclasses import asdict

    import open_clip
    from open_clip.transform import PreprocessCfg

    from modeling_sparse_clip.conversion.open_clip import OpenCLIPSource, convert_open_clip

    torch.manual_seed(0)
    reference = open_clip.CLIP(**OPEN_CLIP_CFG)
    source = OpenCLIPSource(copy.deepcopy(reference.state_dict()), copy.deepcopy(OPEN_CLIP_CFG),
                            {**asdict(PreprocessCfg()), "size": args.open_clip_image_size}, "(in memory)", "name")
    ours, processor = convert_open_clip(source)
    batches = _corpus_batches(args, processor, args.open_clip_pairs, args.open_clip_batch)
    rates = {"open_clip": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.open_clip_repeats):  # alternate, so that load from other processes hits both sides
            rates["open_clip"].append(_open_clip_run(copy.deepcopy(reference), batches, args.open_clip_steps))
            rates["ours"].append(_trainer_run(copy.deepcopy(ours).train(), batches, args.open_clip_steps, tmp))
    best = {k: max(v) for k, v in rates.items()}
    return {"pairs_per_s": best, "all_runs_pairs_per_s": rates, "ratio_ours_over_open_clip": best["ours"] / best["open_clip"],
            "batch": args.open_clip_batch, "steps": args.open_clip_steps, "image_size": args.open_clip_image_size,
            "open_clip_cfg": OPEN_CLIP_CFG}


def _gradient_cache_child(args: Args, name: str, queue) -> None:
    """One fresh process per variant: the peak RSS it adds is then the step's own (no allocator reuse)."""
    import copy
    from dataclasses import asdict

    import open_clip
    from open_clip.transform import PreprocessCfg

    from modeling_sparse_clip.conversion.open_clip import OpenCLIPSource, convert_open_clip
    from modeling_sparse_clip.training.gradient_cache import gradient_cache_step

    torch.set_num_threads(1)
    torch.manual_seed(0)
    source = OpenCLIPSource(open_clip.CLIP(**OPEN_CLIP_CFG).state_dict(), copy.deepcopy(OPEN_CLIP_CFG),
                            {**asdict(PreprocessCfg()), "size": args.open_clip_image_size}, "(in memory)", "name")
    model, processor = convert_open_clip(source)
    model.train()
    batch = _corpus_batches(args, processor, args.gradient_cache_batch, args.gradient_cache_batch)[0]

    def kb(field_name):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field_name + ":"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, started = kb("VmRSS"), time.perf_counter()
    if name == "unchunked":
        model(**batch, return_loss=True).loss.backward()
    else:
        gradient_cache_step(model, batch, args.gradient_cache_chunk)
    queue.put({"seconds": time.perf_counter() - started, "peak_added_MB": (kb("VmHWM") - before) / 1024})


def gradient_cache_comparison(args: Args) -> dict:
    """One forward + backward unchunked vs with gradient caching (each in a fresh process, no warm-up):
    seconds and the peak RSS the step adds."""
    import multiprocessing
    import os

    context = multiprocessing.get_context("spawn")
    out = {"batch": args.gradient_cache_batch, "chunk": args.gradient_cache_chunk}
    for name in ("unchunked", "gradient_cache"):
        queue = context.Queue()
        child = context.Process(target=_gradient_cache_child, args=(args, name, queue))
        child.start()
        out[name] = queue.get()
        child.join()
    out["time_ratio_cache_over_unchunked"] = out["gradient_cache"]["seconds"] / out["unchunked"]["seconds"]
    out["memory_ratio_cache_over_unchunked"] = out["gradient_cache"]["peak_added_MB"] / max(out["unchunked"]["peak_added_MB"], 1e-9)
    out["load_average_1min"] = os.getloadavg()[0]
    return out


def main(argv: list[str] | None = None):
    (args,) = HfArgumentParser(Args).parse_args_into_dataclasses(args=argv)
    import os

    out = Path(args.output_json)
    report = json.loads(out.read_text()) if out.exists() else {}  # sections not run this time are kept
    report["cpu_threads"] = torch.get_num_threads()
    if not args.skip_throughput:
        report["throughput_pairs_per_s"], report["ratios"] = throughput(args)
        print(f"\nTraining throughput, {args.recipe} recipe ({torch.get_num_threads()} CPU threads, batch {args.batch_size})")
        for name, value in report["throughput_pairs_per_s"].items():
            print(f"  {name:60s} {value:10.1f}")
        for name, value in report["ratios"].items():
            print(f"  ratio {name:54s} {value:10.2f}")
    if not args.skip_open_clip:
        report["vs_open_clip"] = open_clip_side_by_side(args)
        report["vs_open_clip"]["load_average_1min"] = os.getloadavg()[0]
        r = report["vs_open_clip"]
        print(f"\nSame towers, batch {r['batch']}, {r['image_size']}px, fp32 CPU ({torch.get_num_threads()} threads), "
              f"load average {r['load_average_1min']:.1f}: pairs/s (best of {args.open_clip_repeats})")
        print(f"  OpenCLIP model + ClipLoss + AdamW  {r['pairs_per_s']['open_clip']:8.1f}")
        print(f"  SparseCLIPTrainer path             {r['pairs_per_s']['ours']:8.1f}")
        print(f"  ratio ours / OpenCLIP              {r['ratio_ours_over_open_clip']:8.2f}")
        report["gradient_cache"] = gradient_cache_comparison(args)
        g = report["gradient_cache"]
        print(f"\nGradient caching, batch {g['batch']} in chunks of {g['chunk']} vs unchunked (one forward + backward):")
        for name in ("unchunked", "gradient_cache"):
            print(f"  {name:16s} {g[name]['seconds']:6.2f} s  peak +{g[name]['peak_added_MB']:7.1f} MB")
    if not args.skip_memory:
        report["loss_step_memory"] = loss_memory(args)
        print(f"\nPeak memory of the loss step, global batch {args.memory_batch}, one process (fp32)")
        print(f"  {'width':>8s} {'features MB':>12s} {'peak MB':>10s}")
        for width, row in report["loss_step_memory"].items():
            print(f"  {width:8d} {row['features_MB']:12.1f} {row['peak_MB']:10.1f}")
    from modeling_sparse_clip.atomic import atomic_write_text

    atomic_write_text(out, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
