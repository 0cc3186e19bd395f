"""Emoji: the Noto Color Emoji font drawn by Pillow, OpenMoji's colour SVGs, Google's emoji PNGs.

All three split by code points (`emoji_split_key`), so every rendering and skin tone of one emoji
lands in the same split.
"""

from __future__ import annotations

import json
import shutil
import unicodedata

from PIL import Image, ImageDraw, ImageFont

from ...constants import EMOJI_FONT, EMOJI_FONT_SIZE, NPM_PACKAGES
from ..rasterise import RSVG_INSTALL_HINT, rasterise_svgs
from .base import Source, SourceItem, dpkg_version, encode_png, file_version, find_npm_package, fit_max_side, on_white

_EMOJI_IGNORED = {0xFE0F, 0xFE0E} | set(range(0x1F3FB, 0x1F400))  # variation selectors, skin tones


def emoji_split_key(sequence: str) -> str:
    """`👋🏽` and `👋` -> `emoji:1f44b`: one key per emoji, whatever its skin tone or presentation."""
    points = [f"{ord(c):x}" for c in sequence if ord(c) not in _EMOJI_IGNORED]
    return "emoji:" + "-".join(points or [f"{ord(c):x}" for c in sequence])


def hex_to_emoji(hexcode: str) -> str:
    return "".join(chr(int(part, 16)) for part in hexcode.split("-"))


class NotoEmojiSource(Source):
    name = "noto_emoji"
    license = "OFL-1.1"
    description = "Noto Color Emoji font (Debian fonts-noto-color-emoji) rendered with Pillow at 136x128"
    attribution = "Noto Color Emoji, Copyright Google Inc., SIL Open Font License 1.1; names from the `emoji` package (BSD)."
    font_path = EMOJI_FONT
    font_size = EMOJI_FONT_SIZE
    canvas = (136, 128)

    def missing(self, cache_dir):
        if not self.font_path.exists():
            return "run `apt-get install fonts-noto-color-emoji` or `make sources`"
        try:
            import emoji  # noqa: F401
        except ImportError:
            return "run `pip install emoji` or `make sources`"
        return None

    def version(self, cache_dir):
        import emoji

        return f"{dpkg_version('fonts-noto-color-emoji') or file_version(self.font_path)}+emoji{emoji.__version__}"

    def _font(self):
        return ImageFont.truetype(str(self.font_path), self.font_size)

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
