"""The benchmark report: per-model summary (mean over sets) and the Markdown tables of results.md."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from ..atomic import atomic_write_text

SUMMARY_METRICS = [
    ("top1_accuracy", "zero-shot top-1"),
    ("text_to_image_R@1", "text->image R@1"),
    ("image_to_text_R@1", "image->text R@1"),
    ("image_l0_mean", "image L0"),
    ("image_l0_percent_of_width", "image L0 % of width"),
    ("clarity_active_features_percent", "active features % (Clarity)"),
    ("clarity", "Clarity"),
    ("clarity_random_baseline", "Clarity, random images"),
    ("multimodal_fraction", "multimodal fraction"),
    ("label_agreement", "label agreement (vs random words)"),
    ("label_specificity", "label specificity (vs other features' images)"),
]


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else (f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}")
    return ""


def summarize(results: dict) -> dict:
    """Per model, the mean of each summary metric over the sets that have it."""
    summary = {}
    for model, sets in results.items():
        summary[model] = {}
        for key, _ in SUMMARY_METRICS:
            values = [m[key] for m in sets.values() if isinstance(m.get(key), (int, float)) and not math.isnan(m[key])]
            if values:
                summary[model][key] = float(np.mean(values))
    return summary


def markdown(results: dict, meta: dict) -> str:
    """results.md: the summary table, then one table per evaluation set (models as columns)."""
    models = list(results)
    lines = ["# Benchmark results", "", f"Suite: `{meta['suite']}`; reference image encoder for Clarity: {meta['reference_image_encoder']}.", ""]
    lines += ["## Summary (mean over sets)", "", "| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    summary = summarize(results)
    for key, label in SUMMARY_METRICS:
        if any(key in summary[m] for m in models):
            lines.append(f"| {label} | " + " | ".join(_fmt(summary[m].get(key)) for m in models) + " |")
    set_names = list(dict.fromkeys(s for m in models for s in results[m]))
    for set_name in set_names:
        lines += ["", f"## {set_name}", "", "| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        keys = list(dict.fromkeys(k for m in models for k, v in results[m].get(set_name, {}).items() if _fmt(v)))
        for key in keys:
            lines.append(f"| {key} | " + " | ".join(_fmt(results[m].get(set_name, {}).get(key)) for m in models) + " |")
    return "\n".join(lines) + "\n"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_report(report: dict, output_dir: str | os.PathLike) -> None:
    """`results.json` ({"models": ..., "meta": ...}) and `results.md` in `output_dir`, each written atomically."""
    atomic_write_text(os.path.join(output_dir, "results.json"), json.dumps(report, indent=2, default=_json_default))
    atomic_write_text(os.path.join(output_dir, "results.md"), markdown(report["models"], report["meta"]))
