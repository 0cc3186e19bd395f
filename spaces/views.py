"""Charts, tables and galleries the tabs show (pure functions of the state and some activations)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from state import SpaceState


def bar_chart(names: list[str], values: list[float], title: str, values_b: list[float] | None = None, legend=("", "")) -> Figure:
    fig = Figure(figsize=(7, max(2.2, 0.36 * len(names) + 0.8)), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    if values_b is None:
        ax.barh(y, values, color="#4c72b0")
    else:
        ax.barh(y - 0.2, values, height=0.4, color="#4c72b0", label=legend[0])
        ax.barh(y + 0.2, values_b, height=0.4, color="#dd8452", label=legend[1])
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("activation (share of the L2-normalised embedding)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def active_features(acts: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The `n` strongest features of one embedding, as (feature, normalised activation)."""
    norm = float(np.linalg.norm(acts))
    if norm == 0:
        return []
    order = np.argsort(-acts)[:n]
    return [(int(f), float(acts[f] / norm)) for f in order if acts[f] > 0]


def feature_table(state: SpaceState, features: list[tuple[int, float]]) -> pd.DataFrame:
    rows = []
    for f, value in features:
        summary = state.atlas.summary(f)
        rows.append({
            "feature": f,
            "activation": round(value, 4),
            "top words": state.labels.label(f, 4),
            "density": f"{summary['density']:.2%}",
            "modality": "-" if summary["modality"] is None else f"{summary['modality']:.2f}",
        })
    return pd.DataFrame(rows, columns=["feature", "activation", "top words", "density", "modality"])


def top_image_gallery(state: SpaceState, features: list[int], per_feature: int = 4):
    items = []
    for f in features:
        for row, act in state.atlas.top(f, per_feature):
            items.append((state.thumb(row), f"f{f} {state.labels.label(f, 1)} · {act:.2f}"))
    return items


def retrieval_gallery(state: SpaceState, hits: list[tuple[int, float]]):
    return [(state.thumb(r), f"{state.captions[r][:30]} · {s:.2f}") for r, s in hits]


def shared_features_view(state: SpaceState, image_acts: np.ndarray, text_acts: np.ndarray):
    """(header, chart or None, table) of the features an image and a text both activate."""
    image_unit = image_acts / max(np.linalg.norm(image_acts), 1e-12)
    text_unit = text_acts / max(np.linalg.norm(text_acts), 1e-12)
    both = np.nonzero((image_unit > 0) & (text_unit > 0))[0]
    cosine = float(image_unit @ text_unit)
    header = (
        f"Image: {int((image_acts > 0).sum())} active · text: {int((text_acts > 0).sum())} active · "
        f"**{len(both)} shared** · cosine similarity {cosine:.3f}"
    )
    if len(both) == 0:
        return header + "\n\nThe image and the text share no active feature.", None, pd.DataFrame(columns=["feature", "image", "text", "top words"])
    order = both[np.argsort(-(image_unit[both] * text_unit[both]))][:12]
    names = [f"f{f}: {state.labels.label(int(f), 2)}" for f in order]
    chart = bar_chart(names, list(image_unit[order]), "shared features (by contribution to the similarity)", list(text_unit[order]), ("image", "text"))
    table = pd.DataFrame(
        [{"feature": int(f), "image": round(float(image_unit[f]), 4), "text": round(float(text_unit[f]), 4),
          "contribution": round(float(image_unit[f] * text_unit[f]), 4), "top words": state.labels.label(int(f), 4)} for f in order]
    )
    return header, chart, table


def evolution_view(state: SpaceState, feature: int):
    """(table, plot, gallery) of a feature across the training checkpoints (a note when there are none)."""
    if state.evolution is None:
        return pd.DataFrame([{"checkpoint": "no evolution/progress_* checkpoints next to this model"}]), None, []
    headers, rows = state.evolution.table(feature)
    gallery = []
    for view in state.evolution.checkpoints:
        if view.atlas is not None:
            gallery += [(state.thumb(r), f"{view.name} · {a:.2f}") for r, a in view.atlas.top(feature, 3)]
    return pd.DataFrame(rows, columns=headers), state.evolution.plot(feature), gallery
