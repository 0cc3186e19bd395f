"""What the Space loads once at start (model, labels, atlas, classifier, evolution, captioner), as one
object that every handler receives: no module globals."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from modeling_sparse_clip.atomic import atomic_file
from modeling_sparse_clip.caching import fingerprint
from modeling_sparse_clip.encoding import SparseCLIPEncoder, as_rgb
from modeling_sparse_clip.evaluation.zero_shot import ZeroShotClassifier
from modeling_sparse_clip.interpret import (
    ConceptEvolution,
    DatasetImages,
    discover_checkpoints,
    load_or_build_feature_atlas,
    load_or_compute_concept_labels,
)

if TYPE_CHECKING:
    from app import SpaceArguments

log = logging.getLogger("sparse_clip_space")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


class FolderImages:
    """A lazy `Sequence[PIL.Image]` over image files (read through the encoder's `as_rgb`)."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):  # the encoder reads a batch as a slice
            return [self[i] for i in range(*index.indices(len(self)))]
        with Image.open(self.paths[int(index)]) as image:
            return as_rgb(image)


def load_image_set(args: SpaceArguments):
    """(images, ids, captions, source) for the atlas and the galleries; `source` names the set in the caches."""
    if args.images_dir:
        paths = sorted(p for p in Path(args.images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: args.max_images]
        if not paths:
            raise FileNotFoundError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {args.images_dir}.")
        captions = [p.stem.replace("_", " ").replace("-", " ") for p in paths]
        # an edited file is another image: its size and time are part of the set's name
        files = fingerprint([f"{p.relative_to(args.images_dir)}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in paths])
        return FolderImages(paths), [p.name for p in paths], captions, f"folder:{args.images_dir}:{files}"
    from modeling_sparse_clip.data import build_corpus

    split = build_corpus(cache_dir=args.data_cache)["test"]
    split = split.select(range(min(args.max_images, len(split))))
    captions = [t[0] if isinstance(t, list) and t else str(t) for t in split["text"]]
    ids = [f"test/{i}" for i in range(len(split))]
    return DatasetImages(split), ids, captions, f"corpus:test:{fingerprint(split)}"


def load_classes(args: SpaceArguments) -> tuple[list[str], list[str], str]:
    if args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        return classes, args.templates.split("|"), "--classes"
    from modeling_sparse_clip.data import load_eval_sets

    eval_sets = load_eval_sets(cache_dir=args.data_cache)
    # Emoji subgroups first: the most varied everyday concepts of the embedded sets.
    for eval_set in sorted(eval_sets.values(), key=lambda e: e.name != "emoji_subgroups"):
        if eval_set.task == "zero_shot":
            return list(eval_set.class_names), list(eval_set.templates or ["{}"]), eval_set.name
    raise FileNotFoundError("No zero-shot eval set found: pass --classes 'dog,cat,...'.")


def load_vocabulary(args: SpaceArguments) -> list[str]:
    if args.vocabulary:
        words = [w.strip() for w in Path(args.vocabulary).read_text().splitlines() if w.strip()]
        return list(dict.fromkeys(words))
    from modeling_sparse_clip.data import build_vocabulary

    return build_vocabulary()


def load_captioner(args: SpaceArguments, encoder: SparseCLIPEncoder):
    """The sparse-feature VLM (modeling_sparse_clip.vlm) at `args.vlm` when it was trained on this model's features, else None."""
    if not args.vlm or not (Path(args.vlm) / "config.json").exists():
        log.info("no captioning VLM at %s: the Steering tab shows no captions", args.vlm)
        return None
    from modeling_sparse_clip.vlm import SparseFeatureCaptioner

    try:
        return SparseFeatureCaptioner.from_pretrained(args.vlm, encoder=encoder)
    except ValueError as err:  # a VLM trained on another Sparse CLIP's features would caption garbage
        log.warning("captioning VLM %s not used: %s", args.vlm, err)
        return None


class SpaceState:
    """Everything loaded once at start: encoder, vocabulary and labels, image set and atlas, zero-shot
    classifier, evolution checkpoints, the captioning VLM (or None), and the image files served."""

    def __init__(self, args: SpaceArguments, files_dir: Path):
        self.args = args
        log.info("loading %s", args.model)
        self.encoder = SparseCLIPEncoder.from_pretrained(args.model, cache_dir=args.cache_dir)
        self.vocabulary = load_vocabulary(args)
        self.labels = load_or_compute_concept_labels(self.encoder, self.vocabulary, model_dir=args.model, cache_dir=args.cache_dir)
        self.images, self.ids, self.captions, source = load_image_set(args)
        self.atlas = load_or_build_feature_atlas(
            self.encoder, self.images, self.ids, self.captions, model_dir=args.model, cache_dir=args.cache_dir, source=source
        )
        self.atlas.image_index()  # built once here, not inside concurrent requests
        self.class_names, self.templates, self.class_source = load_classes(args)
        self.classifier = ZeroShotClassifier(self.encoder, self.class_names, self.templates)
        self.evolution = None
        checkpoints = discover_checkpoints(args.model) if args.evolution and Path(args.model).is_dir() else []
        if checkpoints:
            self.evolution = ConceptEvolution.build(
                checkpoints, self.vocabulary, self.images, self.ids, self.captions, source=source, cache_dir=args.cache_dir
            )
        self.captioner = None if args.build_only else load_captioner(args, self.encoder)
        self.gallery_rows = list(range(min(48, len(self.ids))))
        # Images go out as files written once (atomically): gradio re-writes a PIL output's cache file
        # on every request, which races with concurrent downloads of the same image.
        self.files_dir = Path(files_dir)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._files_lock = threading.Lock()

    def _image_file(self, row: int, size: int | None) -> str:
        path = self.files_dir / f"{row}_{size or 'full'}.png"
        if not path.exists():
            image = as_rgb(self.images[row])
            if size:
                image.thumbnail((size, size))
            with self._files_lock:  # one writer at a time: atomic_file's temporary name is per process
                if not path.exists():
                    with atomic_file(path) as tmp:
                        image.save(tmp, format="PNG")
        return str(path)

    def thumb(self, row: int) -> str:
        return self._image_file(int(row), 128)

    def image_file(self, row: int) -> str:
        return self._image_file(int(row), None)

    def gallery_items(self, rows):
        return [(self.thumb(r), self.captions[r][:40]) for r in rows]
