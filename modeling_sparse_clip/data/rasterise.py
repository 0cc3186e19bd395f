"""Rasterise SVGs with `rsvg-convert` (librsvg), many per process call.

One `rsvg-convert` call costs ~25 ms of process start-up, which for 8.6K icons is minutes on 2 cores.
So self-contained SVGs are laid out as nested `<svg>` tiles of one sheet, rendered in one call and
cropped back apart; nested `<svg>` elements clip to their own viewport, so a tile equals the file
rendered alone (tested in tests/test_data_sources.py). SVGs that reference ids (`url(#...)`,
`xlink:href`, `<style>`) could collide with other tiles' ids, so those are rendered one per call.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence

from PIL import Image

_ROOT_TAG = re.compile(r"<svg\b([^>]*)>", re.S)
_XML_PROLOGUE = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>", re.S)
_SIZE_ATTRS = re.compile(r"\s(?:x|y|width|height)=\"[^\"]*\"")
_NEEDS_OWN_DOCUMENT = re.compile(r"url\(#|xlink:href|href=\"#|<style", re.I)

RSVG_INSTALL_HINT = "run `apt-get install librsvg2-bin` or `make sources`"


def rsvg_convert_path() -> str:
    path = shutil.which("rsvg-convert")
    if path is None:
        raise FileNotFoundError(f"rsvg-convert not found: {RSVG_INSTALL_HINT}")
    return path


def _run_rsvg(svg: str, width: int, height: int) -> Image.Image:
    result = subprocess.run(
        [rsvg_convert_path(), "--width", str(width), "--height", str(height), "--background-color", "white", "--format", "png"],
        input=svg.encode(),
        capture_output=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rsvg-convert failed: {result.stderr.decode(errors='replace').strip()[:500]}")
    return Image.open(io.BytesIO(result.stdout)).convert("RGB")


def rasterise_svg(svg: str, size: int) -> Image.Image:
    """One SVG document -> RGB image of size x size on white."""
    return _run_rsvg(svg, size, size)


def _as_tile(svg: str, x: int, y: int, size: int) -> str:
    """Turn a document's root `<svg ...>` into a positioned nested `<svg x y width height ...>`."""
    svg = _XML_PROLOGUE.sub("", svg)
    match = _ROOT_TAG.search(svg)
    if match is None:
        raise ValueError("not an SVG document (no <svg> element)")
    attrs = _SIZE_ATTRS.sub("", match.group(1))
    tile_open = f'<svg x="{x}" y="{y}" width="{size}" height="{size}"{attrs}>'
    return svg[: match.start()] + tile_open + svg[match.end() :]


def rasterise_svgs(svgs: Sequence[str], size: int, columns: int = 16) -> Iterator[Image.Image]:
    """Render many SVG documents to size x size RGB images (same order), a sheet of tiles per call."""
    batch: list[tuple[int, str]] = []
    results: dict[int, Image.Image] = {}
    next_out = 0
    for index, svg in enumerate(svgs):
        if _NEEDS_OWN_DOCUMENT.search(svg):
            results[index] = rasterise_svg(svg, size)
        else:
            batch.append((index, svg))
        if len(batch) == columns * columns or (index == len(svgs) - 1 and batch):
            results.update(_render_sheet(batch, size, columns))
            batch = []
        while next_out in results:
            yield results.pop(next_out)
            next_out += 1
    while next_out in results:
        yield results.pop(next_out)
        next_out += 1


def _render_sheet(batch: list[tuple[int, str]], size: int, columns: int) -> dict[int, Image.Image]:
    rows = (len(batch) + columns - 1) // columns
    width, height = columns * size, rows * size
    tiles = [_as_tile(svg, (i % columns) * size, (i // columns) * size, size) for i, (_, svg) in enumerate(batch)]
    sheet_svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">' + "".join(tiles) + "</svg>"
    )
    sheet = _run_rsvg(sheet_svg, width, height)
    out = {}
    for i, (index, _) in enumerate(batch):
        x, y = (i % columns) * size, (i // columns) * size
        out[index] = sheet.crop((x, y, x + size, y + size))
    return out
