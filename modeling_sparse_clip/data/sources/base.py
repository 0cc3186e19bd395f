"""What every source shares: the item a source lists, the `Source` interface, canonical PNG encoding,
and where an installed package's files and version are found."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ...constants import DATA_CACHE_DIR, npm_package_dir, npm_package_installed
# Transparency onto white (emoji and clip art are drawn for light backgrounds): the one image path,
# shared with training, evaluation, the encoder and the Space.
from ...images import to_rgb as on_white  # noqa: F401

# Every image is stored at most this many pixels a side (part of every cache fingerprint).
MAX_SIDE = 224


@dataclass
class SourceItem:
    uid: str  # unique within its source (file path, code points, index)
    captions: list[str]
    label: str = ""
    # Emoji are split by code points (all renderings and skin tones of one emoji land in the same
    # split, so "held-out emoji" are really unseen); None = split by the hash of the image bytes.
    split_key: str | None = None
    payload: Any = None


class Source:
    """One installed source. `items` lists it cheaply; `render` draws the items to PNG bytes."""

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

    def render(self, items: Sequence[SourceItem], cache_dir: str | os.PathLike) -> Iterator[bytes | None]:
        """PNG bytes for each item, in order (None for an item that could not be read: logged and skipped)."""
        raise NotImplementedError


def encode_png(image: Image.Image) -> bytes:
    """Canonical encoding: identical pixels give identical bytes, so a hash of the bytes dedupes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def fit_max_side(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def image_hash(png: bytes) -> str:
    return hashlib.sha256(png).hexdigest()


def dpkg_version(package: str) -> str | None:
    """The installed Debian package's version (None off Debian or when it is not installed)."""
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return result.stdout.strip() or None if result.returncode == 0 else None


def file_version(path: str | os.PathLike) -> str:
    """A version for files put in place without dpkg: size and modification time."""
    stat = Path(path).stat()
    return f"{stat.st_size}-{int(stat.st_mtime)}"


def find_npm_package(name: str, cache_dir: str | os.PathLike) -> Path | None:
    """The extracted npm package in this cache, else in the default cache (where `make sources` puts it)."""
    for root in dict.fromkeys([str(cache_dir), str(DATA_CACHE_DIR)]):
        if npm_package_installed(name, root):
            return npm_package_dir(name, root)
    return None
