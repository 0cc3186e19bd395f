"""The main job: build the embedded corpus, train the embedded Sparse CLIP and its dense baseline, the
paper's post-hoc SAE baselines on the dense model, sparsify the dense model three ways, evaluate all
on the held-out sets and print them side by side (`sparse-clip-main`, which `make main` runs).

Every model shares the same frozen pretrained towers (EfficientNet-Lite0, all-MiniLM-L6-v2), so each
tower runs ONCE per input set (training pairs, evaluation sets, vocabulary; the Clarity reference
images once per set too) and everything else trains and evaluates on the cached pooled outputs:

1. sparse (scratch) = 8,192-wide relu head; dense = 512-wide linear head (recipes `embedded_sparse`,
   `embedded_dense`: same data and budget);
2. SAE TopK and SAE ReLU+L1 (8,192 features) on the dense model's image AND text embeddings of the
   training split (the paper's Table 1 / 3a baseline: zero-shot through the reconstructions,
   interpretability on the codes);
3. sparsify the dense model (`sparsify_finetune`): a wide ReLU head initialised by the signed
   rotation, by a (bias-free) SAE's encoder, or at random, fine-tuned on a third of the scratch
   budget; L0, zero-shot accuracy and Clarity along the way (the curves);
4. the dense and sparse (scratch) columns are the runs' saved points chosen on the corpus VALIDATION
   split (`evaluation.model_selection`; sparse among those at L0 <= 2%): L0 keeps falling as training
   goes on and the fine-grained sets fall with it late in training (`benchmarks/openclipart_gap.py`);
5. one held-out evaluation of dense / sparse (scratch) / sparse (from dense, best init) / SAEs, the
   claims table, the modality-score histogram (Fig. 3b), written to `results_dir` (JSON + Markdown + PNG).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..constants import DATA_CACHE_DIR, FEATURE_CACHE_DIR


@dataclass
class MainJobArguments:
    output_dir: str = field(default="outputs/embedded")
    results_dir: str = field(default="benchmarks/results/main_job", metadata={"help": "where the committed report goes (JSON, Markdown, plots)"})
    data_cache_dir: str = field(default=str(DATA_CACHE_DIR))
    tower_cache_dir: str = field(default=str(FEATURE_CACHE_DIR), metadata={"help": "the shared pooled tower-output cache of the evaluation"})
    sparse_recipe: str = field(default="embedded_sparse", metadata={"help": "recipe of the sparse model: a shipped name or a file"})
    dense_recipe: str = field(default="embedded_dense", metadata={"help": "recipe of the dense baseline: a shipped name or a file"})
    num_train_epochs: float | None = field(default=None, metadata={"help": "override both recipes' epochs"})
    skip_eval: bool = field(default=False)
    vocabulary_size: int | None = field(
        default=10000, metadata={"help": "label agreement over a seeded subset of the ~97K-word vocabulary (keeps the main job short)"}
    )
    sae: bool = field(default=True, metadata={"help": "train and evaluate the post-hoc SAE baselines (TopK, ReLU+L1)"})
    sae_topk_k: int | None = field(default=None, metadata={"help": "TopK's k (default: the scratch sparse model's mean L0 on the training pairs)"})
    sae_l1_coefficient: float = field(default=1e-4, metadata={"help": "ReLU+L1 SAE L1 weight (3e-4: L0 15 and 14 percent of the variance explained; 3e-5: L0 300)"})
    sae_l1_warmup_fraction: float = field(default=0.25, metadata={"help": "the ReLU+L1 SAE's L1 weight ramps in over this fraction of its steps"})
    sparsify_sae_l1_coefficient: float = field(default=3e-4, metadata={"help": "L1 weight of the bias-free SAE whose encoder initialises the `sae` sparsify head"})
    sae_epochs: int = field(default=8)
    sparsify_inits: str = field(default="rotation,sae,random", metadata={"help": "wide-head initialisations to fine-tune from the dense model ('' skips)"})
    sparsify_budget: float = field(default=1 / 3, metadata={"help": "fine-tuning steps as a fraction of the scratch run's"})
    sparsify_fractions: str = field(default="0.1,0.3,0.6,1.0", metadata={"help": "points of the sparsify curves (fractions of the budget)"})
    curve_clarity: bool = field(default=True, metadata={"help": "Clarity at every curve point (about 20 s a point on a shared 2-core machine; off: zero-shot and L0 only)"})
    select_on_validation: bool = field(default=True, metadata={"help": "dense and sparse (scratch) columns: the saved point with the best "
                                                                "validation zero-shot (sparse: among those at L0 <= 2 percent of width), not the last step"})
    reuse_finished: bool = field(default=True, metadata={"help": "reuse a stage's output that an earlier run finished with the same flags"})


FLAGS_FILE = "main_job_flags.json"


def _reusable(folder: Path, flags, reuse: bool) -> bool:
    """A stage's output folder finished by an earlier main job with the same flags (so a re-run after a
    crash or an interruption redoes only what is missing)."""
    record = folder / FLAGS_FILE
    return reuse and record.is_file() and json.loads(record.read_text()) == json.loads(json.dumps(flags, default=str))


def _mark(folder: Path, flags) -> None:
    atomic_write_text(folder / FLAGS_FILE, json.dumps(flags, default=str))


def _train(recipe: str, output_dir: Path, args: MainJobArguments):
    from ..recipes import recipe_path
    from .arguments import parse_args
    from .sparse_clip import train

    flags = [recipe, "--output_dir", str(output_dir), "--data_cache_dir", args.data_cache_dir]
    if args.num_train_epochs is not None:
        flags += ["--num_train_epochs", str(args.num_train_epochs)]
    record = {"flags": flags, "recipe": recipe_path(recipe).read_text()}  # an edited recipe is a new run
    started = time.time()
    if _reusable(output_dir, record, args.reuse_finished):
        trainer = _finished_run(parse_args(flags), output_dir)
    else:
        trainer = train(*parse_args(flags))
        _mark(output_dir, record)
    return trainer, _summary(trainer, started)


def _finished_run(parsed, output_dir: Path):
    """What the main job needs of a finished training run (model, processor, cached features, state),
    loaded instead of retrained."""
    from types import SimpleNamespace

    from ..modeling_sparse_clip import SparseCLIPModel
    from .data import CachedPairDataset, load_pairs
    from .model_setup import default_processor, set_trainable
    from .tower_cache import cached_tower_features

    model_args, data_args, _ = parsed
    model = SparseCLIPModel.from_pretrained(output_dir)
    set_trainable(model.vision_model, "none", "vision")
    set_trainable(model.text_model, "none", "text")
    processor = default_processor(model_args)  # the processor it trained with (the cache key)
    features = cached_tower_features(model, processor, load_pairs(data_args), Path(data_args.data_cache_dir) / "tower_features")
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return SimpleNamespace(model=model, processing_class=processor, train_dataset=CachedPairDataset(features),
                           state=SimpleNamespace(global_step=state["global_step"], log_history=state["log_history"]))


def _summary(trainer, started: float) -> dict:
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {"seconds": round(time.time() - started, 1), "last_log": logs[-1] if logs else {}, "steps": trainer.state.global_step,
            "log_history": logs}


ZERO_SHOT_LABEL = "zero-shot top-1 %"
RETRIEVAL_KEYS = [("image_to_text_R@1", "i->t R@1 %"), ("image_to_text_R@5", "i->t R@5 %"), ("text_to_image_R@1", "t->i R@1 %"),
                  ("text_to_image_R@5", "t->i R@5 %")]
INTERPRETABILITY_ROWS = [
    ("image_l0_percent_of_width", "image L0 % of width", 1), ("text_l0_percent_of_width", "text L0 % of width", 1),
    ("image_l0_mean", "image L0", 1), ("text_l0_mean", "text L0", 1),
    ("clarity_active_features_percent", "active features % (fire on >= 2 images)", 1), ("image_dead_features", "dead features (images)", 1),
    ("clarity", "Clarity", 1), ("clarity_random_baseline", "Clarity, random images", 1),
    ("multimodal_fraction", "multimodal fraction (by count)", 1), ("multimodal_density_fraction", "multimodal fraction (by activation mass)", 1),
    ("label_agreement", "concept-label agreement (vs random words)", 1), ("label_specificity", "concept-label specificity", 1),
]


def side_by_side(report: dict, training: dict | None = None) -> str:
    """A Markdown table: one row per metric and held-out set, one column per model."""
    training = training or {}
    models = list(report["models"])
    rows = []
    for set_name, meta in report["meta"]["sets"].items():
        keys = [("top1_accuracy", ZERO_SHOT_LABEL)] if meta["task"] == "zero_shot" else RETRIEVAL_KEYS
        for key, label in keys:
            values = [report["models"][m].get(set_name, {}).get(key) for m in models]
            if any(v is not None for v in values):
                rows.append((f"{set_name}: {label}", [None if v is None else 100 * v for v in values]))
    for key, label, _ in INTERPRETABILITY_ROWS:
        values = [_mean_over_sets(report["models"][m], key) for m in models]
        if any(v is not None for v in values):
            rows.append((label + " (mean over sets)", values))
    if training:
        rows.append(("logit scale (trained)", [training.get(m, {}).get("last_log", {}).get("logit_scale") for m in models]))
        rows.append(("training steps", [training.get(m, {}).get("steps") for m in models]))
        if any("selected_step" in training.get(m, {}) for m in models):
            rows.append(("step of the column's checkpoint (chosen on validation)", [training.get(m, {}).get("selected_step") for m in models]))
        rows.append(("training seconds", [training.get(m, {}).get("seconds") for m in models]))
    lines = ["| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join("-" if v is None else _fmt(v) for v in values) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
        return f"{int(value)}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def _mean_over_sets(sets: dict, key: str):
    values = [m[key] for m in sets.values() if isinstance(m.get(key), (int, float)) and not math.isnan(m[key])]
    return sum(values) / len(values) if values else None


# -- the SAE baselines and the sparsify runs, all on the cached training features ----------------------

@torch.no_grad()
def _project(model, pooled: torch.Tensor, modality: str, batch: int = 4096) -> torch.Tensor:
    head = model.project_image if modality == "image" else model.project_text
    return torch.cat([head(pooled[s : s + batch]) for s in range(0, len(pooled), batch)])


def _unique_rows(tensor: torch.Tensor) -> torch.Tensor:
    # repeated captions (templated sources) would weigh an SAE towards them; each distinct text once
    return torch.unique(tensor, dim=0)


def train_sae_baselines(dense, dense_dir: Path, features: dict, out: Path, args: MainJobArguments, topk_k: int, width: int) -> dict:
    """TopK, ReLU+L1 and the bias-free ReLU+L1 SAE whose encoder initialises the `sae` sparsify head."""
    from ..sae import train_sae_on_embeddings

    images = _project(dense, features["image"], "image")
    texts = _unique_rows(_project(dense, features["text"], "text"))
    common = dict(dense_model=str(dense_dir), epochs=args.sae_epochs, batch_size=512, learning_rate=2e-3)
    plans = {"sae_topk": dict(kind="topk", k=topk_k),
             "sae_relu_l1": dict(kind="relu_l1", l1_coefficient=args.sae_l1_coefficient, l1_warmup_fraction=args.sae_l1_warmup_fraction)}
    if "sae" in args.sparsify_inits.split(","):
        plans["sae_init"] = dict(kind="relu_l1", l1_coefficient=args.sparsify_sae_l1_coefficient, bias=False)
    reports = {}
    for name, plan in plans.items():
        flags = {**common, **plan, "width": width, "rows": [len(images), len(texts)]}
        if _reusable(out / name, flags, args.reuse_finished):
            reports[name] = json.loads((out / name / "training_report.json").read_text())
            continue
        reports[name] = train_sae_on_embeddings(images, texts, width, out / name, **common, **plan)
        _mark(out / name, flags)
    return {name: {k: v for k, v in r.items() if k != "history"} | {"history": r["history"]} for name, r in reports.items()}


def run_sparsify(dense, processor, features: dict, out: Path, args: MainJobArguments, scratch_steps: int, width: int) -> dict:
    from ..sae import SparseAutoencoder
    from .arguments import parse_args
    from .sparsify_finetune import fine_tune_from_dense

    steps = max(1, round(scratch_steps * args.sparsify_budget))
    runs = {}
    for init in [i for i in args.sparsify_inits.split(",") if i]:
        flags = [args.sparse_recipe, "--output_dir", str(out / f"sparsify_{init}"), "--max_steps", str(steps),
                 "--evolution_fractions", args.sparsify_fractions, "--save_steps", str(10 * steps), "--report_to", "none"]
        training_args = parse_args(flags)[2]
        started = time.time()
        folder = out / f"sparsify_{init}"
        if _reusable(folder, flags, args.reuse_finished):
            state = json.loads((folder / "trainer_state.json").read_text())
            runs[init] = {"seconds": None, "steps": state["global_step"], "log_history": [e for e in state["log_history"] if "loss" in e],
                          "last_log": [e for e in state["log_history"] if "loss" in e][-1]}
            continue
        sae = SparseAutoencoder.from_pretrained(out / "sae_init") if init == "sae" else None
        trainer = fine_tune_from_dense(dense, processor, features, init, training_args, width=width, sae=sae)
        _mark(folder, flags)
        runs[init] = _summary(trainer, started)
    return runs


def _curve_points(folder: Path, include_step_0: bool) -> list[tuple[int, str]]:
    points = [(0, str(folder / "step_0"))] if include_step_0 and (folder / "step_0").is_dir() else []
    for progress in sorted((folder / "evolution").glob("progress_*")):
        step = json.loads((progress / "training_progress.json").read_text())["global_step"]
        points.append((step, str(progress)))
    return points


def evaluate_curves(out: Path, inits: list[str], args: MainJobArguments) -> dict:
    """Zero-shot accuracy, L0 and Clarity at every saved point of the scratch run and of each sparsify
    run (no concept labels: the curves need the cheap metrics only; every point reads the tower cache)."""
    from ..evaluation.runner import BenchmarkArguments, run

    curves = {"scratch": _curve_points(out / "sparse", False)}
    curves.update({init: _curve_points(out / f"sparsify_{init}", True) for init in inits})
    entries = [f"dense={out / 'dense'}"] + [f"{name}@{step}={path}" for name, points in curves.items() for step, path in points]
    report = run(BenchmarkArguments(models=entries, suite="embedded", output_dir=str(out / "bench_curves"), data_cache_dir=args.data_cache_dir,
                                    concept_labels=False, interpretability=args.curve_clarity, tower_cache_dir=args.tower_cache_dir))
    sets = [s for s, m in report["meta"]["sets"].items() if m["task"] == "zero_shot"]
    dense = {s: report["models"]["dense"][s]["top1_accuracy"] for s in sets}
    result = {"dense_zero_shot": dense, "zero_shot_sets": sets, "curves": {}}
    for name, points in curves.items():
        rows = []
        for step, _ in points:
            metrics = report["models"][f"{name}@{step}"]
            row = {"step": step,
                   "image_l0_percent": _mean_over_sets(metrics, "image_l0_percent_of_width"),
                   "text_l0_percent": _mean_over_sets(metrics, "text_l0_percent_of_width"),
                   "clarity": _mean_over_sets(metrics, "clarity"),
                   "zero_shot": {s: metrics[s]["top1_accuracy"] for s in sets}}
            row["max_gap_to_dense_points"] = max(100 * (dense[s] - row["zero_shot"][s]) for s in sets)
            row["meets_goal"] = bool(max(row["image_l0_percent"], row["text_l0_percent"]) <= 2.0 and row["max_gap_to_dense_points"] <= 1.0)
            rows.append(row)
        result["curves"][name] = rows
        result.setdefault("first_step_meeting_goal", {})[name] = next((r["step"] for r in rows if r["meets_goal"]), None)
        result.setdefault("first_step_l0_at_most_2pct", {})[name] = next(
            (r["step"] for r in rows if max(r["image_l0_percent"], r["text_l0_percent"]) <= 2.0), None)
        result.setdefault("first_step_within_1pt", {})[name] = next((r["step"] for r in rows if r["max_gap_to_dense_points"] <= 1.0), None)
    return result


def select_on_validation(out: Path, args: MainJobArguments) -> dict:
    """The dense and the sparse (scratch) runs' saved points scored on the corpus validation split;
    each column is the best one (sparse: among those at L0 <= 2% of width). {run: selection}."""
    from transformers import AutoProcessor

    from ..evaluation.model_selection import saved_points, select_checkpoint, set_contexts

    contexts = set_contexts("validation", args.data_cache_dir)
    chosen = {}
    for run_name, max_l0 in (("dense", None), ("sparse", 2.0)):
        points = saved_points(out / run_name)
        if points:
            chosen[run_name] = select_checkpoint(points, AutoProcessor.from_pretrained(out / run_name), contexts, max_l0_percent=max_l0,
                                                 tower_cache_dir=args.tower_cache_dir, name=run_name)
            print(f"[main job] {run_name}: step {chosen[run_name]['step']} chosen on validation "
                  f"(mean zero-shot {100 * chosen[run_name]['score']:.1f}%)", flush=True)
    return chosen


def best_init(curves: dict, inits: list[str]) -> str:
    """The init whose final point meets the goal (L0 <= 2%, within 1 point of dense on every zero-shot
    set); else the smallest gap to dense among those at L0 <= 2%; else the smallest gap."""
    finals = {i: curves["curves"][i][-1] for i in inits if curves["curves"].get(i)}

    def sparse_enough(row):
        return max(row["image_l0_percent"], row["text_l0_percent"]) <= 2.0

    for pool in ([i for i, r in finals.items() if r["meets_goal"]], [i for i, r in finals.items() if sparse_enough(r)], list(finals)):
        if pool:
            return min(pool, key=lambda i: finals[i]["max_gap_to_dense_points"])
    raise ValueError("no sparsify run to choose from")


def run_main_job(args: MainJobArguments) -> dict:
    """Data, trainings, SAEs, sparsify runs, the held-out evaluation; prints the table and writes the
    report to `args.results_dir`. Returns {"training": ..., "report": ..., "table": ...}."""
    from ..data import build_corpus, corpus_report, format_report, load_eval_sets
    from ..data.data_card import write_data_card
    from .arguments import parse_args

    started = time.time()
    stages: dict[str, dict] = {}
    cpu = [time.process_time()]

    def stage(name: str, since: float) -> float:
        # wall seconds AND this process's CPU seconds (all its threads): on a shared machine the wall time
        # says how contended it was, the CPU time what the stage costs on idle cores
        now_cpu = time.process_time()
        stages[name] = {"wall_s": round(time.time() - since, 1), "cpu_s": round(now_cpu - cpu[0], 1), "load_average": os.getloadavg()[0]}
        cpu[0] = now_cpu
        print(f"[main job] {name}: {stages[name]}", flush=True)
        return time.time()

    out = Path(args.output_dir)
    data_args = parse_args([args.sparse_recipe])[1]
    corpus = build_corpus(cache_dir=args.data_cache_dir, max_per_source=data_args.max_per_source)
    print(format_report(corpus_report(corpus)))
    print("data card:", write_data_card(corpus, load_eval_sets(cache_dir=args.data_cache_dir), out / "DATA_CARD.md"))
    mark = stage("data", started)
    sparse_trainer, sparse_summary = _train(args.sparse_recipe, out / "sparse", args)  # runs the towers over the pairs (cached)
    mark = stage("sparse (scratch) training, incl. the training-pair tower cache", mark)
    dense_trainer, dense_summary = _train(args.dense_recipe, out / "dense", args)  # same towers: the cache is hit
    mark = stage("dense training", mark)
    training = {"sparse": sparse_summary, "dense": dense_summary}
    ds = dense_trainer.train_dataset
    features = {"image": ds.image, "text": ds.text, "text_offsets": ds.offsets}
    dense, processor = dense_trainer.model.eval(), dense_trainer.processing_class
    width = sparse_trainer.model.config.projection_dim
    inits = [i for i in args.sparsify_inits.split(",") if i]

    sae_reports = {}
    if args.sae:
        k = args.sae_topk_k or max(1, round(_mean_l0(sparse_trainer.model, features)))
        sae_reports = train_sae_baselines(dense, out / "dense", features, out, args, k, width)
        mark = stage("SAE baselines", mark)
    sparsify = run_sparsify(dense, processor, features, out, args, sparse_summary["steps"], width) if inits else {}
    training.update({f"sparsify_{init}": summary for init, summary in sparsify.items()})
    if inits:
        mark = stage("sparsify fine-tuning", mark)
    atomic_write_text(out / "training_summary.json", json.dumps({"training": training, "sae": sae_reports}, indent=2, default=str))
    if args.skip_eval:
        return {"training": training, "sae": sae_reports}

    from ..evaluation.runner import BenchmarkArguments, run

    selection = select_on_validation(out, args) if args.select_on_validation else {}
    if selection:
        mark = stage("checkpoint selection (validation split)", mark)
    curves = evaluate_curves(out, inits, args) if inits else None
    if inits:
        mark = stage("sparsify curves (evaluation)", mark)
    best = best_init(curves, inits) if inits else None
    chosen = {run_name: selection.get(run_name, {}).get("path", out / run_name) for run_name in ("dense", "sparse")}
    entries = [f"dense={chosen['dense']}", f"sparse (scratch)={chosen['sparse']}"]
    if best:
        entries.append(f"sparse (from dense, {best} init)={out / f'sparsify_{best}'}")
    saes = [f"SAE TopK={out / 'sae_topk'}", f"SAE ReLU+L1={out / 'sae_relu_l1'}"] if args.sae else []
    report = run(
        BenchmarkArguments(
            models=entries, sae=saes, suite="embedded", output_dir=str(out / "bench"), data_cache_dir=args.data_cache_dir,
            vocabulary_size=args.vocabulary_size, tower_cache_dir=args.tower_cache_dir,
        )
    )
    mark = stage("held-out evaluation", mark)
    names = list(report["models"])
    column_training = {names[0]: training["dense"], names[1]: training["sparse"]}
    for column, run_name in ((names[0], "dense"), (names[1], "sparse")):
        if run_name in selection:
            column_training[column] = {**column_training[column], "selected_step": selection[run_name]["step"]}
    if best:
        column_training[names[2]] = training[f"sparsify_{best}"]
    table = side_by_side(report, column_training)
    atomic_write_text(out / "results.md", table + "\n")
    print("\nHeld-out evaluation (embedded suite)\n" + table)

    from ..evaluation.main_report import write_main_report

    result = {
        "table": table, "report": report, "training": {k: {kk: vv for kk, vv in v.items() if kk != "log_history"} for k, v in training.items()},
        "sparsify_logs": {k: v["log_history"] for k, v in training.items() if k.startswith("sparsify_") or k == "sparse"},
        "sae": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in sae_reports.items()},
        "curves": curves, "best_init": best, "selection": selection, "stages_seconds": stages, "seconds_total": round(time.time() - started, 1),
        "load_average_at_end": os.getloadavg(), "cpu_threads": torch.get_num_threads(), "arguments": asdict(args),
    }
    write_main_report(result, Path(args.results_dir))
    print(f"\nFull benchmark: {out / 'bench' / 'results.md'}; report: {args.results_dir}; total wall time {time.time() - started:.0f} s")
    return result


@torch.no_grad()
def _mean_l0(model, features: dict) -> float:
    image = (_project(model, features["image"], "image") > 0).sum(-1).float().mean()
    text = (_project(model, _unique_rows(features["text"]), "text") > 0).sum(-1).float().mean()
    return float((image + text) / 2)


__all__ = ["MainJobArguments", "best_init", "evaluate_curves", "run_main_job", "select_on_validation", "side_by_side"]
