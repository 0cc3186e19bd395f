"""The Space's caches, built once with the model and shipped inside it: `<model>/space_cache/`.

Computing the concept labels (the whole vocabulary through the text tower), the feature atlas and the
evolution checkpoints' labels and atlases takes minutes to tens of minutes on a CPU; built at the end of
training (or before publishing) they travel with the model folder and its Hub repo, so a Space reads
them in seconds. The folder holds:

    space.json                           the manifest: model fingerprint, the files below, the image list
    concept_labels_<key>.safetensors     top vocabulary words per feature (the vocabulary in its metadata)
    atlas_<key>.safetensors              top images, densities, modality scores over the image set
    images/00000.png ...                 the atlas and gallery images (RGB, as the model read them)
    ...                                  the same labels/atlas files of each `evolution/progress_*` checkpoint

    build_space_cache("outputs/embedded/sparse")            # default: corpus test split, paper vocabulary
    cache = load_space_cache("outputs/embedded/sparse")     # None when absent or built for other weights

The default image set is spread over sources and classes (`spread_rows`), so galleries show the range
of what the model knows rather than the first rows of one source.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from modeling_sparse_clip.atomic import atomic_file, atomic_write_text
from modeling_sparse_clip.caching import TensorCache, fingerprint
from modeling_sparse_clip.constants import DATA_CACHE_DIR, FEATURE_CACHE_DIR
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.images import open_image, to_rgb

from .concept_evolution import CheckpointView, ConceptEvolution, discover_checkpoints
from .concept_labels import LABELS_KIND, SPACE_CACHE_DIR, ConceptLabels, cached_file, compute_concept_labels, labels_key
from .feature_atlas import ATLAS_KIND, DatasetImages, FeatureAtlas, atlas_key, build_feature_atlas

log = logging.getLogger(__name__)

MANIFEST = "space.json"
FORMAT = "sparse-clip-space-cache"
DEFAULT_MAX_IMAGES = 1500
# progress(stage, done, total): the Space's start-up page shows it
Progress = Callable[[str, int, int], None]


def spread_rows(groups: Sequence[Sequence[str]], n: int) -> list[int]:
    """`n` row indices taken round-robin over the first key of `groups` (e.g. the source), and within
    each value round-robin over the second key (e.g. the class), rows in order inside a class."""
    tree: dict[str, dict[str, list[int]]] = {}
    for row, keys in enumerate(groups):
        first, second = (list(keys) + ["", ""])[:2]
        tree.setdefault(first, {}).setdefault(second, []).append(row)

    def inner(classes: dict[str, list[int]]):
        queues = [list(rows) for rows in classes.values()]
        while any(queues):
            for queue in queues:
                if queue:
                    yield queue.pop(0)

    streams = [inner(classes) for classes in tree.values()]
    picked: list[int] = []
    while streams and len(picked) < n:
        alive = []
        for stream in streams:
            row = next(stream, None)
            if row is not None:
                picked.append(row)
                alive.append(stream)
                if len(picked) == n:
                    break
        streams = alive
    return picked


def corpus_image_set(data_cache: str | os.PathLike = DATA_CACHE_DIR, max_images: int = DEFAULT_MAX_IMAGES):
    """(images, ids, captions, groups) from the embedded corpus' test split, spread over sources and classes."""
    from modeling_sparse_clip.data import build_corpus
    from modeling_sparse_clip.data.corpus import column_values

    split = build_corpus(cache_dir=data_cache)["test"]
    sources, labels = column_values(split, "source"), column_values(split, "label")
    rows = spread_rows([(s, str(label)) for s, label in zip(sources, labels)], max_images)
    picked = split.select(rows)
    captions = [t[0] if isinstance(t, list) and t else str(t) for t in column_values(picked, "text")]
    return DatasetImages(picked), [f"test/{r}" for r in rows], captions, [(sources[r], str(labels[r])) for r in rows]


@dataclass
class SpaceCache:
    """What a Space loads: labels, the atlas over `images`, the images' ids/captions/groups, evolution."""

    folder: Path
    labels: ConceptLabels
    atlas: FeatureAtlas
    image_files: list[Path]
    ids: list[str]
    captions: list[str]
    groups: list[list[str]]
    evolution: ConceptEvolution | None
    manifest: dict

    @property
    def vocabulary(self) -> list[str]:
        return self.labels.vocabulary


class FolderImages:
    """A lazy `Sequence[PIL.Image]` over image files, read through the one image path (`open_image`)."""

    def __init__(self, paths):
        self.paths = [Path(p) for p in paths]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):  # the encoder reads a batch as a slice
            return [self[i] for i in range(*index.indices(len(self)))]
        return open_image(self.paths[int(index)])


