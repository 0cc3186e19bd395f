"""The paper's ablations (Figure 2a, 2b, 2c) at small scale: train a grid of runs, evaluate each, plot.

    python -m benchmarks.ablations                                  # the embedded recipe, all three studies
    python -m benchmarks.ablations --studies width --widths 512 2048 --num_train_epochs 2
    python -m benchmarks.ablations --base_config my_recipe.json --overrides learning_rate=5e-4

Every run is the base training recipe with a few flags changed (`modeling_sparse_clip.training.train`),
evaluated on the held-out sets by the evaluation library (`modeling_sparse_clip.evaluation.runner.evaluate_on_set`):

* width (Fig. 2a): each width x {relu, none}: zero-shot accuracy, retrieval and L0 against width.
* inducer (Fig. 2b): relu vs relu + L1 vs TopK at one width, L0 logged every few steps from step 1.
  TopK's k defaults to the relu run's final image L0, so that both end at comparable sparsity.
* cap (Fig. 2c): the free relu run (cap `free_cap`), then caps at fractions of the logit scale it
  reached (the cap only acts when it binds); a capped run starts at min(recipe init, cap). Plus
  `fixed_caps`: runs that start AT the cap (init = cap), the paper's regime where the scale sits at
  its cap for most of training.

The study's caps are LINEAR logit scales (fractions of the scale a run reached, as in the tables); each run
gets them as the training command's log-space flags (`--logit_scale_max`, `--logit_scale_init_value`).
Every run trains at `learning_rate` (default 1e-2, not the recipe's: in a run of a few epochs the heads
and the logit scale barely move at 1e-3; see benchmarks/ABLATIONS.md).

Resumable: a run whose record `<output_dir>/runs/<name>.json` exists with the same flags is not
retrained. Writes `fig2a.png`, `fig2b.png`, `fig2c.png`, `ablations.md` and `ablations.json`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from modeling_sparse_clip.atomic import atomic_write_text
from modeling_sparse_clip.constants import DATA_CACHE_DIR, FEATURE_CACHE_DIR
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.evaluation.runner import BenchmarkArguments, SetContext, evaluate_on_set
from modeling_sparse_clip.evaluation.suites import build_suite
from modeling_sparse_clip.training import parse_args, train

logger = logging.getLogger(__name__)
RECIPE = "embedded_sparse"
STUDIES = ("width", "inducer", "cap")
# Telemetry kept from each logging step of a run (see modeling_sparse_clip/training/telemetry.py).
HISTORY_KEYS = ("step", "epoch", "loss", "l0_image_mean", "l0_text_mean", "l0_image_pct_width", "l0_text_pct_width",
                "active_features_pct", "dead_features", "logit_scale")


@dataclass
class AblationArguments:
    base_config: str = field(default=RECIPE, metadata={"help": "Training recipe every run starts from: a shipped name or a JSON/YAML path."})
    overrides: list[str] = field(default_factory=list, metadata={"help": "KEY=VALUE training flags added to every run, after the recipe."})
    studies: list[str] = field(default_factory=lambda: list(STUDIES), metadata={"help": "Any of width (2a), inducer (2b), cap (2c)."})
    widths: list[int] = field(default_factory=lambda: [512, 2048, 8192], metadata={"help": "Widths of the width study (x relu / none)."})
    study_width: int = field(default=2048, metadata={"help": "Width of the inducer and cap studies."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs of every run."})
    learning_rate: float | None = field(default=1e-2, metadata={"help": "Learning rate of every run (None: the recipe's)."})
    logging_steps: int = field(default=3, metadata={"help": "Telemetry (L0, logit scale) every this many steps, and at step 1."})
    l1_coefficient: float = field(default=1e-3, metadata={"help": "L1 coefficient of the relu + L1 run."})
    topk_k: int | None = field(default=None, metadata={"help": "k of the TopK run (default: the relu run's final image L0)."})
    free_cap: float = field(default=100.0, metadata={"help": "Cap (LINEAR logit scale) of the free run of the cap study."})
    cap_fractions: list[float] = field(default_factory=lambda: [0.7, 0.5, 0.3], metadata={"help": "Caps as fractions of the (linear) scale the free run reached."})
    fixed_caps: list[float] = field(default_factory=lambda: [50.0, 20.0], metadata={"help": "Caps (LINEAR) whose runs start at the cap (init = cap)."})
    output_dir: str = field(default="benchmarks/results/ablations", metadata={"help": "Plots, table, JSON and per-run records."})
    runs_dir: str = field(default="outputs/ablations", metadata={"help": "Trained models of the runs."})
    suite: str = field(default="embedded", metadata={"help": "Evaluation suite (see modeling_sparse_clip.evaluation.suites), or none."})
    zero_shot_datasets: list[str] = field(default_factory=list, metadata={"help": "Extra ImageNet-style evaluation sets."})
    retrieval_datasets: list[str] = field(default_factory=list, metadata={"help": "Extra COCO-style evaluation sets."})
    split: str = field(default="test")
    max_examples: int | None = field(default=None, metadata={"help": "Evaluate at most this many images per set."})
    data_cache_dir: str = field(default=str(DATA_CACHE_DIR))
    feature_cache_dir: str = field(default=str(FEATURE_CACHE_DIR), metadata={"help": "The encoder's cache of pooled tower outputs of the evaluation inputs (shared by every run on the same frozen towers)."})
    batch_size: int = field(default=256, metadata={"help": "Evaluation batch size of the tower pass."})
    rerun: bool = field(default=False, metadata={"help": "Retrain runs whose records exist."})
    progress: bool = field(default=True)


@dataclass
class RunSpec:
    name: str
    flags: dict
    label: str
    series: str = ""  # the cap study's two series: "relative" caps and "fixed" (start at the cap)


def _flag_list(flags: dict) -> list[str]:
    out = []
    for key, value in flags.items():
        out += [f"--{key}", str(value)]
    return out


def _parse_overrides(overrides: list[str]) -> dict:
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--overrides takes KEY=VALUE training flags (e.g. learning_rate=5e-4), not {item!r}.")
        parsed[key.lstrip("-")] = value
    return parsed


def _recipe_value(args: AblationArguments, key: str):
    """A value of the training recipe (after --overrides), as the training parser reads it."""
    model_args, data_args, training_args = parse_args([args.base_config, *_flag_list(_parse_overrides(args.overrides)), "--output_dir", "unused"])
    for group in (model_args, data_args, training_args):
        if hasattr(group, key):
            return getattr(group, key)
    raise KeyError(key)


def _recipe_scale(args: AblationArguments, key: str) -> float:
    """A logit-scale value of the recipe (log space there) as the linear scale the study works in."""
    return math.exp(float(_recipe_value(args, key)))


# -- evaluation -----------------------------------------------------------------------------------------
def _mean(values):
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def summarize_eval(per_set: dict) -> dict:
    """One number per quantity over the evaluation sets (zero-shot and retrieval sets averaged separately)."""
    sets = per_set.values()
    return {
        "zero_shot_top1": _mean([m.get("top1_accuracy") for m in sets]),
        "retrieval_R@1": _mean([(m["image_to_text_R@1"] + m["text_to_image_R@1"]) / 2 for m in sets if "image_to_text_R@1" in m]),
        "image_l0": _mean([m.get("image_l0_mean") for m in sets]),
        "text_l0": _mean([m.get("text_l0_mean") for m in sets]),
        "image_l0_pct_width": _mean([m.get("image_l0_percent_of_width") for m in sets]),
        "image_active_features_pct": _mean([m.get("image_active_features_percent") for m in sets]),
    }


class Evaluator:
    """The evaluation sets, loaded once; each run's model goes through the one encoder and the library's
    tasks. The towers are frozen in every run, so the encoder's tower cache (keyed by the tower weights,
    preprocessing and inputs) serves every run: the towers run once per input set, each run only
    applies its own heads."""

    def __init__(self, args: AblationArguments):
        self.bench_args = BenchmarkArguments(
            suite=args.suite, zero_shot_datasets=args.zero_shot_datasets, retrieval_datasets=args.retrieval_datasets,
            split=args.split, max_examples=args.max_examples, data_cache_dir=args.data_cache_dir, interpretability=False,
            batch_size=args.batch_size, progress=False,
        )
        eval_sets = build_suite(args.suite, args.zero_shot_datasets, args.retrieval_datasets, args.split, args.data_cache_dir, args.max_examples)
        self.contexts = [SetContext(s, self.bench_args, references={}) for s in eval_sets]
        self.feature_cache_dir = args.feature_cache_dir
        self.progress = args.progress

    def __call__(self, model, processor, name: str) -> dict:
        encoder = SparseCLIPEncoder(model, processor, name=name, batch_size=self.bench_args.batch_size,
                                    cache_dir=self.feature_cache_dir, progress=self.progress)
        return {c.eval_set.name: evaluate_on_set(encoder, c, None, self.bench_args) for c in self.contexts}


# -- the grid -------------------------------------------------------------------------------------------
def _scalar_eval(per_set: dict) -> dict:
    keep = ("top1_accuracy", "top5_accuracy", "image_to_text_R@1", "text_to_image_R@1", "image_to_text_R@5", "text_to_image_R@5",
            "image_l0_mean", "image_l0_percent_of_width", "image_active_features_percent", "image_dead_features", "text_l0_mean",
            "text_l0_percent_of_width", "width", "num_images")
    return {s: {k: v for k, v in m.items() if k in keep} for s, m in per_set.items()}


def train_and_evaluate(spec: RunSpec, args: AblationArguments, evaluator: Evaluator) -> dict:
    """Train one run of the grid (or load its record), evaluate it, write its record."""
    record_path = Path(args.output_dir) / "runs" / f"{spec.name}.json"
    common = {
        "num_train_epochs": args.num_train_epochs, "logging_steps": args.logging_steps, "logging_first_step": True,
        "evolution_fractions": "", "report_to": "none", "save_strategy": "no", "disable_tqdm": True,
    }
    if args.learning_rate is not None:
        common["learning_rate"] = args.learning_rate
    flags = {**_parse_overrides(args.overrides), **common, **{k: str(v) for k, v in spec.flags.items()}}
    if record_path.exists() and not args.rerun:
        record = json.loads(record_path.read_text())
        if record.get("flags") == flags and record.get("base_config") == str(args.base_config):
            return record
    output_dir = Path(args.runs_dir) / spec.name
    started = time.time()
    trainer = train(*parse_args([args.base_config, *_flag_list({**flags, "output_dir": output_dir})]))
    seconds = time.time() - started
    model = trainer.model.eval()
    history = [{k: e[k] for k in HISTORY_KEYS if k in e} for e in trainer.state.log_history if "loss" in e and "l0_image_mean" in e]
    per_set = evaluator(model, trainer.processing_class, spec.name)
    record = {
        "name": spec.name,
        "label": spec.label,
        "series": spec.series,
        "base_config": str(args.base_config),
        "flags": flags,
        "width": int(model.config.projection_dim),
        "activation": model.config.activation,
        "topk_k": model.config.topk_k,
        "l1_coefficient": model.config.l1_coefficient,
        "logit_scale_cap": round(math.exp(model.config.logit_scale_max), 4),
        "logit_scale_init": round(math.exp(model.config.logit_scale_init_value), 4),
        "logit_scale_reached": round(float(model.effective_logit_scale().detach()), 4),
        "learning_rate": trainer.args.learning_rate,
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1),
        "history": history,
        "eval": _scalar_eval(per_set),
        "summary": summarize_eval(per_set),
        "model_dir": str(output_dir),
    }
    atomic_write_text(record_path, json.dumps(record, indent=2))  # a killed run never leaves a half record to resume from
    return record


def _fmt_number(value: float) -> str:
    return f"{value:g}" if value >= 1 else f"{value:.2g}"


def width_specs(args: AblationArguments) -> list[RunSpec]:
    return [RunSpec(f"width{w}_{act}", {"projection_dim": w, "activation": act}, f"{act}, width {w}")
            for w in args.widths for act in ("relu", "none")]


def relu_spec(args: AblationArguments) -> RunSpec:
    return RunSpec(f"width{args.study_width}_relu", {"projection_dim": args.study_width, "activation": "relu"}, f"relu, width {args.study_width}")


def inducer_specs(args: AblationArguments, relu_record: dict) -> list[RunSpec]:
    k = args.topk_k or max(1, round(relu_record["history"][-1]["l0_image_mean"]))
    w = args.study_width
    return [
        RunSpec(f"inducer_l1_{_fmt_number(args.l1_coefficient)}_w{w}", {"projection_dim": w, "activation": "relu", "l1_coefficient": args.l1_coefficient},
                f"relu + L1 ({args.l1_coefficient:g})"),
        RunSpec(f"inducer_topk{k}_w{w}", {"projection_dim": w, "activation": "topk", "topk_k": k}, f"TopK (k={k})"),
    ]


def _cap_spec(args: AblationArguments, cap: float, init: float, label: str, series: str) -> RunSpec:
    init = min(init, cap)
    flags = {"projection_dim": args.study_width, "activation": "relu", "logit_scale_max": math.log(cap), "logit_scale_init_value": math.log(init)}
    return RunSpec(f"cap{cap:g}_init{init:g}_w{args.study_width}", flags, label, series)


def free_cap_spec(args: AblationArguments, init: float) -> RunSpec:
    """The relu run of the width/inducer studies when the recipe's cap is `free_cap`."""
    spec = relu_spec(args)
    if not math.isclose(_recipe_scale(args, "logit_scale_max"), args.free_cap, rel_tol=1e-9):
        spec = _cap_spec(args, args.free_cap, init, f"free (cap {args.free_cap:g})", "relative")
    return spec


