"""The training recipes the commands default to, shipped in the wheel as package data.

    embedded_sparse / embedded_dense   the main job's two runs (frozen EfficientNet-Lite0 + MiniLM towers)
    vlm_embedded                       the sparse-feature VLM on the embedded model
    paper_vit_b32, paper_vit_l14_cap40, paper_vit_l14_cap50   the paper's recipes (multi-GPU, WebDataset shards)

`sparse-clip-train embedded_sparse` and `sparse-clip-train path/to/recipe.json` both work: a path that
exists is used as is, anything else is looked up here by name (with or without its extension).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SUFFIXES = (".json", ".yaml", ".yml")


def available_recipes() -> list[str]:
    """Names of the shipped recipes (without extension)."""
    return sorted(Path(entry.name).stem for entry in resources.files(__name__).iterdir() if entry.name.endswith(SUFFIXES))


def recipe_path(name: str | os.PathLike) -> Path:
    """A recipe file: `name` itself when it is an existing file, else the shipped recipe of that name
    ("embedded_sparse" or "embedded_sparse.json")."""
    if Path(name).is_file():
        return Path(name)
    name = str(name)
    candidates = [name] if name.endswith(SUFFIXES) else [name + suffix for suffix in SUFFIXES]
    for candidate in candidates:
        entry = resources.files(__name__).joinpath(candidate)
        if "/" not in candidate and os.sep not in candidate and entry.is_file():
            return Path(str(entry))
    raise FileNotFoundError(
        f"No recipe {name!r}: it is not a file, nor one of the shipped recipes ({', '.join(available_recipes())})."
    )


__all__ = ["available_recipes", "recipe_path"]
