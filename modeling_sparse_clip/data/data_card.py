"""A Markdown data card for the embedded corpus and its evaluation sets: counts, sizes, licences and
the attributions that the CC-BY (game-icons.net) and CC-BY-SA (OpenMoji) licences require."""

from __future__ import annotations

import io
import os
from collections import defaultdict
from pathlib import Path

import datasets
from PIL import Image

from ..atomic import atomic_write_text
from .corpus import SPLIT_FRACTIONS, corpus_report
from .eval_sets import EvalSet
from .sources import MAX_SIDE, SOURCES


def _image_stats(corpus: datasets.DatasetDict) -> dict[str, dict]:
    """Per source: total PNG bytes and the smallest / largest image side, read from the PNG headers."""
    stats: dict[str, dict] = defaultdict(lambda: {"bytes": 0, "min_side": 10**9, "max_side": 0, "sizes": set()})
    for split in corpus.values():
        raw = split.select_columns(["image", "source"]).cast_column("image", datasets.Image(decode=False))
        for batch in raw.iter(batch_size=1000):
            for image, source in zip(batch["image"], batch["source"]):
                data = image["bytes"]
                if data[:8] == b"\x89PNG\r\n\x1a\n":
                    size = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
                else:
                    size = Image.open(io.BytesIO(data)).size
                entry = stats[source]
                entry["bytes"] += len(data)
                entry["min_side"] = min(entry["min_side"], *size)
                entry["max_side"] = max(entry["max_side"], *size)
                if len(entry["sizes"]) < 4:
                    entry["sizes"].add(f"{size[0]}x{size[1]}")
    return stats


def render_data_card(corpus: datasets.DatasetDict, eval_sets: dict[str, EvalSet] | None = None) -> str:
    report = corpus_report(corpus)
    stats = _image_stats(corpus)
    splits = list(corpus)
    lines = [
        "# Data card: sparse-clip embedded corpus",
        "",
        "Real image–text pairs built offline from installed packages (`make sources`), with no download at run time.",
        "Built by `modeling_sparse_clip.data.build_corpus`: each source is rendered to RGB PNG (transparent art flattened "
        f"on white, at most {MAX_SIDE} px a side), captions are normalised (NFKC, lower case, `_` to space, empty and "
        "duplicate captions dropped), identical images are merged (captions unioned), and rows are split "
        + " / ".join(f"{s} {f:.0%}" for s, f in SPLIT_FRACTIONS.items())
        + " by a hash of the image bytes (emoji: of their code points, so every rendering and skin tone of one emoji "
        "is on the same side). Fashion-MNIST test images are removed from the corpus (they are an evaluation set).",
        "",
        "## Sources",
        "",
        "| source | what | licence | " + " | ".join(splits) + " | total | image sides (px) | size (MB) |",
        "|---|---|---|" + "---|" * len(splits) + "---|---|---|",
    ]
    for name, counts in report.items():
        source = SOURCES.get(name)
        entry = stats[name]
        sides = f"{entry['min_side']}–{entry['max_side']}" if entry["min_side"] != entry["max_side"] else str(entry["max_side"])
        lines.append(
            f"| {name} | {source.description if source else ''} | {source.license if source else ''} | "
            + " | ".join(f"{counts[s]:,}" for s in splits)
            + f" | {counts['total']:,} | {sides} | {entry['bytes'] / 2**20:.1f} |"
        )
    totals = {s: sum(c[s] for c in report.values()) for s in [*splits, "total"]}
    total_mb = sum(e["bytes"] for e in stats.values()) / 2**20
    lines.append("| **all** | | | " + " | ".join(f"**{totals[s]:,}**" for s in splits) + f" | **{totals['total']:,}** | | {total_mb:.1f} |")
    missing = [n for n in SOURCES if n not in report]
    if missing:
        lines += ["", f"Not installed when this card was written (skipped): {', '.join(missing)}."]

    if eval_sets:
        lines += [
            "",
            "## Evaluation sets",
            "",
            "All held out of the training split (disjoint by image hash): the Fashion-MNIST set is its real test split, "
            "the others are drawn from the corpus's test split.",
            "",
            "| name | task | images | classes | prompt templates |",
            "|---|---|---|---|---|",
        ]
        for name, eval_set in eval_sets.items():
            classes = len(eval_set.class_names) if eval_set.class_names else "–"
            templates = "; ".join(f"`{t}`" for t in eval_set.templates) if eval_set.templates else "– (own captions)"
            lines.append(f"| {name} | {eval_set.task} | {len(eval_set.dataset):,} | {classes} | {templates} |")

    lines += ["", "## Licences and attribution", ""]
    for name in report:
        source = SOURCES.get(name)
        if source is None:
            continue
        lines.append(f"- **{name}** ({source.license}). {source.attribution}".rstrip())
    lines += [
        "",
        "CC BY 3.0 (game-icons.net) and CC BY-SA 4.0 (OpenMoji) require this attribution wherever the images or "
        "derivatives are redistributed; OpenMoji derivatives must stay under CC BY-SA 4.0.",
        "",
    ]
    return "\n".join(lines)


def write_data_card(corpus: datasets.DatasetDict, eval_sets: dict[str, EvalSet] | None, path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write_text(path, render_data_card(corpus, eval_sets))
    return path