def capped_specs(args: AblationArguments, free_record: dict, init: float) -> list[RunSpec]:
    reached = free_record["logit_scale_reached"]
    specs = []
    for fraction in args.cap_fractions:
        cap = round(fraction * reached, 2)
        specs.append(_cap_spec(args, cap, init, f"cap {cap:g} ({fraction:g}x free)", "relative"))
    specs += [_cap_spec(args, cap, cap, f"cap {cap:g} (starts at cap)", "fixed") for cap in args.fixed_caps]
    return specs


def run_grid(args: AblationArguments) -> dict:
    unknown = set(args.studies) - set(STUDIES)
    if unknown:
        raise ValueError(f"Unknown studies {sorted(unknown)}; choose from {list(STUDIES)}.")
    if "width" in args.studies and not args.widths:
        raise ValueError("The width study needs --widths.")
    evaluator = Evaluator(args)
    init = _recipe_scale(args, "logit_scale_init_value")
    runs: dict[str, dict] = {}
    studies: dict[str, list[str]] = {}
    # Known up front: the width runs, the relu and free runs; the others depend on earlier results
    # (TopK's k on the relu run, the relative caps on the free run).
    known = {s.name for s in width_specs(args)} if "width" in args.studies else set()
    known |= {relu_spec(args).name} if "inducer" in args.studies else set()
    known |= {free_cap_spec(args, init).name} if "cap" in args.studies else set()
    planned = len(known) + 2 * ("inducer" in args.studies) + (len(args.cap_fractions) + len(args.fixed_caps)) * ("cap" in args.studies)
    bar = tqdm(total=planned, desc="ablation runs", unit="run", disable=not args.progress)

    def do(spec: RunSpec) -> dict:
        if spec.name not in runs:
            bar.set_postfix(run=spec.name)
            runs[spec.name] = train_and_evaluate(spec, args, evaluator)
            bar.update()
        return runs[spec.name]

    if "width" in args.studies:
        studies["width"] = [do(s)["name"] for s in width_specs(args)]
    if "inducer" in args.studies:
        relu = do(relu_spec(args))
        studies["inducer"] = [relu["name"]] + [do(s)["name"] for s in inducer_specs(args, relu)]
    if "cap" in args.studies:
        free = do(free_cap_spec(args, init))
        studies["cap"] = [free["name"]] + [do(s)["name"] for s in capped_specs(args, free, init)]
    bar.close()

    report = {"arguments": asdict(args), "studies": studies, "runs": runs,
              "eval_sets": {c.eval_set.name: {"task": c.eval_set.task, "num_images": len(c.images)} for c in evaluator.contexts}}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.json").write_text(json.dumps(report, indent=2))
    write_table(report, out / "ablations.md")
    plot_all(report, out)
    return report


