"""One builder per installed source: each turns its files into image–caption items.

A `Source` lists its items cheaply (`items`: captions, label, split key, what to draw) and renders
them to canonical PNG bytes (`render`: RGB, white background for transparent art, <= 224 px a side).
`build_source_dataset` runs one source into a cached `datasets.Dataset`; `corpus.py` merges them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import PIL
from filelock import FileLock
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from .captions import normalize_captions
from .install_sources import DEFAULT_CACHE_DIR, NPM_PACKAGES, npm_package_dir, npm_package_installed
from .rasterise import RSVG_INSTALL_HINT, rasterise_svgs

logger = logging.getLogger(__name__)

# Bump when a builder's output changes for the same inputs: it is part of every cache fingerprint.
BUILDER_VERSION = "2"
MAX_SIDE = 224

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


@dataclass
class SourceItem:
    uid: str  # unique within its source (file path, code points, index)
    captions: list[str]
    label: str = ""
    # Emoji are split by code points (all renderings and skin tones of one emoji land in the same
    # split, so "held-out emoji" are really unseen); None = split by the hash of the image bytes.
    split_key: str | None = None
    payload: Any = None


def encode_png(image: Image.Image) -> bytes:
    """Canonical encoding: identical pixels give identical bytes, so a hash of the bytes dedupes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def on_white(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white (emoji and clip art are drawn for light backgrounds) -> RGB."""
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def fit_max_side(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def image_hash(png: bytes) -> str:
    return hashlib.sha256(png).hexdigest()


_EMOJI_IGNORED = {0xFE0F, 0xFE0E} | set(range(0x1F3FB, 0x1F400))  # variation selectors, skin tones


def emoji_split_key(sequence: str) -> str:
    """`👋🏽` and `👋` -> `emoji:1f44b`: one key per emoji, whatever its skin tone or presentation."""
    points = [f"{ord(c):x}" for c in sequence if ord(c) not in _EMOJI_IGNORED]
    return "emoji:" + "-".join(points or [f"{ord(c):x}" for c in sequence])


def hex_to_emoji(hexcode: str) -> str:
    return "".join(chr(int(part, 16)) for part in hexcode.split("-"))


def _dpkg_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return result.stdout.strip() or None if result.returncode == 0 else None


def _file_version(path: str | os.PathLike) -> str:
    stat = Path(path).stat()
    return f"{stat.st_size}-{int(stat.st_mtime)}"


def find_npm_package(name: str, cache_dir: str | os.PathLike) -> Path | None:
    """The extracted npm package in this cache, else in the default cache (where `make sources` puts it)."""
    for root in dict.fromkeys([str(cache_dir), DEFAULT_CACHE_DIR]):
        if npm_package_installed(name, root):
            return npm_package_dir(name, root)
    return None


class Source:
    name: str
    license: str
    description: str
    attribution: str = ""  # what the licence requires us to credit (data card)

    def missing(self, cache_dir: str | os.PathLike) -> str | None:
        """None when installed, else one line naming what to install."""
        raise NotImplementedError

    def version(self, cache_dir: str | os.PathLike) -> str:
        raise NotImplementedError

    def items(self, cache_dir: str | os.PathLike) -> list[SourceItem]:
        raise NotImplementedError

    def render(self, items: Sequence[SourceItem], cache_dir: str | os.PathLike) -> Iterator[bytes]:
        """PNG bytes for each item, in order (None for an item that could not be read: logged and skipped)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# Noto Color Emoji, drawn by Pillow


class NotoEmojiSource(Source):
    name = "noto_emoji"
    license = "OFL-1.1"
    description = "Noto Color Emoji font (Debian fonts-noto-color-emoji) rendered with Pillow at 136x128"
    attribution = "Noto Color Emoji, Copyright Google Inc., SIL Open Font License 1.1; names from the `emoji` package (BSD)."
    font_path = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
    font_size = 109  # the only size this bitmap font renders at
    canvas = (136, 128)

    def missing(self, cache_dir):
        if not Path(self.font_path).exists():
            return "run `apt-get install fonts-noto-color-emoji` or `make sources`"
        try:
            import emoji  # noqa: F401
        except ImportError:
            return "run `pip install emoji` or `make sources`"
        return None

    def version(self, cache_dir):
        import emoji

        return f"{_dpkg_version('fonts-noto-color-emoji') or _file_version(self.font_path)}+emoji{emoji.__version__}"

    def _font(self):
        return ImageFont.truetype(self.font_path, self.font_size)

    def items(self, cache_dir):
        import emoji

        font = self._font()
        wanted = {emoji.STATUS["fully_qualified"], emoji.STATUS["component"]}
        items = []
        for sequence, data in emoji.EMOJI_DATA.items():
            if data["status"] not in wanted:
                continue
            # A sequence the font lacks falls back to several glyphs side by side: wider than one.
            if font.getbbox(sequence)[2] > self.canvas[0]:
                continue
            captions = [data["en"], *data.get("alias", [])]
            name = unicodedata.name(sequence, "") if len(sequence) == 1 else ""
            items.append(SourceItem(uid=sequence, captions=[*captions, name], split_key=emoji_split_key(sequence), payload=sequence))
        return items

    def render(self, items, cache_dir):
        font = self._font()
        for item in items:
            image = Image.new("RGB", self.canvas, "white")
            ImageDraw.Draw(image).text((0, 0), item.payload, font=font, embedded_color=True)
            yield encode_png(image)


# ----------------------------------------------------------------------------------------------
# OpenMoji colour SVGs


class OpenMojiSource(Source):
    name = "openmoji"
    license = "CC-BY-SA-4.0"
    description = "OpenMoji 17.0.0 colour SVGs (npm openmoji), rasterised with rsvg-convert at 128x128"
    attribution = (
        "OpenMoji – the open-source emoji and icon project (https://openmoji.org), License: CC BY-SA 4.0. "
        "Images were rasterised from SVG; derivatives are shared under CC BY-SA 4.0."
    )
    npm_name = "openmoji"
    size = 128

    def missing(self, cache_dir):
        if find_npm_package(self.npm_name, cache_dir) is None:
            return "run `make sources` (npm pack openmoji@17.0.0 into the data cache)"
        if shutil.which("rsvg-convert") is None:
            return RSVG_INSTALL_HINT
        return None

    def version(self, cache_dir):
        return f"openmoji@{NPM_PACKAGES[self.npm_name]}"

    def items(self, cache_dir):
        root = find_npm_package(self.npm_name, cache_dir)
        entries = json.loads((root / "data" / "openmoji.json").read_text())
        items = []
        for entry in entries:
            svg = root / "color" / "svg" / f"{entry['hexcode']}.svg"
            if not svg.exists():
                continue
            tags = [t.strip() for field_ in ("tags", "openmoji_tags") for t in entry.get(field_, "").split(",") if t.strip()]
            captions = [entry["annotation"], ", ".join(dict.fromkeys(tags))]
            items.append(
                SourceItem(uid=entry["hexcode"], captions=captions, label=entry.get("subgroups", ""),
                           split_key=emoji_split_key(entry["emoji"]), payload=svg)
            )
        return items

    def render(self, items, cache_dir):
        svgs = [item.payload.read_text() for item in items]
        for image in rasterise_svgs(svgs, self.size):
            yield encode_png(image)


# ----------------------------------------------------------------------------------------------
# Google's emoji PNGs from emoji-datasource-google

_SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}


