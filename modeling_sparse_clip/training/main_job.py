"""The main job: build the embedded corpus, train the embedded Sparse CLIP and its dense baseline, evaluate
both on the held-out sets and print them side by side (`sparse-clip-main`, which `make main` runs).

Both models share the same frozen pretrained towers (EfficientNet-Lite0, all-MiniLM-L6-v2), so the towers
run once over the corpus (cached) and only the heads train: sparse = 8,192-wide relu head, dense = 512-wide
linear head (the "original width" baseline), same data and budget. The recipes are the shipped
`embedded_sparse` and `embedded_dense`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text
from ..constants import DATA_CACHE_DIR


@dataclass
class MainJobArguments:
    output_dir: str = field(default="outputs/embedded")
    data_cache_dir: str = field(default=str(DATA_CACHE_DIR))
    sparse_recipe: str = field(default="embedded_sparse", metadata={"help": "recipe of the sparse model: a shipped name or a file"})
    dense_recipe: str = field(default="embedded_dense", metadata={"help": "recipe of the dense baseline: a shipped name or a file"})
    num_train_epochs: float | None = field(default=None, metadata={"help": "override both recipes' epochs"})
    skip_eval: bool = field(default=False)
    vocabulary_size: int | None = field(
        default=10000, metadata={"help": "label agreement over a seeded subset of the ~97K-word vocabulary (keeps the main job short)"}
    )


def _train(recipe: str, output_dir: Path, args: MainJobArguments) -> dict:
    from .arguments import parse_args
    from .sparse_clip import train

    flags = [recipe, "--output_dir", str(output_dir), "--data_cache_dir", args.data_cache_dir]
    if args.num_train_epochs is not None:
        flags += ["--num_train_epochs", str(args.num_train_epochs)]
    started = time.time()
    trainer = train(*parse_args(flags))
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {"seconds": round(time.time() - started, 1), "last_log": logs[-1] if logs else {}, "steps": trainer.state.global_step}


def side_by_side(report: dict, training: dict) -> str:
    """A Markdown table: one row per metric and held-out set, one column per model."""
    models = list(report["models"])
    rows = []
    for set_name, meta in report["meta"]["sets"].items():
        if meta["task"] == "zero_shot":
            keys = [("top1_accuracy", "zero-shot top-1 %")]
        else:
            keys = [("image_to_text_R@1", "i->t R@1 %"), ("image_to_text_R@5", "i->t R@5 %"), ("text_to_image_R@1", "t->i R@1 %"), ("text_to_image_R@5", "t->i R@5 %")]
        for key, label in keys:
            values = [report["models"][m].get(set_name, {}).get(key) for m in models]
            if any(v is not None for v in values):
                rows.append((f"{set_name}: {label}", [None if v is None else 100 * v for v in values]))
    for key, label in (("image_l0_mean", "image L0 (mean over sets)"), ("image_l0_percent_of_width", "image L0 % of width"),
                       ("text_l0_mean", "text L0 (mean over sets)"), ("text_l0_percent_of_width", "text L0 % of width")):
        values = [_mean_over_sets(report["models"][m], key) for m in models]
        if any(v is not None for v in values):
            rows.append((label, values))
    rows.append(("logit scale (trained)", [training.get(m, {}).get("last_log", {}).get("logit_scale") for m in models]))
    rows.append(("training seconds", [training.get(m, {}).get("seconds") for m in models]))
    lines = ["| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines)


def _mean_over_sets(sets: dict, key: str):
    values = [m[key] for m in sets.values() if isinstance(m.get(key), (int, float)) and not math.isnan(m[key])]
    return sum(values) / len(values) if values else None


def run_main_job(args: MainJobArguments) -> dict:
    """Data, both trainings, the held-out evaluation; prints the table. Returns {"training": ..., "report": ..., "table": ...}."""
    from ..data import build_corpus, corpus_report, format_report, load_eval_sets
    from ..data.data_card import write_data_card
    from .arguments import parse_args

    started = time.time()
    out = Path(args.output_dir)
    data_args = parse_args([args.sparse_recipe])[1]
    corpus = build_corpus(cache_dir=args.data_cache_dir, max_per_source=data_args.max_per_source)
    print(format_report(corpus_report(corpus)))
    print("data card:", write_data_card(corpus, load_eval_sets(cache_dir=args.data_cache_dir), out / "DATA_CARD.md"))
    training = {
        "sparse": _train(args.sparse_recipe, out / "sparse", args),
        "dense": _train(args.dense_recipe, out / "dense", args),
    }
    atomic_write_text(out / "training_summary.json", json.dumps(training, indent=2))
    if args.skip_eval:
        return {"training": training}
    from ..evaluation.runner import BenchmarkArguments, run

    report = run(
        BenchmarkArguments(
            models=[f"sparse={out / 'sparse'}", f"dense={out / 'dense'}"],
            suite="embedded",
            output_dir=str(out / "bench"),
            data_cache_dir=args.data_cache_dir,
            vocabulary_size=args.vocabulary_size,
        )
    )
    table = side_by_side(report, training)
    atomic_write_text(out / "results.md", table + "\n")
    print("\nHeld-out evaluation (embedded suite)\n" + table)
    print(f"\nFull benchmark: {out / 'bench' / 'results.md'}; total wall time {time.time() - started:.0f} s")
    return {"training": training, "report": report, "table": table}


__all__ = ["MainJobArguments", "run_main_job", "side_by_side"]