def default_classes(data_cache: str | os.PathLike = DATA_CACHE_DIR) -> tuple[list[str], list[str], str] | None:
    """(class names, templates, where from) of the emoji subgroups eval set, else the first zero-shot set;
    None when no eval set can be built here."""
    from modeling_sparse_clip.data import load_eval_sets

    try:
        eval_sets = load_eval_sets(cache_dir=data_cache)
    except Exception as error:  # noqa: BLE001  (no sources installed: the Space then needs --classes)
        log.warning("no zero-shot eval set for the Space cache (%s): the Space will need --classes", error)
        return None
    # Emoji subgroups first: the most varied everyday concepts of the embedded sets.
    for eval_set in sorted(eval_sets.values(), key=lambda e: e.name != "emoji_subgroups"):
        if eval_set.task == "zero_shot":
            return list(eval_set.class_names), list(eval_set.templates or ["{}"]), f"the {eval_set.name.replace('_', ' ')} set"
    return None


def writable_cache_folder(model_dir: str | os.PathLike, cache_dir: str | os.PathLike | None, model_fingerprint: str) -> Path:
    """`<model>/space_cache` when the model folder is writable (it travels with the model), else a
    folder of the feature cache named by the model fingerprint (a Hub snapshot, say)."""
    model_dir = Path(model_dir)
    if model_dir.is_dir() and os.access(model_dir, os.W_OK):
        return model_dir / SPACE_CACHE_DIR
    return Path(cache_dir if cache_dir is not None else FEATURE_CACHE_DIR) / SPACE_CACHE_DIR / model_fingerprint


def cache_folders(model_dir: str | os.PathLike, cache_dir: str | os.PathLike | None, model_fingerprint: str) -> list[Path]:
    """Where a Space cache may be, in the order they are read."""
    return list(dict.fromkeys([Path(model_dir) / SPACE_CACHE_DIR, writable_cache_folder(model_dir, cache_dir, model_fingerprint)]))