class GoogleEmojiSource(Source):
    name = "google_emoji"
    license = "Apache-2.0"
    description = "Google (Noto) emoji 64x64 PNGs with names and categories (npm emoji-datasource-google 16.0.0)"
    attribution = "Noto Emoji images by Google (Apache 2.0); names and categories from emoji-data by Cal Henderson (MIT)."
    npm_name = "emoji-datasource-google"

    def missing(self, cache_dir):
        if find_npm_package(self.npm_name, cache_dir) is None:
            return "run `make sources` (npm pack emoji-datasource-google@16.0.0 into the data cache)"
        return None

    def version(self, cache_dir):
        return f"emoji-datasource-google@{NPM_PACKAGES[self.npm_name]}"

    def items(self, cache_dir):
        root = find_npm_package(self.npm_name, cache_dir)
        images = root / "img" / "google" / "64"
        items = []
        for entry in json.loads((root / "emoji.json").read_text()):
            name = (entry.get("name") or entry["short_name"].replace("_", " ")).lower()
            label = entry.get("subcategory") or ""
            variants = [(entry, name)]
            for tones, variant in (entry.get("skin_variations") or {}).items():
                tone_names = ", ".join(_SKIN_TONES.get(t, t) for t in tones.split("-"))
                variants.append((variant, f"{name}: {tone_names}"))
            for variant, caption in variants:
                path = images / variant["image"]
                if not variant.get("has_img_google", True) or not path.exists():
                    continue
                captions = [caption, *entry.get("short_names", [])]
                items.append(
                    SourceItem(uid=variant["unified"], captions=captions, label=label,
                               split_key=emoji_split_key(hex_to_emoji(variant["unified"])), payload=path)
                )
        return items

    def render(self, items, cache_dir):
        for item in items:
            with Image.open(item.payload) as image:
                yield encode_png(fit_max_side(on_white(image)))


