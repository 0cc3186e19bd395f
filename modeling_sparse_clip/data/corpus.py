"""Merge the per-source datasets into one corpus with deterministic train / validation / test splits.

- identical images (same PNG bytes) are merged across and within sources; their captions are unioned;
- the split of a row is a function of its split key alone (a hash of the image bytes, or of the code
  points for emoji), so it never depends on which sources or caps were chosen: a test image is never
  in any corpus's train split, and the held-out evaluation sets are drawn from the test split;
- Fashion-MNIST *test* images (an evaluation set) are removed wherever they appear in the corpus;
- the result is cached with `save_to_disk` under a fingerprint of every source's version and the
  settings: a rebuild with nothing changed loads it back and renders nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import datasets
from filelock import FileLock

from ..atomic import atomic_dir
from ..constants import DATA_CACHE_DIR
from .sources import (
    BUILDER_VERSION,
    SOURCES,
    build_source_dataset,
    data_digest,
    fashion_mnist_png,
    image_hash,
    read_fashion_mnist,
    source_fingerprint,
)

logger = logging.getLogger(__name__)

CORPUS_COLUMNS = ["image", "text", "source", "license", "label"]
SPLIT_FRACTIONS = {"train": 0.80, "validation": 0.05, "test": 0.15}
# Fashion-MNIST has 60K training images of 10 classes: more would drown the other sources.
DEFAULT_MAX_PER_SOURCE: dict[str, int | None] = {"fashion_mnist": 5000}


def column_values(dataset: datasets.Dataset, name: str) -> list:
    """A column as a plain Python list (datasets 5's lazy `dataset[name]` costs a table slice per index)."""
    if len(dataset) == 0:
        return []
    return dataset.select_columns([name]).to_dict()[name]


def split_of(split_key: str, fractions: dict[str, float] = SPLIT_FRACTIONS) -> str:
    """The split a key belongs to: a uniform number from its SHA-256, cut by the fractions."""
    u = int.from_bytes(hashlib.sha256(f"split:{split_key}".encode()).digest()[:8], "big") / 2**64
    cumulative = 0.0
    for split, fraction in fractions.items():
        cumulative += fraction
        if u < cumulative:
            return split
    return list(fractions)[-1]


def resolve_limits(max_per_source: None | int | dict, names: list[str]) -> dict[str, int | None]:
    """None -> the defaults; int -> that cap on every source; dict -> overrides of the defaults."""
    if max_per_source is None:
        overrides: dict = {}
    elif isinstance(max_per_source, int):
        return {name: max_per_source for name in names}
    elif isinstance(max_per_source, dict):
        unknown = set(max_per_source) - set(SOURCES)
        if unknown:
            raise ValueError(f"max_per_source names unknown sources {sorted(unknown)}; known: {sorted(SOURCES)}")
        overrides = max_per_source
    else:
        raise TypeError(f"max_per_source must be None, an int or a dict of source -> int, not {type(max_per_source).__name__}")
    return {name: overrides.get(name, DEFAULT_MAX_PER_SOURCE.get(name)) for name in names}


def fashion_mnist_test_hashes() -> set[str]:
    images, _ = read_fashion_mnist("test")
    return {image_hash(fashion_mnist_png(pixels)) for pixels in images}


def _available_sources(names: list[str], cache_dir) -> list[str]:
    available = []
    for name in names:
        hint = SOURCES[name].missing(cache_dir)
        if hint is None:
            available.append(name)
        else:
            logger.warning("%s: not installed; %s", name, hint)
    return available


def corpus_report(corpus: datasets.DatasetDict) -> dict[str, dict[str, int]]:
    """{source: {split: rows, ..., "total": rows}} read from the `source` columns."""
    report: dict[str, dict[str, int]] = {}
    for split, dataset in corpus.items():
        for source in column_values(dataset, "source"):
            counts = report.setdefault(source, {s: 0 for s in corpus})
            counts[split] += 1
    for counts in report.values():
        counts["total"] = sum(counts[s] for s in corpus)
    return report


def format_report(report: dict[str, dict[str, int]]) -> str:
    splits = [k for k in next(iter(report.values()), {}) if k != "total"]
    lines = [f"{'source':<16}" + "".join(f"{s:>12}" for s in [*splits, "total"])]
    for source, counts in report.items():
        lines.append(f"{source:<16}" + "".join(f"{counts[s]:>12}" for s in [*splits, "total"]))
    totals = {s: sum(c[s] for c in report.values()) for s in [*splits, "total"]}
    lines.append(f"{'all':<16}" + "".join(f"{totals[s]:>12}" for s in [*splits, "total"]))
    return "\n".join(lines)


def _merge(builds: list[datasets.Dataset], reserved_hashes: set[str]) -> tuple[datasets.Dataset, dict[str, int]]:
    """Concatenate, drop reserved images, merge duplicates (first occurrence wins, captions unioned)."""
    merged = datasets.concatenate_datasets(builds)
    hashes = column_values(merged, "image_hash")
    texts = column_values(merged, "text")
    first: dict[str, int] = {}
    keep: list[int] = []
    union: dict[int, list[str]] = {}
    stats = {"duplicates": 0, "reserved": 0}
    for index, digest in enumerate(hashes):
        if digest in reserved_hashes:
            stats["reserved"] += 1
            continue
        if digest in first:
            stats["duplicates"] += 1
            kept = first[digest]
            union.setdefault(kept, list(texts[kept]))
            union[kept].extend(t for t in texts[index] if t not in union[kept])
            continue
        first[digest] = index
        keep.append(index)
    if union:
        new_text = [union.get(i, texts[i]) for i in range(len(texts))]
        merged = merged.remove_columns("text").add_column("text", new_text, feature=datasets.Sequence(datasets.Value("string")))
    return merged.select(keep), stats


def build_corpus(
    cache_dir: str | os.PathLike = DATA_CACHE_DIR,
    max_per_source: None | int | dict = None,
    sources: list[str] | None = None,
) -> datasets.DatasetDict:
    """The embedded image–text corpus: a DatasetDict with train / validation / test.

    Columns: image (PIL RGB, <= 224 px a side), text (list of normalised captions), source, license,
    label ("" when the source has none). Missing sources are skipped with one log line each.
    """
    names = list(SOURCES) if sources is None else list(sources)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown sources {unknown}; known: {list(SOURCES)}")
    limits = resolve_limits(max_per_source, names)
    names = _available_sources(names, cache_dir)
    if not names:
        raise FileNotFoundError("no data source is installed: run `make sources` (python .ci/install_sources.py)")

    fingerprints = {name: source_fingerprint(SOURCES[name], cache_dir, limits[name]) for name in names}
    fingerprint = data_digest("corpus", BUILDER_VERSION, fingerprints, SPLIT_FRACTIONS)
    path = Path(cache_dir) / f"corpus-{fingerprint}"
    if not (path / "dataset_dict.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):  # concurrent builders: one builds, the others wait for it
            if not (path / "dataset_dict.json").exists():
                return _build_and_save(names, limits, cache_dir, fingerprints, fingerprint, path)
    corpus = datasets.load_from_disk(str(path))
    logger.info("corpus %s loaded from cache %s\n%s", fingerprint, path, format_report(corpus_report(corpus)))
    return corpus


def _build_and_save(names, limits, cache_dir, fingerprints, fingerprint, path: Path) -> datasets.DatasetDict:
    start = time.perf_counter()
    builds = [build_source_dataset(name, cache_dir, limits[name]).dataset for name in names]
    reserved = fashion_mnist_test_hashes() if SOURCES["fashion_mnist"].missing(cache_dir) is None else set()
    merged, stats = _merge(builds, reserved)
    splits = [split_of(key) for key in column_values(merged, "split_key")]
    corpus = datasets.DatasetDict(
        {
            split: merged.select([i for i, s in enumerate(splits) if s == split]).select_columns(CORPUS_COLUMNS)
            for split in SPLIT_FRACTIONS
        }
    )
    with atomic_dir(path) as tmp:
        # an explicit shard count: datasets 5.2 cannot load back an empty split saved with its default of 0 shards
        corpus.save_to_disk(str(tmp), num_shards={split: max(1, len(d) // 20000) for split, d in corpus.items()})
        report = corpus_report(corpus)
        seconds = time.perf_counter() - start
        (tmp / "build_report.json").write_text(
            json.dumps({"fingerprint": fingerprint, "sources": fingerprints, "limits": limits, "merge": stats,
                        "seconds": round(seconds, 1), "counts": report}, indent=2)
        )
    logger.info(
        "corpus %s built in %.0fs (%d duplicate images merged, %d Fashion-MNIST test images removed)\n%s",
        fingerprint, seconds, stats["duplicates"], stats["reserved"], format_report(report),
    )
    return datasets.load_from_disk(str(path))