# -- outputs ------------------------------------------------------------------------------------------
def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


TABLE_HEADER = ("| run | width | activation | cap / init / lr | logit scale reached | zero-shot top-1 % | retrieval R@1 % "
                "| image L0 (eval) | image L0 % width | text L0 (eval) | live features % | train L0 (last log) | train s |")


def _table_row(r: dict) -> str:
    s, last = r["summary"], r["history"][-1] if r["history"] else {}
    activation = r["activation"] + (f" k={r['topk_k']}" if r["activation"] == "topk" else "") + (f" + L1 {r['l1_coefficient']:g}" if r["l1_coefficient"] else "")
    return (f"| {r['name']} | {r['width']} | {activation} | {r['logit_scale_cap']:g} / {r['logit_scale_init']:g} / {r['learning_rate']:g} "
            f"| {r['logit_scale_reached']:.2f} | {_pct(s['zero_shot_top1'])} | {_pct(s['retrieval_R@1'])} | {_num(s['image_l0'])} "
            f"| {_num(s['image_l0_pct_width'], 2)} | {_num(s['text_l0'])} | {_num(s['image_active_features_pct'])} "
            f"| {_num(last.get('l0_image_mean'))} | {r['train_seconds']:.0f} |")


STUDY_TITLES = {
    "width": "Figure 2a: width x {relu, none}",
    "inducer": "Figure 2b: relu vs relu + L1 vs TopK",
    "cap": "Figure 2c: logit-scale cap",
}


