"""The main job's committed report: JSON + Markdown (main table, sparsify curves, SAE training, the
"paper claim -> verdict at our scale" table, stage timings) and two plots (the sparsify curves and
the modality-score histogram, the paper's Fig. 3b)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_file, atomic_write_text
from .report import _json_default

DENSE, SCRATCH = "dense", "sparse (scratch)"


def _zero_shot_sets(report: dict) -> list[str]:
    return [s for s, m in report["meta"]["sets"].items() if m["task"] == "zero_shot"]


def _mean(sets: dict, key: str):
    values = [m[key] for m in sets.values() if isinstance(m.get(key), (int, float)) and not math.isnan(m[key])]
    return float(np.mean(values)) if values else float("nan")


def claims(report: dict) -> list[dict]:
    """Each claim of the paper with the measured numbers it rests on and a verdict computed from them."""
    models = report["models"]
    names = list(models)
    saes = [n for n in names if n.startswith("SAE")]
    sets = _zero_shot_sets(report)
    rows = []

    def gap(model):  # points below dense, worst zero-shot set
        return max(100 * (models[DENSE][s]["top1_accuracy"] - models[model][s]["top1_accuracy"]) for s in sets)

    worst = gap(SCRATCH)
    rows.append({
        "claim": "Table 1: Sparse CLIP is as accurate as dense CLIP (zero-shot)",
        "measured": "; ".join(f"{s}: {100 * models[SCRATCH][s]['top1_accuracy']:.1f} vs {100 * models[DENSE][s]['top1_accuracy']:.1f}" for s in sets),
        "verdict": "holds (within 1 point on every set)" if worst <= 1 else (
            f"partly: {sum(models[SCRATCH][s]['top1_accuracy'] * 100 >= models[DENSE][s]['top1_accuracy'] * 100 - 1 for s in sets)}"
            f" of {len(sets)} sets within 1 point; worst gap {worst:.1f} points"),
    })
    if saes:
        sae_gaps = {n: gap(n) for n in saes}
        rows.append({
            "claim": "Table 1: a post-hoc SAE costs zero-shot accuracy (through its reconstructions)",
            "measured": "; ".join(f"{n}: worst gap to dense {g:.1f} points" for n, g in sae_gaps.items()) + f"; sparse (scratch): {worst:.1f}",
            "verdict": "holds" if all(g > worst for g in sae_gaps.values()) else "does not hold at our scale",
        })
        clarity = {n: _mean(models[n], "clarity") for n in [SCRATCH, *saes]}
        rows.append({
            "claim": "Table 3a: Sparse CLIP features are more interpretable (Clarity) than an SAE's",
            "measured": "; ".join(f"{n}: {v:.3f}" for n, v in clarity.items()) + f"; random images {_mean(models[SCRATCH], 'clarity_random_baseline'):.3f}",
            "verdict": "holds" if all(clarity[SCRATCH] > clarity[n] for n in saes) else "does not hold at our scale",
        })
        count = {n: _mean(models[n], "multimodal_fraction") for n in [SCRATCH, *saes]}
        mass = {n: _mean(models[n], "multimodal_density_fraction") for n in [SCRATCH, *saes]}
        rows.append({
            "claim": "Fig. 3b: Sparse CLIP features are multimodal, an SAE's mostly unimodal",
            "measured": "; ".join(f"{n}: {count[n]:.2f} by count / {mass[n]:.2f} by mass" for n in count),
            "verdict": "holds" if all(count[SCRATCH] > count[n] and mass[SCRATCH] > mass[n] for n in saes) else (
                "holds by activation mass only" if all(mass[SCRATCH] > mass[n] for n in saes) else "does not hold at our scale"),
        })
        agreement = {n: _mean(models[n], "label_agreement") for n in [SCRATCH, *saes]}
        if not any(math.isnan(v) for v in agreement.values()):
            rows.append({
                "claim": "Concept labels: Sparse CLIP features name themselves better (label agreement vs random words)",
                "measured": "; ".join(f"{n}: {v:.3f}" for n, v in agreement.items()),
                "verdict": "holds" if all(agreement[SCRATCH] > agreement[n] for n in saes) else "does not hold at our scale",
            })
    from_dense = [n for n in names if n.startswith("sparse (from dense")]
    if from_dense:
        n = from_dense[0]
        l0 = max(_mean(models[n], "image_l0_percent_of_width"), _mean(models[n], "text_l0_percent_of_width"))
        rows.append({
            "claim": "Paper (limitation): a dense CLIP cannot be made sparse after the fact",
            "measured": f"{n}: worst zero-shot gap to dense {gap(n):.1f} points at L0 {l0:.2f}% of width",
            "verdict": "contradicted at our scale (sparsified within 1 point at L0 <= 2%)" if gap(n) <= 1 and l0 <= 2 else
            "not overturned at our scale (goal L0 <= 2% within 1 point not met)",
        })
    return rows


def _curves_markdown(curves: dict) -> list[str]:
    sets = curves["zero_shot_sets"]
    lines = ["| run | step | image L0 % | text L0 % | Clarity | " + " | ".join(f"{s} top-1 %" for s in sets) + " | worst gap to dense (points) |",
             "|---|---|---|---|---|" + "---|" * len(sets) + "---|",
             "| dense | - | 100 | 100 | - | " + " | ".join(f"{100 * curves['dense_zero_shot'][s]:.1f}" for s in sets) + " | 0 |"]
    for name, rows in curves["curves"].items():
        for r in rows:
            lines.append(f"| {name} | {r['step']} | {r['image_l0_percent']:.2f} | {r['text_l0_percent']:.2f} | {'-' if r['clarity'] is None else format(r['clarity'], '.3f')} | "
                         + " | ".join(f"{100 * r['zero_shot'][s]:.1f}" for s in sets) + f" | {r['max_gap_to_dense_points']:.1f} |")
    lines += ["", "| run | first step at L0 <= 2% | first step within 1 point of dense (every set) | first step meeting both |", "|---|---|---|---|"]
    for name in curves["curves"]:
        lines.append(f"| {name} | {curves['first_step_l0_at_most_2pct'][name]} | {curves['first_step_within_1pt'][name]} | "
                     f"{curves['first_step_meeting_goal'][name]} |")
    return lines


def markdown(result: dict) -> str:
    report = result["report"]
    lines = ["# The main job (`make main`), measured", "",
             f"Total wall time {result['seconds_total']:.0f} s on {result['cpu_threads']} torch threads; load average at the end "
             f"{', '.join(f'{x:.1f}' for x in result['load_average_at_end'])} (other jobs were sharing the cores unless it is ~2).", "",
             "Arguments: `" + json.dumps({k: v for k, v in result.get("arguments", {}).items()}, default=str) + "`", "",
             "## Main table (held-out sets)", "", result["table"], "",
             "## Paper claim -> verdict at our scale", "", "| claim | measured | verdict |", "|---|---|---|"]
    lines += [f"| {c['claim']} | {c['measured']} | {c['verdict']} |" for c in claims(report)]
    if result.get("selection"):
        lines += ["", "## Checkpoint selection (corpus validation split, never the test sets)", "",
                  "Each saved point scored by its mean zero-shot top-1 on the validation split's emoji sub-groups and Openclipart "
                  "categories; the column is the best point (sparse: among those with L0 <= 2% of width on validation).", "",
                  "| run | step | validation zero-shot % | validation L0 % (max of image, text) | chosen |", "|---|---|---|---|---|"]
        for run_name, chosen in result["selection"].items():
            lines += [f"| {run_name} | {p['step']} | {100 * p['score']:.1f} | {p['max_l0_percent']:.2f} | {'**yes**' if p['step'] == chosen['step'] else ''} |"
                      for p in chosen["points"]]
    if result.get("curves"):
        lines += ["", f"## Sparsify the dense model (best init: {result['best_init']})", "",
                  "Wide ReLU head (8,192) on the dense model's frozen towers, fine-tuned on a third of the scratch run's steps; "
                  "`scratch` is the from-scratch run's own saved points; `dense` is the final dense model the sparsify runs start from "
                  "(the main table's dense column is its validation-chosen point).", ""]
        lines += _curves_markdown(result["curves"])
        lines += ["", "![sparsify curves](sparsify_curves.png)"]
    if result.get("sae"):
        lines += ["", "## SAE training (on the dense model's training-split embeddings)", "",
                  "| SAE | kind | k / L1 | bias | explained variance | L0 image | L0 text | dead features | seconds |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in result["sae"].items():
            knob = r.get("k") if r["kind"] == "topk" else r.get("l1_coefficient")
            lines.append(f"| {name} | {r['kind']} | {knob if knob is not None else '-'} | {r['bias']} | {r['explained_variance']:.3f} | "
                         f"{r['l0_image_mean']:.1f} | {r['l0_text_mean']:.1f} | {r['dead_features']} | {r['seconds']} |")
    lines += ["", "![modality-score histogram](modality_histogram.png)", "", "## Stage timings", "",
              "CPU seconds are this process's (all threads): what the stage costs on idle cores; wall seconds and the load "
              "average show how shared the machine was.", "", "| stage | wall s | CPU s | load average (1 min) |", "|---|---|---|---|"]
    stages = {k: v if isinstance(v, dict) else {"wall_s": v, "cpu_s": float("nan"), "load_average": float("nan")}
              for k, v in result["stages_seconds"].items()}
    lines += [f"| {k} | {v['wall_s']} | {v['cpu_s']} | {v['load_average']:.1f} |" for k, v in stages.items()]
    total_cpu = sum(v["cpu_s"] for v in stages.values())
    lines += [f"| total | {result['seconds_total']:.0f} | {total_cpu:.0f} | - |"]
    return "\n".join(lines) + "\n"


def _save_figure(figure, path: Path) -> None:
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = curves["zero_shot_sets"]
    figure, axes = plt.subplots(1, 3 + len(sets) - 1, figsize=(4.2 * (2 + len(sets)), 3.6))
    for name, rows in curves["curves"].items():
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [max(r["image_l0_percent"], r["text_l0_percent"]) for r in rows], marker="o", label=name)
        axes[1].plot(steps, [float("nan") if r["clarity"] is None else r["clarity"] for r in rows], marker="o", label=name)
        for ax, s in zip(axes[2:], sets):
            ax.plot(steps, [100 * r["zero_shot"][s] for r in rows], marker="o", label=name)
    axes[0].axhline(2.0, color="grey", ls="--", lw=1)
    axes[0].set(yscale="log", xlabel="step", ylabel="L0, % of width (max of image, text)", title="sparsity")
    axes[1].set(xlabel="step", ylabel="Clarity", title="Clarity")
    for ax, s in zip(axes[2:], sets):
        ax.axhline(100 * curves["dense_zero_shot"][s], color="black", ls="--", lw=1, label="dense")
        ax.set(xlabel="step", ylabel="top-1 %", title=f"{s} zero-shot")
    axes[-1].legend(fontsize=8)
    _save_figure(figure, path)
    plt.close(figure)


def plot_modality_histogram(report: dict, path: Path) -> None:
    """Fig. 3b: distribution of the features' modality score (0 = text-only, 1 = image-only), all sets pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.5, 3.6))
    models = [m for m in report["models"] if m != DENSE]
    width = 0.1 / (len(models) + 1)
    centres = np.arange(10) / 10 + 0.05
    for i, name in enumerate(models):
        counts = np.sum([m["modality_histogram"] for m in report["models"][name].values() if "modality_histogram" in m], axis=0)
        ax.bar(centres + (i - len(models) / 2 + 0.5) * width, counts / counts.sum(), width=width, label=name)
    ax.axvspan(0.25, 0.75, color="grey", alpha=0.1, label="multimodal band")
    ax.set(xlabel="modality score (0 = text only, 1 = image only)", ylabel="fraction of features", title="Modality score (Fig. 3b)")
    ax.legend(fontsize=8)
    _save_figure(figure, path)
    plt.close(figure)


def write_main_report(result: dict, results_dir: Path) -> None:
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    slim = {k: v for k, v in result.items() if k != "table"}
    slim["claims"] = claims(result["report"])
    atomic_write_text(results_dir / "main_job.json", json.dumps(slim, indent=2, default=_json_default))
    atomic_write_text(results_dir / "main_job.md", markdown(result))
    if result.get("curves"):
        plot_curves(result["curves"], results_dir / "sparsify_curves.png")
    plot_modality_histogram(result["report"], results_dir / "modality_histogram.png")


__all__ = ["claims", "markdown", "plot_curves", "plot_modality_histogram", "write_main_report"]
