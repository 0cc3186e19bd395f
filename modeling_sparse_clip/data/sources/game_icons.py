"""game-icons.net through the `@iconify-json/game-icons` npm package: SVG bodies, black on white."""

from __future__ import annotations

import json
import shutil

from ...constants import NPM_PACKAGES
from ..rasterise import RSVG_INSTALL_HINT, rasterise_svgs
from .base import Source, SourceItem, encode_png, find_npm_package


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