# ----------------------------------------------------------------------------------------------
# game-icons.net through @iconify-json/game-icons


class GameIconsSource(Source):
    name = "game_icons"
    license = "CC-BY-3.0"
    description = "game-icons.net icons (npm @iconify-json/game-icons 1.2.4), SVG rasterised at 128x128, black on white"
    attribution = (
        "Game icons by the game-icons.net authors (Lorc, Delapouite, and contributors; https://game-icons.net), "
        "licensed under CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/). Rasterised from SVG."
    )
    npm_name = "@iconify-json/game-icons"
    size = 128

    def missing(self, cache_dir):
        if find_npm_package(self.npm_name, cache_dir) is None:
            return "run `make sources` (npm pack @iconify-json/game-icons@1.2.4 into the data cache)"
        if shutil.which("rsvg-convert") is None:
            return RSVG_INSTALL_HINT
        return None

    def version(self, cache_dir):
        return f"game-icons@{NPM_PACKAGES[self.npm_name]}"

    def items(self, cache_dir):
        data = json.loads((find_npm_package(self.npm_name, cache_dir) / "icons.json").read_text())
        width, height = data.get("width", 512), data.get("height", 512)
        aliases: dict[str, list[str]] = {}
        for alias, target in data.get("aliases", {}).items():
            aliases.setdefault(target["parent"], []).append(alias)
        items = []
        for name, icon in data["icons"].items():
            w, h = icon.get("width", width), icon.get("height", height)
            svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" color="black">{icon["body"]}</svg>'
            captions = [name.replace("-", " "), *(a.replace("-", " ") for a in aliases.get(name, []))]
            items.append(SourceItem(uid=name, captions=captions, payload=svg))
        return items

    def render(self, items, cache_dir):
        for image in rasterise_svgs([item.payload for item in items], self.size):
            yield encode_png(image)


# ----------------------------------------------------------------------------------------------
# Openclipart PNGs (Debian openclipart-png)