def build_space_cache(
    model_dir: str | os.PathLike,
    *,
    images: Sequence | None = None,
    ids: Sequence[str] | None = None,
    captions: Sequence[str] | None = None,
    groups: Sequence[Sequence[str]] | None = None,
    vocabulary: Sequence[str] | None = None,
    request: str = "default",
    data_cache: str | os.PathLike = DATA_CACHE_DIR,
    cache_dir: str | os.PathLike | None = FEATURE_CACHE_DIR,
    max_images: int = DEFAULT_MAX_IMAGES,
    evolution: bool = True,
    encoder: SparseCLIPEncoder | None = None,
    progress: Progress | None = None,
    classes: tuple[Sequence[str], Sequence[str], str] | None = None,
) -> Path:
    """Compute labels, atlas and evolution for the model at `model_dir` and write them (with the images)
    to its `space_cache/` (or, read-only model folder, to the feature cache). Returns the folder.

    Defaults: the paper's vocabulary (read from / written to `data_cache`) and `max_images` images of the
    corpus test split spread over sources and classes. `request` names a non-default choice of images or
    vocabulary (the Space passes its `--images_dir` / `--vocabulary`) so that a later start can tell
    whether the cache answers it. Call it at the end of training or before publishing (the model's
    Hub repo then carries it). `classes` = (class names, prompt templates, where they come from) for the
    Steering tab's zero-shot prediction; default: the emoji subgroups eval set (or the first zero-shot
    set) from `data_cache`, stored so that a Space needs no eval-set build either."""
    report = progress or (lambda stage, done, total: None)
    encoder = encoder or SparseCLIPEncoder.from_pretrained(model_dir, cache_dir=cache_dir)
    model_fingerprint = encoder.fingerprint()
    folder = writable_cache_folder(model_dir, cache_dir, model_fingerprint)
    if vocabulary is None:
        from modeling_sparse_clip.data.vocabulary import load_vocabulary

        report("vocabulary", 0, 1)
        vocabulary = load_vocabulary(Path(data_cache) / "vocabulary.txt")
    vocabulary = list(dict.fromkeys(vocabulary))
    if images is None:
        report("images", 0, 1)
        images, ids, captions, groups = corpus_image_set(data_cache, max_images)
    ids = [str(i) for i in (ids if ids is not None else range(len(images)))]
    captions = [str(c) for c in (captions if captions is not None else ids)]
    groups = [list(g) for g in (groups if groups is not None else [[""]] * len(images))]

    # the images themselves travel too: a Space needs no corpus build to show them
    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for row in range(len(images)):
        path = image_dir / f"{row:05d}.png"
        if not path.exists():
            with atomic_file(path) as tmp:
                to_rgb(images[row]).save(tmp, format="PNG")
        files.append(path)
        if row % 100 == 0 or row == len(images) - 1:
            report("images", row + 1, len(images))
    served = FolderImages(files)
    source = f"space_cache:{fingerprint(request, ids)}"

    cache = TensorCache(folder)

    def reuse(kind: str, key: str, path: str) -> bool:
        """True when the file is in `folder` (copied there from the model's other caches if found)."""
        target = cache.path(kind, key)
        if target.exists():
            return True
        found = cached_file(kind, key, path, cache_dir)
        if found is None:
            return False
        with atomic_file(target) as tmp:
            shutil.copyfile(found, tmp)
        return True

    def entry(enc: SparseCLIPEncoder, name: str, path: str, stage: str) -> dict:
        key = labels_key(enc, vocabulary)
        if not reuse(LABELS_KIND, key, path):
            labels = compute_concept_labels(enc, vocabulary, progress=lambda d, t: report(f"{stage}: concept labels", d, t))
            cache.save(LABELS_KIND, key, labels.tensors(), labels.metadata())
        akey = atlas_key(enc, ids, captions, source=source)
        if not reuse(ATLAS_KIND, akey, path):
            atlas = build_feature_atlas(enc, served, ids, captions, source=source, progress=lambda d, t: report(f"{stage}: feature atlas", d, t))
            cache.save(ATLAS_KIND, akey, atlas.tensors(), atlas.metadata())
        return {"name": name, "labels": cache.path(LABELS_KIND, key).name, "atlas": cache.path(ATLAS_KIND, akey).name}

    main = entry(encoder, "final", str(model_dir), "model")
    checkpoints = []
    found = discover_checkpoints(model_dir) if evolution and Path(model_dir).is_dir() else []
    for i, (name, path) in enumerate(found):
        enc = SparseCLIPEncoder.from_pretrained(path, name=name, cache_dir=cache_dir, progress=False)
        checkpoints.append(entry(enc, name, str(path), f"checkpoint {name} ({i + 1}/{len(found)})"))
        del enc
    if classes is None:
        classes = default_classes(data_cache)
    manifest = {
        "classes": None if classes is None else {"names": list(classes[0]), "templates": list(classes[1]), "source": classes[2]},
        "format": FORMAT, "version": 1, "model_fingerprint": model_fingerprint, "request": request,
        "vocabulary_size": len(vocabulary), **{k: main[k] for k in ("labels", "atlas")}, "evolution": checkpoints,
        "images": [{"file": f"images/{p.name}", "id": i, "caption": c, "group": g} for p, i, c, g in zip(files, ids, captions, groups)],
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    report("done", 1, 1)
    log.info("space cache: %d images, %d words, %d checkpoints in %s", len(files), len(vocabulary), len(checkpoints), folder)
    return folder


def load_space_cache(
    model_dir: str | os.PathLike,
    model_fingerprint: str,
    request: str = "default",
    cache_dir: str | os.PathLike | None = FEATURE_CACHE_DIR,
) -> SpaceCache | None:
    """The Space cache of this model (`model_fingerprint`: `SparseCLIPEncoder.fingerprint()`) built for
    `request`, from `cache_folders`; None when there is none or it was built for other weights or inputs."""
    for folder in cache_folders(model_dir, cache_dir, model_fingerprint):
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            continue
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            log.warning("unreadable %s: ignored", manifest_path)
            continue
        if manifest.get("format") != FORMAT or manifest.get("model_fingerprint") != model_fingerprint or manifest.get("request") != request:
            log.info("%s was built for other weights or inputs: ignored", manifest_path)
            continue
        needed = [manifest["labels"], manifest["atlas"], *(f for c in manifest["evolution"] for f in (c["labels"], c["atlas"]))]
        if not all((folder / name).is_file() for name in needed) or not all((folder / im["file"]).is_file() for im in manifest["images"]):
            log.warning("%s lists files that are missing: ignored", manifest_path)
            continue
        evolution = None
        if manifest["evolution"]:
            evolution = ConceptEvolution([
                CheckpointView(c["name"], folder, ConceptLabels.load(folder / c["labels"]), FeatureAtlas.load(folder / c["atlas"]))
                for c in manifest["evolution"]
            ])
        images = manifest["images"]
        return SpaceCache(
            folder=folder,
            labels=ConceptLabels.load(folder / manifest["labels"]),
            atlas=FeatureAtlas.load(folder / manifest["atlas"]),
            image_files=[folder / im["file"] for im in images],
            ids=[im["id"] for im in images],
            captions=[im["caption"] for im in images],
            groups=[im["group"] for im in images],
            evolution=evolution,
            manifest=manifest,
        )
    return None


__all__ = ["FolderImages", "SpaceCache", "build_space_cache", "cache_folders", "corpus_image_set", "load_space_cache", "spread_rows"]
