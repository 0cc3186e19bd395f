"""Sparse CLIP Space: look inside the features, name them, watch them evolve, steer them.

Run locally (from the repository root):

    python spaces/app.py                                  # the embedded model, outputs/embedded/sparse
    python spaces/app.py --model path/or/hub-id           # any Sparse CLIP folder or Hub id
    SPARSE_CLIP_MODEL=path/or/hub-id python spaces/app.py # the same through the environment
    python spaces/app.py --build_only                     # fill the caches (labels, atlas) and exit

Images come from the embedded corpus' test split (`modeling_sparse_clip.data.build_corpus`) or from
a folder (`--images_dir`, captions from file names). Uploads stay in a private temp folder.

This file holds the arguments and the launch; `state.py` loads the model, labels and atlas,
`handlers.py` answers the tabs' events, `views.py` draws, `layout.py` lays out the page.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Uploads go to a private temp folder (gradio reads GRADIO_TEMP_DIR at import time).
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="sparse-clip-space-"))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parent.parent
try:  # on a Space the package is installed; in a checkout it sits one level up
    import modeling_sparse_clip  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT))
    import modeling_sparse_clip  # noqa: F401

from transformers import HfArgumentParser

from layout import build_demo  # the Space's own modules, next to this file
from modeling_sparse_clip.constants import DATA_CACHE_DIR, FEATURE_CACHE_DIR
from state import SpaceState


@dataclass
class SpaceArguments:
    model: str = field(
        default=os.environ.get("SPARSE_CLIP_MODEL", str(REPO_ROOT / "outputs" / "embedded" / "sparse")),
        metadata={"help": "Sparse CLIP folder or Hub id (env SPARSE_CLIP_MODEL)."},
    )
    images_dir: str | None = field(default=os.environ.get("SPARSE_CLIP_IMAGES"), metadata={"help": "Folder of images for the atlas and gallery (default: the corpus test split)."})
    data_cache: str = field(default=str(DATA_CACHE_DIR), metadata={"help": "Cache folder of modeling_sparse_clip.data."})
    max_images: int = field(default=2000, metadata={"help": "At most this many atlas images."})
    vocabulary: str | None = field(default=None, metadata={"help": "A word list (one per line) for concept labels (default: the paper's vocabulary)."})
    classes: str | None = field(default=None, metadata={"help": "Comma-separated zero-shot classes (default: the emoji_subgroups eval set, else the first zero-shot one)."})
    templates: str = field(default="a photo of a {}.|an emoji of a {}.|an icon of a {}.", metadata={"help": "'|'-separated prompt templates when --classes is given."})
    cache_dir: str = field(default=str(FEATURE_CACHE_DIR), metadata={"help": "Cache of tower outputs (and of labels/atlases when the model folder is read-only)."})
    evolution: bool = field(default=True, metadata={"help": "Load evolution/progress_* checkpoints when present."})
    host: str = field(default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    port: int = field(default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    build_only: bool = field(default=False, metadata={"help": "Compute and cache labels/atlases, then exit."})
    vlm: str | None = field(
        default=os.environ.get("SPARSE_CLIP_VLM", str(REPO_ROOT / "outputs" / "embedded" / "vlm")),
        metadata={"help": "Sparse-feature VLM folder whose captions the Steering tab shows before/after (env SPARSE_CLIP_VLM; skipped when absent)."},
    )


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    (args,) = HfArgumentParser(SpaceArguments).parse_args_into_dataclasses(args=argv)
    state = SpaceState(args, files_dir=Path(os.environ["GRADIO_TEMP_DIR"]) / "atlas-images")
    if args.build_only:
        print(f"caches ready: {state.labels.num_features} features, {state.atlas.num_images} atlas images")
        return
    demo = build_demo(state)
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, show_error=False, max_file_size="25mb")


if __name__ == "__main__":
    main()