# Authors' names that file names carry (found by tokens spread over many unrelated categories).
_CLIPART_AUTHOR_TOKENS = {
    "architetto", "francesco", "franc", "fra", "fr", "rella", "ganson", "benji", "park", "juliane", "krug",
    "nicu", "buculei", "jarno", "vasamaa", "gerald", "victor", "jean", "jon", "linda", "phillips", "yves",
    "kim", "mo", "luiz", "sergio", "dan", "gerhards", "peterm", "mimooh", "anthony", "matthew", "marcelo",
    "openclipart", "clipart", "bw", "de", "di", "pa",
}
_CLIPART_NAME_LIMIT = 24  # the package truncates file-name stems here; a cut-off last word is dropped


def clean_clipart_name(stem: str) -> str:
    """`saturn_dan_gerhards_01` -> `saturn`; `barattolo_di_pillole_arc_01` -> `` (not English)."""
    from wordfreq import zipf_frequency

    stem = re.sub(r"[_\-]*\d+$", "", stem)
    tokens = [t for t in re.split(r"[_\-\s.]+", stem) if t]
    if len(stem) >= _CLIPART_NAME_LIMIT and len(tokens) > 1:
        tokens = tokens[:-1]
    words = [
        t.lower() for t in tokens
        if t.isalpha() and len(t) > 1 and t.lower() not in _CLIPART_AUTHOR_TOKENS and zipf_frequency(t.lower(), "en") >= 3.0
    ]
    return " ".join(dict.fromkeys(words))


def _pixel_count(path: Path) -> int:
    """Width x height from the PNG header (no decoding)."""
    with open(path, "rb") as f:
        header = f.read(24)
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        return 0  # not a PNG: let the renderer report it
    return int.from_bytes(header[16:20], "big") * int.from_bytes(header[20:24], "big")