def write_table(report: dict, path: Path) -> None:
    sets = ", ".join(f"{n} ({m['task']}, {m['num_images']} images)" for n, m in report["eval_sets"].items())
    a = report["arguments"]
    lines = ["# Ablations (paper Figure 2) at small scale", "",
             f"Recipe `{a['base_config']}` + {a['overrides'] or 'no overrides'}; {a['num_train_epochs']:g} epochs per run.",
             f"Evaluation sets: {sets}. Zero-shot top-1 is the mean over zero-shot sets; retrieval R@1 the mean of both "
             "directions over retrieval sets; L0 and live features (fired on at least one eval image) are means over all sets.",
             "The logit scale is linear: cap / init / learning rate as trained, and the value it had at the end.", ""]
    for study, names in report["studies"].items():
        lines += [f"## {STUDY_TITLES[study]}", "", TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
        lines += [_table_row(report["runs"][n]) for n in names]
        lines.append("")
    path.write_text("\n".join(lines))


def plot_all(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    runs, studies = report["runs"], report["studies"]
    if "width" in studies:
        _plot_width([runs[n] for n in studies["width"]], out / "fig2a.png")
    if "inducer" in studies:
        _plot_inducer([runs[n] for n in studies["inducer"]], out / "fig2b.png")
    if "cap" in studies:
        _plot_cap([runs[n] for n in studies["cap"]], out / "fig2c.png")


def _accuracy_key(records: list[dict]) -> tuple[str, str]:
    if any(r["summary"]["zero_shot_top1"] is not None for r in records):
        return "zero_shot_top1", "zero-shot top-1 (%)"
    return "retrieval_R@1", "retrieval R@1 (%)"


def _plot_width(records: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    key, label = _accuracy_key(records)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for activation, style, color in (("relu", "o-", "C0"), ("none", "s--", "C1")):
        rs = sorted((r for r in records if r["activation"] == activation), key=lambda r: r["width"])
        widths = [r["width"] for r in rs]
        axes[0].plot(widths, [100 * (r["summary"][key] or float("nan")) for r in rs], style, color=color, label=activation)
        axes[1].plot(widths, [100 * (r["summary"]["retrieval_R@1"] or float("nan")) for r in rs], style, color=color, label=activation)
        axes[2].plot(widths, [r["summary"]["image_l0"] for r in rs], style, color=color, label=f"{activation}: image")
        axes[2].plot(widths, [r["summary"]["text_l0"] for r in rs], style, color=color, alpha=0.4, label=f"{activation}: text")
    for ax, ylabel in zip(axes, (label, "retrieval R@1 (%)", "L0 on the eval sets (active dims)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width (projection dim)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2].set_yscale("log", base=2)
    fig.suptitle("Fig. 2a at small scale: width x {relu, no relu}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_inducer(records: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    key, label = _accuracy_key(records)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    for r in records:
        steps = [h["step"] for h in r["history"]]
        axes[0].plot(steps, [h["l0_image_mean"] for h in r["history"]], marker=".", label=r["label"])
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("image L0 (training batches)")
    axes[0].set_yscale("log")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    names = [r["label"] for r in records]
    metrics = [(key, label)] + ([("retrieval_R@1", "retrieval R@1 (%)")] if key != "retrieval_R@1" else [])
    bar_width = 0.8 / len(metrics)
    for j, (metric, metric_label) in enumerate(metrics):
        x = np.arange(len(records)) + (j - (len(metrics) - 1) / 2) * bar_width
        values = [100 * (r["summary"][metric] or float("nan")) for r in records]
        bars = axes[1].bar(x, values, bar_width, label=metric_label, color=f"C{j}", alpha=0.8)
        axes[1].bar_label(bars, fmt="%.1f", fontsize=8)
    axes[1].set_xticks(range(len(records)), names, rotation=20, ha="right")
    axes[1].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3, axis="y")
    fig.suptitle(f"Fig. 2b at small scale: sparsity inducers at width {records[0]['width']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_cap(records: list[dict], path: Path) -> None:
    """x = the logit scale each run ended at (what the cap did); the free run is the first record."""
    import matplotlib.pyplot as plt

    key, label = _accuracy_key(records)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    series = {"relative (starts at min(init, cap))": [records[0]] + [r for r in records[1:] if r["series"] != "fixed"],
              "fixed (starts at the cap)": [r for r in records[1:] if r["series"] == "fixed"]}
    for i, (name, rs) in enumerate(series.items()):
        rs = sorted(rs, key=lambda r: r["logit_scale_reached"])
        if not rs:
            continue
        x = [r["logit_scale_reached"] for r in rs]
        axes[0].plot(x, [r["summary"]["image_l0"] for r in rs], "o-", color=f"C{i}", label=f"{name}: image")
        axes[0].plot(x, [r["summary"]["text_l0"] for r in rs], "s--", color=f"C{i}", alpha=0.6, label=f"{name}: text")
        axes[1].plot(x, [100 * (r["summary"][key] or float("nan")) for r in rs], "o-", color=f"C{i}", label=f"{name}: {label}")
        if key != "retrieval_R@1":
            axes[1].plot(x, [100 * (r["summary"]["retrieval_R@1"] or float("nan")) for r in rs], "s--", color=f"C{i}", alpha=0.6,
                         label=f"{name}: retrieval R@1 (%)")
        for r in rs:
            cap = "free" if r is records[0] else f"cap {r['logit_scale_cap']:g}"
            axes[0].annotate(cap, (r["logit_scale_reached"], r["summary"]["image_l0"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes[0].set_ylabel("L0 on the eval sets")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("accuracy (%)")
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_xlabel("logit scale reached (linear; capped runs sit at their cap)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for r in sorted(records, key=lambda r: -r["logit_scale_cap"]):
        cap = "free" if r is records[0] else f"cap {r['logit_scale_cap']:g}"
        axes[2].plot([h["step"] for h in r["history"]], [h["logit_scale"] for h in r["history"]], label=cap)
    axes[2].set_xlabel("training step")
    axes[2].set_ylabel("logit scale")
    axes[2].set_yscale("log")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"Fig. 2c at small scale: logit-scale cap (width {records[0]['width']}, lr {records[0]['learning_rate']:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (args,) = HfArgumentParser(AblationArguments).parse_args_into_dataclasses(args=argv)
    run_grid(args)
    print((Path(args.output_dir) / "ablations.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
