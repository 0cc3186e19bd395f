"""Openclipart PNGs (Debian openclipart-png): captions cleaned from the category path and file name."""

from __future__ import annotations

import logging
import re
from multiprocessing import get_context
from pathlib import Path

from PIL import Image

from ...constants import OPENCLIPART_PNG_DIR
from .base import Source, SourceItem, dpkg_version, encode_png, file_version, fit_max_side, on_white

logger = logging.getLogger(__name__)

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
    root = OPENCLIPART_PNG_DIR
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
        return dpkg_version("openclipart-png") or file_version(self.root)

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