def _render_clipart(path: str) -> bytes | None:
    try:
        with Image.open(path) as image:
            image = fit_max_side(on_white(image))
            if min(image.size) < 4:  # a rule or a border line, not a picture
                return None
            return encode_png(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        logger.warning("openclipart: skipped %s: %s", path, error)
        return None


class OpenclipartSource(Source):
    name = "openclipart"
    license = "public domain (CC0-1.0)"
    description = "Openclipart PNGs (Debian openclipart-png), captions cleaned from category path + file name"
    attribution = "Openclipart (https://openclipart.org), released into the public domain by its artists."
    root = Path("/usr/share/openclipart/png")
    # ~20 files are print-size posters of 100-620 MP; everything else is under 4 MP.
    max_pixels = 16 * 10**6

    def missing(self, cache_dir):
        if not self.root.is_dir():
            return "run `apt-get install openclipart-png` or `make sources`"
        try:
            import wordfreq  # noqa: F401
        except ImportError:
            return "run `pip install wordfreq` or `make sources`"
        return None

    def version(self, cache_dir):
        return _dpkg_version("openclipart-png") or _file_version(self.root)

    def items(self, cache_dir):
        items, too_large = [], []
        for path in sorted(self.root.rglob("*.png")):
            if _pixel_count(path) > self.max_pixels:
                too_large.append(path.name)
                continue
            parts = path.relative_to(self.root).parts
            category, subdirs = parts[0], list(parts[1:-1])
            where = " ".join(d.replace("_", " ") for d in reversed([category, *subdirs]))
            name = clean_clipart_name(path.stem)
            captions = [name, f"{name}, {where}"] if name else [where]
            items.append(SourceItem(uid=str(path.relative_to(self.root)), captions=captions, label=category, payload=str(path)))
        if too_large:
            logger.warning("openclipart: skipped %d posters over %d MP (each takes 10-60 s to decode): %s",
                           len(too_large), self.max_pixels // 10**6, ", ".join(too_large))
        return items

    def render(self, items, cache_dir):
        paths = [item.payload for item in items]
        if len(paths) < 200:
            yield from map(_render_clipart, paths)
            return
        # Decoding ~1000 px PNGs dominates the whole corpus build: use both cores.
        with get_context("fork").Pool(2) as pool:
            yield from pool.imap(_render_clipart, paths, chunksize=32)


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian dataset-fashion-mnist)

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_TEMPLATES = [
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the {}, a type of clothing.",
]
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """The MNIST idx format: big-endian dims header, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels


def fashion_mnist_png(pixels: np.ndarray) -> bytes:
    return encode_png(Image.fromarray(pixels, mode="L").convert("RGB"))


class FashionMNISTSource(Source):
    name = "fashion_mnist"
    license = "MIT"
    description = "Fashion-MNIST training images (Debian dataset-fashion-mnist), 28x28, class names through prompt templates"
    attribution = "Fashion-MNIST, Zalando Research (Xiao, Rasul, Vollgraf 2017), MIT License."

    def missing(self, cache_dir):
        if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
            return "run `apt-get install dataset-fashion-mnist` or `make sources`"
        return None

    def version(self, cache_dir):
        return _dpkg_version("dataset-fashion-mnist") or _file_version(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz")

    def items(self, cache_dir):
        _, labels = read_fashion_mnist("train")
        items = []
        for index, label in enumerate(labels.tolist()):
            class_name = FASHION_MNIST_CLASSES[label]
            captions = [t.format(class_name.lower()) for t in FASHION_MNIST_TEMPLATES]
            items.append(SourceItem(uid=f"train-{index}", captions=captions, label=class_name, payload=index))
        return items

    def render(self, items, cache_dir):
        images, _ = read_fashion_mnist("train")
        for item in items:
            yield fashion_mnist_png(images[item.payload])


# ----------------------------------------------------------------------------------------------
# scikit-learn digits

_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class SklearnDigitsSource(Source):
    name = "sklearn_digits"
    license = "CC-BY-4.0"
    description = "scikit-learn load_digits(): 1,797 8x8 handwritten digits, dark ink on white"
    attribution = (
        "Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, UCI Machine Learning Repository), "
        "CC BY 4.0, as shipped by scikit-learn."
    )

    def missing(self, cache_dir):
        try:
            import sklearn  # noqa: F401
        except ImportError:
            return "run `pip install scikit-learn` or `make sources`"
        return None

    def version(self, cache_dir):
        import sklearn

        return f"sklearn{sklearn.__version__}"

    def items(self, cache_dir):
        from sklearn.datasets import load_digits

        targets = load_digits().target.tolist()
        return [
            SourceItem(uid=str(i), captions=[f"the digit {d}", f"a handwritten {_DIGIT_WORDS[d]}", f"the number {_DIGIT_WORDS[d]}"],
                       label=str(d), payload=i)
            for i, d in enumerate(targets)
        ]

    def render(self, items, cache_dir):
        from sklearn.datasets import load_digits

        images = load_digits().images  # 0..16, 16 = full ink
        for item in items:
            pixels = (255 - np.rint(images[item.payload] * 255 / 16)).astype(np.uint8)
            yield encode_png(Image.fromarray(pixels, mode="L").convert("RGB"))


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        NotoEmojiSource(),
        OpenMojiSource(),
        GoogleEmojiSource(),
        GameIconsSource(),
        OpenclipartSource(),
        FashionMNISTSource(),
        SklearnDigitsSource(),
    )
}
EMOJI_SOURCES = ("noto_emoji", "openmoji", "google_emoji")


# ----------------------------------------------------------------------------------------------
# One source -> a cached datasets.Dataset


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_fingerprint(source: Source, cache_dir: str | os.PathLike, limit: int | None) -> str:
    return _digest(source.name, BUILDER_VERSION, source.version(cache_dir), limit, PIL.__version__, MAX_SIDE)


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


def build_source_dataset(source: Source | str, cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR, limit: int | None = None) -> SourceBuild:
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
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    seconds = time.perf_counter() - start
    logger.info("%s: built %d images in %.1fs", source.name, len(dataset), seconds)
    return SourceBuild(datasets.load_from_disk(str(path)), fingerprint, seconds, cached=False, dropped_empty=dropped_empty)
