"""Sparse CLIP Space: look inside the features, name them, watch them evolve, steer them.

Run it (with the `sparse-clip[space]` package installed: `pip install "sparse-clip[space]"`, or
`pip install -e ".[space]"` in a checkout):

    python app.py --model path/or/hub-id                  # any Sparse CLIP folder or Hub id
    SPARSE_CLIP_MODEL=path/or/hub-id python app.py        # the same through the environment
    python app.py --model MODEL --build_only              # build the model's Space cache and exit

With no `--model` it opens `outputs/embedded/sparse` (the embedded model, run from a checkout's root).
Labels, atlas and evolution come from the model's `space_cache/` (built with the model, see
`modeling_sparse_clip.interpret.build_space_cache`); without one they are built at the first start
while the browser shows the progress. Uploads stay in a private temp folder, removed on exit.

This file holds the arguments and the launch; `state.py` loads the model and its caches,
`handlers.py` answers the tabs' events, `views.py` draws, `layout.py` lays out the page,
`startup.py` is the page shown while caches are built.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from modeling_sparse_clip.constants import DATA_CACHE_DIR, FEATURE_CACHE_DIR
from modeling_sparse_clip.interpret.space_cache import DEFAULT_MAX_IMAGES

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
log = logging.getLogger("sparse_clip_space")


@dataclass
class SpaceArguments:
    model: str = field(
        default=os.environ.get("SPARSE_CLIP_MODEL", "outputs/embedded/sparse"),
        metadata={"help": "Sparse CLIP folder or Hub id (env SPARSE_CLIP_MODEL)."},
    )
    images_dir: str | None = field(default=os.environ.get("SPARSE_CLIP_IMAGES"), metadata={"help": "Folder of images for the atlas and gallery (default: the corpus test split, spread over sources and classes)."})
    data_cache: str = field(default=str(DATA_CACHE_DIR), metadata={"help": "Cache folder of modeling_sparse_clip.data (corpus, eval sets, vocabulary file)."})
    max_images: int = field(default=DEFAULT_MAX_IMAGES, metadata={"help": "At most this many atlas images."})
    vocabulary: str | None = field(default=None, metadata={"help": "A word list (one per line) for concept labels (default: the paper's vocabulary)."})
    classes: str | None = field(default=None, metadata={"help": "Comma-separated zero-shot classes (default: the emoji_subgroups eval set, else the first zero-shot one)."})
    templates: str = field(default="a photo of a {}.|an emoji of a {}.|an icon of a {}.", metadata={"help": "'|'-separated prompt templates when --classes is given."})
    cache_dir: str = field(default=str(FEATURE_CACHE_DIR), metadata={"help": "Cache of tower outputs (and of the Space cache when the model folder is read-only)."})
    evolution: bool = field(default=True, metadata={"help": "Show the evolution over the model's evolution/progress_* checkpoints when present."})
    host: str = field(default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    port: int = field(default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    build_only: bool = field(default=False, metadata={"help": "Build the model's Space cache (labels, atlas, evolution), then exit."})
    vlm: str | None = field(
        default=os.environ.get("SPARSE_CLIP_VLM", "outputs/embedded/vlm"),
        metadata={"help": "Sparse-feature VLM folder whose captions the Steering tab shows before/after (env SPARSE_CLIP_VLM; skipped when absent)."},
    )


def private_temp_dir() -> Path:
    """The uploads' folder: GRADIO_TEMP_DIR when given (left in place), else a new temp folder that is
    removed when the process exits (normally, on Ctrl-C or on SIGTERM). Set before gradio is imported."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return Path(os.environ["GRADIO_TEMP_DIR"])
    folder = Path(tempfile.mkdtemp(prefix="sparse-clip-space-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # atexit runs on sys.exit
    return folder


def launch(blocks, args: SpaceArguments):
    from handlers import MAX_UPLOAD_BYTES

    blocks.queue(default_concurrency_limit=2).launch(
        server_name=args.host, server_port=args.port, show_error=False, max_file_size=MAX_UPLOAD_BYTES, prevent_thread_lock=True,
    )


def load_state(args: SpaceArguments, files_dir: Path):
    """The state, from the caches when they are there; else built while a progress page is served."""
    from startup import StartupProgress, startup_page
    from state import SpaceState, cache_is_likely_there

    if args.build_only:
        return SpaceState(args, files_dir, progress=lambda stage, done, total: log.info("%s %d/%d", stage, done, total))
    progress = StartupProgress()
    result: dict = {}

    def build():
        try:
            result["state"] = SpaceState(args, files_dir, progress=progress)
        except Exception as error:  # noqa: BLE001  (shown on the page and re-raised below)
            progress.error = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            result["error"] = error

    worker = threading.Thread(target=build, name="space-cache-build", daemon=True)
    worker.start()
    # A start from the caches takes seconds (no page for it); a build shows its progress at once.
    worker.join(timeout=120.0 if cache_is_likely_there(args) else 1.0)
    if worker.is_alive():
        page = startup_page(progress)
        launch(page, args)
        worker.join()
        page.close()
    if "error" in result:
        raise result["error"]
    return result["state"]


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    (args,) = HfArgumentParser(SpaceArguments).parse_args_into_dataclasses(args=argv)  # --help exits here, before any folder exists
    files_dir = private_temp_dir() / "atlas-images"
    import time

    start = time.perf_counter()
    state = load_state(args, files_dir)
    if args.build_only:
        print(f"Space cache ready: {state.labels.num_features} features, {state.atlas.num_images} atlas images")
        return
    from layout import build_demo

    demo = build_demo(state)
    launch(demo, args)
    print(f"Sparse CLIP explorer ready in {time.perf_counter() - start:.1f} s ({'caches built' if state.built_cache else 'from the Space cache'})", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
