"""Pick a run's checkpoint on the corpus VALIDATION split (never the test sets): early stopping for the
main job and the recipe experiments.

A run saves `from_pretrained` folders along training (`--evolution_fractions`); each is scored by its
zero-shot top-1 on the validation split's emoji sub-groups and Openclipart categories (the same
constructions as the held-out sets, drawn from the corpus's validation rows) and the best is chosen,
optionally only among the points sparse enough (`max_l0_percent`, L0 on the validation sets). Why:
a Sparse CLIP's L0 keeps falling as training goes on and the fine-grained sets fall with it late in
training (`benchmarks/openclipart_gap.py`), so "the last step" is not the best model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..constants import DATA_CACHE_DIR, FEATURE_CACHE_DIR

VALIDATION_SETS = ("emoji_subgroups", "openclipart_categories")


def set_contexts(split: str = "validation", data_cache_dir: str | os.PathLike = DATA_CACHE_DIR) -> list:
    """The zero-shot sets of the embedded suite on `split`: `test` (the held-out sets) or `validation`
    (their constructions on the corpus's validation rows; Fashion-MNIST has no validation set of its own)."""
    from ..data import build_corpus, load_eval_sets
    from .runner import BenchmarkArguments, SetContext

    bench = BenchmarkArguments(data_cache_dir=str(data_cache_dir), interpretability=False, progress=False)
    if split == "test":
        sets = load_eval_sets(cache_dir=data_cache_dir)
    elif split == "validation":
        sets = load_eval_sets(cache_dir=data_cache_dir, corpus={"test": build_corpus(data_cache_dir)["validation"]})
        sets = {k: v for k, v in sets.items() if k in VALIDATION_SETS}
    else:
        raise ValueError(f"split must be 'validation' or 'test', not {split!r}")
    return [SetContext(s, bench, references={}) for s in sets.values()]


def zero_shot_and_l0(model, processor, name: str, contexts: list, tower_cache_dir: str | os.PathLike | None = FEATURE_CACHE_DIR) -> dict:
    """{set: zero-shot top-1} for the zero-shot sets among `contexts`, + image/text L0 (% of width, mean over sets)."""
    from ..encoding import SparseCLIPEncoder
    from .runner import evaluate_on_set

    encoder = SparseCLIPEncoder(model, processor, name=name, batch_size=64, cache_dir=tower_cache_dir or None, channels_last=True, progress=False)
    per_set = {c.eval_set.name: evaluate_on_set(encoder, c, None, c.args) for c in contexts}
    out = {s: m["top1_accuracy"] for s, m in per_set.items() if "top1_accuracy" in m}
    out["image_l0_percent"] = sum(m["image_l0_percent_of_width"] for m in per_set.values()) / len(per_set)
    out["text_l0_percent"] = sum(m["text_l0_percent_of_width"] for m in per_set.values()) / len(per_set)
    return out


def saved_points(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(global step, folder) of every point a run saved along training (`<run_dir>/evolution/progress_*`), by step."""
    points = []
    for folder in (Path(run_dir) / "evolution").glob("progress_*"):
        points.append((json.loads((folder / "training_progress.json").read_text())["global_step"], folder))
    return sorted(points)


def select_checkpoint(points: list[tuple[int, Path]], processor, contexts: list, max_l0_percent: float | None = None,
                      tower_cache_dir: str | os.PathLike | None = FEATURE_CACHE_DIR, name: str = "run") -> dict:
    """Score each saved point on `contexts` (the validation sets) and choose the best mean zero-shot
    top-1 among those with max(image, text) L0 <= `max_l0_percent` (all points when none is or no
    limit is given). Returns {"step", "path", "score", "validation", "points": [...]}."""
    from ..modeling_sparse_clip import SparseCLIPModel

    if not points:
        raise ValueError("no saved points to choose from: train with --evolution_fractions")
    scored = []
    for step, folder in points:
        metrics = zero_shot_and_l0(SparseCLIPModel.from_pretrained(folder).eval(), processor, f"{name}@{step}", contexts, tower_cache_dir)
        accuracies = [v for k, v in metrics.items() if not k.endswith("_percent")]
        scored.append({"step": step, "path": str(folder), "score": sum(accuracies) / len(accuracies), "validation": metrics,
                       "max_l0_percent": max(metrics["image_l0_percent"], metrics["text_l0_percent"])})
    pool = [p for p in scored if max_l0_percent is None or p["max_l0_percent"] <= max_l0_percent] or scored
    best = max(pool, key=lambda p: p["score"])
    return {**{k: best[k] for k in ("step", "path", "score", "validation")}, "max_l0_percent_allowed": max_l0_percent, "points": scored}


__all__ = ["VALIDATION_SETS", "saved_points", "select_checkpoint", "set_contexts", "zero_shot_and_l0"]
