"""Concept evolution: the same labels and atlas on training checkpoints (1%, 3%, 10%, 30%, 100%).

Feature i of every checkpoint is the same row of the same projection, trained further, so a
feature can be followed through training: when its top words settle, when it starts to fire on
images, whether it is multimodal from the start. Checkpoints that share frozen towers reuse the
tower outputs (the encoder's tower cache is keyed by the tower, not the head), so each extra
checkpoint costs only its projection.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from modeling_sparse_clip.constants import FEATURE_CACHE_DIR
from modeling_sparse_clip.encoding import SparseCLIPEncoder

from .concept_labels import ConceptLabels, load_or_compute_concept_labels
from .feature_atlas import FeatureAtlas, load_or_build_feature_atlas

_PROGRESS = re.compile(r"progress_(\d+)")


def discover_checkpoints(model_dir: str | Path) -> list[tuple[str, Path]]:
    """(name, folder) of `<model_dir>/evolution/progress_NNN` in training order; NNN is percent."""
    root = Path(model_dir) / "evolution"
    found = []
    for folder in root.glob("progress_*") if root.is_dir() else []:
        match = _PROGRESS.fullmatch(folder.name)
        if match and (folder / "config.json").exists():
            found.append((int(match.group(1)), folder))
    return [(f"{pct}%", folder) for pct, folder in sorted(found)]


@dataclass
class CheckpointView:
    name: str
    path: Path
    labels: ConceptLabels
    atlas: FeatureAtlas | None


class ConceptEvolution:
    """Labels (and atlases) of each checkpoint, and per-feature histories across them."""

    def __init__(self, checkpoints: list[CheckpointView]):
        if not checkpoints:
            raise ValueError("No checkpoints: concept evolution needs the `evolution/progress_*` folders of a training run.")
        self.checkpoints = checkpoints

    @classmethod
    def build(
        cls,
        checkpoints: Sequence[tuple[str, str | Path]],
        vocabulary: Sequence[str],
        images: Sequence | None = None,
        image_ids: Sequence[str] | None = None,
        captions: Sequence[str] | None = None,
        source: str = "",
        cache_dir: str | Path | None = FEATURE_CACHE_DIR,
        top_k: int = 20,
        progress: bool = True,
    ) -> "ConceptEvolution":
        """Compute (or load from each checkpoint's cache) labels and, given images, an atlas.
        `cache_dir` holds the shared tower outputs (and the labels/atlases of read-only checkpoints)."""
        views = []
        for name, path in checkpoints:
            encoder = SparseCLIPEncoder.from_pretrained(path, name=name, cache_dir=cache_dir, progress=progress)
            labels = load_or_compute_concept_labels(encoder, vocabulary, model_dir=path, cache_dir=cache_dir, top_k=top_k)
            atlas = None
            if images is not None:
                atlas = load_or_build_feature_atlas(encoder, images, image_ids, captions, model_dir=path, cache_dir=cache_dir, source=source)
            views.append(CheckpointView(name, Path(path), labels, atlas))
            del encoder
            gc.collect()
        return cls(views)

    @classmethod
    def from_model_dir(cls, model_dir, vocabulary, **kwargs) -> "ConceptEvolution":
        checkpoints = discover_checkpoints(model_dir)
        if not checkpoints:
            raise FileNotFoundError(f"No {Path(model_dir) / 'evolution'}/progress_* checkpoints: train with evolution checkpoints first.")
        return cls.build(checkpoints, vocabulary, **kwargs)

    @property
    def names(self) -> list[str]:
        return [view.name for view in self.checkpoints]

    def history(self, feature: int, n_words: int = 5, n_images: int = 4) -> list[dict]:
        """One row per checkpoint: top words, top image rows, density, modality, and how many of
        the top words it shares with the final checkpoint."""
        final_words = {w for w, _ in self.checkpoints[-1].labels.words(feature, n_words)}
        rows = []
        for view in self.checkpoints:
            words = view.labels.words(feature, n_words)
            row = {
                "checkpoint": view.name,
                "top_words": [w for w, _ in words],
                "top_word_scores": [s for _, s in words],
                "overlap_with_final": len(final_words & {w for w, _ in words}) / max(len(final_words), 1),
                "top_images": [],
                "density": None,
                "modality": None,
            }
            if view.atlas is not None:
                summary = view.atlas.summary(feature)
                row.update(top_images=[r for r, _ in view.atlas.top(feature, n_images)], density=summary["density"], modality=summary["modality"])
            rows.append(row)
        return rows

    def table(self, feature: int, n_words: int = 5) -> tuple[list[str], list[list]]:
        """(headers, rows) of `history`, ready for a Markdown or Gradio table."""
        headers = ["checkpoint", "top words", "overlap with final", "density", "modality"]
        rows = []
        for row in self.history(feature, n_words):
            rows.append([
                row["checkpoint"],
                ", ".join(row["top_words"]) or "(none)",
                f"{row['overlap_with_final']:.0%}",
                "-" if row["density"] is None else f"{row['density']:.2%}",
                "-" if row["modality"] is None else f"{row['modality']:.2f}",
            ])
        return headers, rows

    def plot(self, feature: int):
        """A matplotlib Figure: density, modality and word overlap with the final labels per checkpoint,
        each point annotated with the checkpoint's top word."""
        from matplotlib.figure import Figure

        history = self.history(feature, n_words=5)
        x = np.arange(len(history))
        fig = Figure(figsize=(7, 3.2), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        overlap = [r["overlap_with_final"] for r in history]
        ax.plot(x, overlap, "o-", label="top-5 words shared with final")
        if any(r["modality"] is not None for r in history):
            ax.plot(x, [np.nan if r["modality"] is None else r["modality"] for r in history], "s--", label="modality (img share)")
        if any(r["density"] is not None for r in history):
            dens = np.array([np.nan if r["density"] is None else r["density"] for r in history])
            peak = np.nanmax(dens) if np.isfinite(dens).any() and np.nanmax(dens) > 0 else 1.0
            ax.plot(x, dens / peak, "^:", label=f"density / {peak:.2%}")
        for xi, row in zip(x, history):
            ax.annotate(row["top_words"][0] if row["top_words"] else "-", (xi, overlap[xi]), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
        ax.set_xticks(x, [r["checkpoint"] for r in history])
        ax.set_ylim(-0.05, 1.2)
        ax.set_xlabel("training progress")
        ax.set_title(f"feature {feature} across training")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        return fig
