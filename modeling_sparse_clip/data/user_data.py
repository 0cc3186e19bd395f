"""Users' own image–text data, in the three shapes CLIP data ships in, as `image` + `text` columns.

- an image folder with `captions.csv` / `captions.jsonl` (or the `metadata.*` names of HF imagefolder):
  rows of `file_name` and the caption column;
- any `load_dataset` id or local dataset path (also `save_to_disk` folders) with image and text columns;
- WebDataset tar shards (`shards/*.tar`, `shards-{000..009}.tar`), read as a stream: a sample is the
  files sharing a key (`000123.jpg` + `000123.txt` / `.json`).

The result always has `image` (datasets.Image) and `text` (list of normalised captions). A corrupt
image or a row without a caption is logged (logger.warning, with the file / shard and row / key) and
skipped, never silently.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from .captions import normalize_captions

logger = logging.getLogger(__name__)

CAPTION_FILES = ("captions.csv", "captions.jsonl", "metadata.csv", "metadata.jsonl")
FILE_NAME_COLUMNS = ("file_name", "image", "file", "path")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm")
TEXT_EXTENSIONS = ("txt", "text", "caption", "json")
OUTPUT_FEATURES = datasets.Features({"image": datasets.Image(), "text": datasets.Sequence(datasets.Value("string"))})


def check_image(data: bytes | None = None, path: str | os.PathLike | None = None) -> str | None:
    """None when the image decodes fully, else why not (truncated / not an image / missing)."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                return "empty image"
    except FileNotFoundError:
        return "file not found"
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for bad files; all mean "skip"
        return f"unreadable image ({type(error).__name__}: {error})"
    return None


