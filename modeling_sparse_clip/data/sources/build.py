"""One source -> a cached `datasets.Dataset` of canonical PNGs and normalised captions."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import PIL
from filelock import FileLock
from tqdm.auto import tqdm

from ...atomic import atomic_dir
from ...constants import DATA_CACHE_DIR
from ..captions import normalize_captions
from .base import MAX_SIDE, Source, SourceItem, image_hash
from .registry import SOURCES

logger = logging.getLogger(__name__)

# Bump when a builder's output changes for the same inputs: it is part of every cache fingerprint.
BUILDER_VERSION = "2"

SOURCE_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "text": datasets.Sequence(datasets.Value("string")),
        "source": datasets.Value("string"),
        "license": datasets.Value("string"),
        "label": datasets.Value("string"),
        # internal: what the split is hashed from, and the hash of the PNG bytes (dedupe, disjointness)
        "split_key": datasets.Value("string"),
        "image_hash": datasets.Value("string"),
    }
)


def data_digest(*parts: Any) -> str:
    """The name of a source or corpus cache: a hash of the versions and settings that made it.

    Not `caching.fingerprint`: these names are computed from versions alone (no data is read), and
    changing the hash would orphan every corpus already built.
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_fingerprint(source: Source, cache_dir: str | os.PathLike, limit: int | None) -> str:
    return data_digest(source.name, BUILDER_VERSION, source.version(cache_dir), limit, PIL.__version__, MAX_SIDE)


def subsample_items(items: list[SourceItem], limit: int | None) -> list[SourceItem]:
    """A deterministic, split-independent subset (ranked by a hash of the uid, kept in source order)."""
    if limit is None or len(items) <= limit:
        return items
    ranked = sorted(range(len(items)), key=lambda i: hashlib.sha256(f"subsample:{items[i].uid}".encode()).digest())
    keep = sorted(ranked[:limit])
    return [items[i] for i in keep]


@dataclass
class SourceBuild:
    dataset: datasets.Dataset
    fingerprint: str
    seconds: float = 0.0
    cached: bool = True
    dropped_empty: int = 0


def build_source_dataset(source: Source | str, cache_dir: str | os.PathLike = DATA_CACHE_DIR, limit: int | None = None) -> SourceBuild:
    """Render one installed source into a Dataset (cached under `<cache_dir>/sources/<name>-<fingerprint>`)."""
    source = SOURCES[source] if isinstance(source, str) else source
    hint = source.missing(cache_dir)
    if hint is not None:
        raise FileNotFoundError(f"{source.name}: not installed; {hint}")
    fingerprint = source_fingerprint(source, cache_dir, limit)
    path = Path(cache_dir) / "sources" / f"{source.name}-{fingerprint}"
    if (path / "dataset_info.json").exists():
        return SourceBuild(datasets.load_from_disk(str(path)), fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (a training run and its tests) may build the same cache at once: one builds,
    # the others wait and load its result.
    with FileLock(str(path) + ".lock"):
        if (path / "dataset_info.json").exists():
            return SourceBuild(datasets.load_from_disk(str(path)), fingerprint)
        return _build_source_dataset(source, cache_dir, limit, fingerprint, path)


def _build_source_dataset(source: Source, cache_dir, limit: int | None, fingerprint: str, path: Path) -> SourceBuild:
    start = time.perf_counter()
    items = subsample_items(source.items(cache_dir), limit)
    columns: dict[str, list] = {name: [] for name in SOURCE_FEATURES}
    dropped_empty = 0
    rendered = source.render(items, cache_dir)
    skipped = 0
    for item, png in tqdm(zip(items, rendered), total=len(items), desc=f"render {source.name}", mininterval=2):
        if png is None:
            skipped += 1
            continue
        captions = normalize_captions(item.captions)
        if not captions:
            dropped_empty += 1
            continue
        digest = image_hash(png)
        columns["image"].append({"bytes": png, "path": None})
        columns["text"].append(captions)
        columns["source"].append(source.name)
        columns["license"].append(source.license)
        columns["label"].append(item.label or "")
        columns["split_key"].append(item.split_key or f"image:{digest}")
        columns["image_hash"].append(digest)
    if skipped:
        logger.warning("%s: skipped %d unreadable or degenerate images", source.name, skipped)
    if dropped_empty:
        logger.warning("%s: dropped %d items with no caption left after normalisation", source.name, dropped_empty)
    dataset = datasets.Dataset.from_dict(columns, features=SOURCE_FEATURES)
    with atomic_dir(path) as tmp:
        dataset.save_to_disk(str(tmp))
    seconds = time.perf_counter() - start
    logger.info("%s: built %d images in %.1fs", source.name, len(dataset), seconds)
    return SourceBuild(datasets.load_from_disk(str(path)), fingerprint, seconds, cached=False, dropped_empty=dropped_empty)
