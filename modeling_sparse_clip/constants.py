"""Constants every part of the package shares: cache folders, system files, Hub file names, npm pins.

Defined once here; everything else imports them.
"""

import os
from pathlib import Path

# -- caches (relative to the working directory unless an environment variable says otherwise) --------
CACHE_ROOT = Path(os.environ.get("SPARSE_CLIP_CACHE", ".cache"))
DATA_CACHE_DIR = Path(os.environ.get("SPARSE_CLIP_DATA_CACHE", str(CACHE_ROOT / "data")))
FEATURE_CACHE_DIR = Path(os.environ.get("SPARSE_CLIP_FEATURE_CACHE", str(CACHE_ROOT / "features")))
BENCH_CACHE_DIR = Path(os.environ.get("SPARSE_CLIP_BENCH_CACHE", str(CACHE_ROOT / "bench")))

# -- system files the embedded data reads (Debian packages; `make sources` installs them) -------------
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_FONT_SIZE = 109  # the only size this bitmap font renders at
OPENCLIPART_PNG_DIR = Path("/usr/share/openclipart/png")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
WORDNET_DIR = Path("/usr/share/wordnet")
RSVG_CONVERT = Path("/usr/bin/rsvg-convert")

# Debian package -> a file it installs (what tells that it is present).
APT_PACKAGES: dict[str, str] = {
    "fonts-noto-color-emoji": str(EMOJI_FONT),
    "librsvg2-bin": str(RSVG_CONVERT),
    "openclipart-png": str(OPENCLIPART_PNG_DIR),
    "dataset-fashion-mnist": str(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"),
    "wordnet-base": str(WORDNET_DIR / "data.noun"),
}
# npm packages of the embedded corpus, pinned so that the corpus (and its cache fingerprint) is reproducible.
NPM_PACKAGES: dict[str, str] = {
    "openmoji": "17.0.0",
    "emoji-datasource-google": "16.0.0",
    "@iconify-json/game-icons": "1.2.4",
}


def npm_package_dir(name: str, cache_dir: str | os.PathLike = DATA_CACHE_DIR) -> Path:
    """Where the source installer extracts an npm package: `<cache>/npm/<name>@<version>/package`."""
    safe = name.lstrip("@").replace("/", "__")
    return Path(cache_dir) / "npm" / f"{safe}@{NPM_PACKAGES[name]}" / "package"


def npm_package_installed(name: str, cache_dir: str | os.PathLike = DATA_CACHE_DIR) -> bool:
    return (npm_package_dir(name, cache_dir).parent / ".complete").exists()


# -- the files of a saved model -------------------------------------------------------------------------
HUB_CODE_FILES = ("configuration_sparse_clip.py", "modeling_sparse_clip.py")
# The Auto classes a saved folder names in config.json `auto_map`: defined in the Hub modeling file, which
# must write them without this package.
from .modeling_sparse_clip import AUTO_MAP  # noqa: E402
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json")
