"""What the Space loads once at start (model, labels, atlas, classifier, evolution, captioner), as one
object that every handler receives: no module globals, nothing a request changes.

Labels, atlas and evolution come from the model's Space cache (`<model>/space_cache/`, built with the
model by `modeling_sparse_clip.interpret.build_space_cache`), so a start takes seconds; when the cache
is missing (or was built for other weights, images or vocabulary) it is built here once, reporting its
progress to the start-up page, and written next to the model (or to `--cache_dir` when the model folder
is read-only).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from modeling_sparse_clip.atomic import atomic_file
from modeling_sparse_clip.caching import fingerprint
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.evaluation.zero_shot import ZeroShotClassifier
from modeling_sparse_clip.interpret.space_cache import FolderImages, build_space_cache, load_space_cache, spread_rows

if TYPE_CHECKING:
    from app import SpaceArguments

log = logging.getLogger("sparse_clip_space")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
GALLERY_SIZE = 36
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(model: str) -> Path:
    """A local model folder, or a Hub id downloaded to the Hub cache (its `space_cache/` included;
    the `evolution/` checkpoint weights are left out: the cache holds what the Space shows of them)."""
    if Path(model).is_dir():
        return Path(model)
    if not HUB_ID.match(model):
        raise FileNotFoundError(f"No Sparse CLIP model folder at {model}: give --model (or SPARSE_CLIP_MODEL) a model folder or a Hub id ORG/NAME.")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, ignore_patterns=["evolution/*", "*.bin"]))


def display_name(model: str) -> str:
    """How the page names the model: the Hub id, or a local folder's own name (never a server path)."""
    return model if not Path(model).is_dir() and HUB_ID.match(model) else Path(model).resolve().name


def folder_image_set(images_dir: str, max_images: int):
    """(images, ids, captions, groups) of a folder of images, captions from the file names."""
    root = Path(images_dir)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {images_dir}.")
    captions = [p.stem.replace("_", " ").replace("-", " ") for p in paths]
    groups = [(str(p.parent.relative_to(root)), c.split()[0] if c.split() else "") for p, c in zip(paths, captions)]
    rows = spread_rows(groups, max_images)
    return FolderImages([paths[r] for r in rows]), [paths[r].relative_to(root).as_posix() for r in rows], [captions[r] for r in rows], [groups[r] for r in rows]


def read_word_list(path: str) -> list[str]:
    words = [w.strip() for w in Path(path).read_text(encoding="utf-8").splitlines() if w.strip()]
    return list(dict.fromkeys(words))


