"""Evaluation: one small module per task, a suite of evaluation sets, and one runner looping over both.

Tasks (pure functions on `SparseEmbeddings`, each `evaluate(...) -> dict`):
    zero_shot   top-1 / top-5 / mean-per-class accuracy from class prompt ensembles (+ `ZeroShotClassifier`)
    retrieval   image<->text Recall@K with several captions per image
    sparsity    L0, active and dead features
    clarity     Clarity (eq. 2) of the features against a reference image encoder, with a random baseline
    modality    modality score, multimodal fraction and density fraction over paired data
    labels      label agreement and specificity of the concept labels against a reference text encoder
Around them: `suites` (embedded / paper / local clip_benchmark-style sets), `reference` (the reference
encoders), `sae_reading` (a dense model read through a post-hoc SAE), `runner` (`BenchmarkArguments`,
`run`, `SetContext`, `evaluate_on_set`), `report` (results.json / results.md); import them from their
modules (this package stays light, so that the metric modules load fast). The same tasks ship as
`evaluate` metric modules (`metrics/<name>/<name>.py`, thin shells): `load_metric("clarity").compute(...)`.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
METRIC_NAMES = ("zero_shot_accuracy", "retrieval_recall", "sparsity", "clarity", "modality_score", "label_agreement")


def load_metric(name: str):
    """One of the shipped `evaluate` metric modules (METRIC_NAMES), loaded offline by path."""
    import evaluate

    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; the package ships {', '.join(METRIC_NAMES)}.")
    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric"]