def _captions_of(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return normalize_captions([v for v in value if isinstance(v, str)])
    return normalize_captions(value if isinstance(value, str) else None)


# ----------------------------------------------------------------------------------------------
# image folder + captions file


def _caption_rows(captions_file: Path) -> Iterator[tuple[str, dict]]:
    """(location, row) for every row of a captions file; location = `file:line`."""
    with open(captions_file, encoding="utf-8", newline="") as f:
        if captions_file.suffix == ".csv":
            reader = csv.DictReader(f)
            for row in reader:
                yield f"{captions_file}:{reader.line_num}", row
            return
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                logger.warning("%s:%d: skipped, not JSON (%s)", captions_file, line_number, error)
                continue
            yield f"{captions_file}:{line_number}", row


def _iter_image_folder(folder: str, text_column: str) -> Iterator[dict]:
    folder_path = Path(folder)
    captions_file = next((folder_path / n for n in CAPTION_FILES if (folder_path / n).exists()), None)
    if captions_file is None:
        raise FileNotFoundError(f"{folder} has no captions file: add one of {', '.join(CAPTION_FILES)} with file_name and text columns")
    rows = _caption_rows(captions_file)
    for location, row in rows:
        file_name = next((row[c] for c in FILE_NAME_COLUMNS if row.get(c)), None)
        if not file_name:
            logger.warning("%s: skipped, no file_name", location)
            continue
        captions = _captions_of(row.get(text_column, row.get("caption")))
        if not captions:
            logger.warning("%s: skipped %s, no caption", location, file_name)
            continue
        image_path = folder_path / file_name
        problem = check_image(path=image_path)
        if problem:
            logger.warning("%s: skipped %s, %s", location, image_path, problem)
            continue
        yield {"image": {"path": str(image_path), "bytes": None}, "text": captions}


# ----------------------------------------------------------------------------------------------
# WebDataset tar shards


def expand_shards(spec: str) -> list[str]:
    """`dir/*.tar`, `shard-{000..009}.tar`, or several joined by `::` -> existing shard paths."""
    from braceexpand import braceexpand

    shards: list[str] = []
    for part in spec.split("::"):
        for pattern in braceexpand(part):
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            shards += matches
    missing = [s for s in shards if not os.path.exists(s)]
    if missing:
        raise FileNotFoundError(f"WebDataset shards not found: {missing[:5]}")
    if not shards:
        raise FileNotFoundError(f"no WebDataset shards match {spec!r}")
    return shards


def _split_member_name(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is everything before the first dot of the basename."""
    directory, _, base = name.rpartition("/")
    key, _, extension = base.partition(".")
    return (f"{directory}/{key}" if directory else key), extension.lower()


def _sample_to_row(shard: str, key: str, files: dict[str, bytes], image_column: str, text_column: str) -> dict | None:
    image_ext = image_column if image_column in files else next((e for e in IMAGE_EXTENSIONS if e in files), None)
    text_ext = text_column if text_column in files else next((e for e in TEXT_EXTENSIONS if e in files), None)
    if image_ext is None:
        logger.warning("%s: sample %s skipped, no image file (has: %s)", shard, key, ", ".join(sorted(files)))
        return None
    captions: list[str] = []
    if text_ext is not None:
        raw = files[text_ext].decode("utf-8", errors="replace")
        if text_ext == "json":
            try:
                meta = json.loads(raw)
            except json.JSONDecodeError:
                meta = {}
            value = meta.get(text_column, meta.get("caption", meta.get("text"))) if isinstance(meta, dict) else None
            captions = _captions_of(value)
        else:
            captions = _captions_of(raw)
    if not captions:
        logger.warning("%s: sample %s skipped, no caption", shard, key)
        return None
    problem = check_image(data=files[image_ext])
    if problem:
        logger.warning("%s: sample %s skipped, %s", shard, key, problem)
        return None
    return {"image": {"bytes": files[image_ext], "path": None}, "text": captions}


def iter_webdataset(shards: list[str], image_column: str = "image", text_column: str = "text") -> Iterator[dict]:
    """Stream rows from tar shards in order (a generator for datasets' from_generator: `shards` is sharded)."""
    for shard in shards:
        key, files = None, {}
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    member_key, extension = _split_member_name(member.name)
                    if member_key != key and key is not None:
                        row = _sample_to_row(shard, key, files, image_column, text_column)
                        if row is not None:
                            yield row
                        files = {}
                    key = member_key
                    files[extension] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as error:
            logger.warning("%s: shard unreadable after sample %s (%s); rest of the shard skipped", shard, key, error)
            continue
        if key is not None:
            row = _sample_to_row(shard, key, files, image_column, text_column)
            if row is not None:
                yield row


def _shards_fingerprint(shards: list[str], image_column: str, text_column: str) -> str:
    stats = [(s, os.path.getsize(s), os.path.getmtime(s)) for s in shards]
    return hashlib.sha256(json.dumps([stats, image_column, text_column]).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# load_dataset ids and local dataset folders


def _is_saved_dataset(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json"))


def _validate_hub_dataset(dataset, spec: str, image_column: str, text_column: str):
    columns = dataset.column_names or list((dataset.features or {}).keys())
    missing = [c for c in (image_column, text_column) if c not in columns]
    if columns and missing:  # a stream without declared features is checked row by row instead
        raise ValueError(f"{spec}: no column {missing} (columns: {columns}); pass image_column= / text_column=")
    if dataset.features is not None and isinstance(dataset.features.get(image_column), datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))

    def keep(row: dict, index: int) -> bool:
        if not _captions_of(row.get(text_column)):
            logger.warning("%s: row %d skipped, no caption", spec, index)
            return False
        value = row.get(image_column)
        if isinstance(value, dict):
            problem = check_image(data=value.get("bytes"), path=value.get("path")) if (value.get("bytes") or value.get("path")) else "no image"
        elif isinstance(value, str):
            problem = check_image(path=value)
        elif isinstance(value, Image.Image):
            problem = None
        else:
            problem = "no image"
        if problem:
            logger.warning("%s: row %d skipped, %s", spec, index, problem)
            return False
        return True

    def to_output(row: dict) -> dict:
        return {"text": _captions_of(row[text_column])}

    is_iterable = isinstance(dataset, datasets.IterableDataset)
    filter_kwargs = {} if is_iterable else {"load_from_cache_file": False, "desc": "check images and captions"}
    dataset = dataset.filter(keep, with_indices=True, **filter_kwargs)
    if text_column != "text":
        dataset = dataset.map(to_output, remove_columns=[text_column], **({} if is_iterable else {"desc": "normalise captions"}))
    else:
        dataset = dataset.map(to_output, **({} if is_iterable else {"load_from_cache_file": False}))
    if image_column != "image":
        dataset = dataset.rename_column(image_column, "image")
    extra = [c for c in (dataset.column_names or []) if c not in ("image", "text")]
    if extra:
        dataset = dataset.remove_columns(extra)
    return dataset.cast(OUTPUT_FEATURES)


# ----------------------------------------------------------------------------------------------


def load_image_text_dataset(
    spec: str | os.PathLike,
    image_column: str = "image",
    text_column: str = "text",
    streaming: bool = False,
    split: str = "train",
) -> datasets.Dataset | datasets.IterableDataset:
    """Load users' image–text data (see the module docstring for the accepted shapes)."""
    spec = str(spec)
    if ".tar" in spec:
        shards = expand_shards(spec)
        gen_kwargs = {"shards": shards, "image_column": image_column, "text_column": text_column}
        if streaming:
            return datasets.IterableDataset.from_generator(iter_webdataset, features=OUTPUT_FEATURES, gen_kwargs=gen_kwargs)
        return datasets.Dataset.from_generator(
            iter_webdataset, features=OUTPUT_FEATURES, gen_kwargs=gen_kwargs,
            fingerprint=_shards_fingerprint(shards, image_column, text_column),
        )
    if os.path.isdir(spec) and any(os.path.exists(os.path.join(spec, n)) for n in CAPTION_FILES):
        if streaming:
            return datasets.IterableDataset.from_generator(
                _iter_image_folder, features=OUTPUT_FEATURES, gen_kwargs={"folder": spec, "text_column": text_column}
            )
        rows = list(_iter_image_folder(spec, text_column))
        return datasets.Dataset.from_dict(
            {"image": [r["image"] for r in rows], "text": [r["text"] for r in rows]}, features=OUTPUT_FEATURES
        )
    if _is_saved_dataset(spec):
        dataset = datasets.load_from_disk(spec)
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]
        if streaming:
            dataset = dataset.to_iterable_dataset()
    else:
        dataset = datasets.load_dataset(spec, split=split, streaming=streaming)
    return _validate_hub_dataset(dataset, spec, image_column, text_column)