def cache_request(args: SpaceArguments) -> str:
    """What the cache must have been built for: 'default' (corpus test split and the paper vocabulary),
    or the folder of images / word list / image count given on the command line."""
    if not args.images_dir and not args.vocabulary and args.max_images == default_max_images():
        return "default"
    folder = None
    if args.images_dir:
        files = sorted(p for p in Path(args.images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        folder = fingerprint([f"{p.relative_to(args.images_dir).as_posix()}|{p.stat().st_size}" for p in files])
    words = fingerprint(read_word_list(args.vocabulary)) if args.vocabulary else None
    return json.dumps({"images": folder, "vocabulary": words, "max_images": args.max_images}, sort_keys=True)


def default_max_images() -> int:
    from modeling_sparse_clip.interpret.space_cache import DEFAULT_MAX_IMAGES

    return DEFAULT_MAX_IMAGES


def load_classes(args: SpaceArguments, manifest: dict) -> tuple[list[str], list[str], str]:
    """--classes when given, else the zero-shot classes stored in the Space cache, else an eval set."""
    if args.classes:
        classes = list(dict.fromkeys(c.strip() for c in args.classes.split(",") if c.strip()))
        return classes, args.templates.split("|"), "the classes this Space was started with"
    stored = manifest.get("classes")
    if stored:
        return list(stored["names"]), list(stored["templates"]), stored["source"]
    from modeling_sparse_clip.interpret.space_cache import default_classes

    found = default_classes(args.data_cache)
    if found is None:
        raise FileNotFoundError("No zero-shot classes: pass --classes 'dog,cat,...'.")
    return found


def load_captioner(args: SpaceArguments, encoder: SparseCLIPEncoder):
    """The sparse-feature VLM (modeling_sparse_clip.vlm) at `args.vlm` when it was trained on this model's features, else None."""
    if not args.vlm or not (Path(args.vlm) / "config.json").exists():
        log.info("no captioning VLM (--vlm): the Steering tab shows no captions")
        return None
    from modeling_sparse_clip.vlm import SparseFeatureCaptioner

    try:
        return SparseFeatureCaptioner.from_pretrained(args.vlm, encoder=encoder)
    except ValueError as err:  # a VLM trained on another Sparse CLIP's features would caption garbage
        log.warning("captioning VLM %s not used: %s", args.vlm, err)
        return None


def cache_is_likely_there(args: SpaceArguments) -> bool:
    """A quick look (no model loaded) for a Space cache built for these inputs: decides whether the
    start-up page is needed. Whether it matches the weights is checked when the state loads."""
    if not Path(args.model).is_dir():
        return False  # a Hub id: the snapshot may take a while, show the page
    request = cache_request(args)
    manifests = [Path(args.model) / "space_cache" / "space.json", *Path(args.cache_dir).glob("space_cache/*/space.json")]
    for manifest in manifests:
        try:
            if manifest.is_file() and json.loads(manifest.read_text()).get("request") == request:
                return True
        except (OSError, ValueError):
            continue
    return False


class SpaceState:
    """Everything loaded once at start: encoder, labels (and their vocabulary), the image set and its
    atlas, zero-shot classifier, evolution, the captioning VLM (or None), and the image files served.
    `progress(stage, done, total)` hears about a cache build (None: the cache was there)."""

    def __init__(self, args: SpaceArguments, files_dir: Path, progress: Callable[[str, int, int], None] | None = None):
        self.args = args
        self.model_name = display_name(args.model)
        model_path = resolve_model(args.model)
        log.info("loading %s", self.model_name)
        self.encoder = SparseCLIPEncoder.from_pretrained(model_path, cache_dir=args.cache_dir, progress=False)
        request = cache_request(args)
        cache = load_space_cache(model_path, self.encoder.fingerprint(), request, args.cache_dir)
        self.built_cache = cache is None
        if cache is None:
            log.info("no Space cache for this model and these inputs: building it (once)")
            kwargs = {}
            if args.images_dir:
                images, ids, captions, groups = folder_image_set(args.images_dir, args.max_images)
                kwargs = dict(images=images, ids=ids, captions=captions, groups=groups)
            build_space_cache(
                model_path, **kwargs, vocabulary=read_word_list(args.vocabulary) if args.vocabulary else None, request=request,
                data_cache=args.data_cache, cache_dir=args.cache_dir, max_images=args.max_images, evolution=args.evolution,
                encoder=self.encoder, progress=progress,
                classes=(args.classes.split(","), args.templates.split("|"), "the classes this Space was started with") if args.classes else None,
            )
            cache = load_space_cache(model_path, self.encoder.fingerprint(), request, args.cache_dir)
            if cache is None:
                raise RuntimeError("the Space cache was built but cannot be read back; see the log above")
        self.labels, self.atlas, self.vocabulary = cache.labels, cache.atlas, cache.vocabulary
        self.evolution = cache.evolution if args.evolution else None
        self.images = FolderImages(cache.image_files)
        self.ids, self.captions = cache.ids, cache.captions
        self.atlas.image_index()  # built (and sealed) once here, never inside concurrent requests
        self.class_names, self.templates, self.class_source = load_classes(args, cache.manifest)
        self.classifier = ZeroShotClassifier(self.encoder, self.class_names, self.templates)
        self.captioner = None if args.build_only else load_captioner(args, self.encoder)
        # the gallery: the image set's range (round-robin over sources, then classes)
        self.gallery_rows = spread_rows(cache.groups, min(GALLERY_SIZE, len(self.ids)))
        # Images go out as files written once (atomically): gradio re-writes a PIL output's cache file
        # on every request, which races with concurrent downloads of the same image.
        self.files_dir = Path(files_dir)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._files_lock = threading.Lock()

    def _image_file(self, row: int, size: int | None) -> str:
        path = self.files_dir / f"{row}_{size or 'full'}.png"
        if not path.exists():
            image = self.images[row]
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
