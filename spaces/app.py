"""Sparse CLIP Space: look inside the features, name them, watch them evolve, steer them.

Run locally (from the repository root):

    python spaces/app.py                                  # the embedded model, outputs/embedded/sparse
    python spaces/app.py --model path/or/hub-id           # any Sparse CLIP folder or Hub id
    SPARSE_CLIP_MODEL=path/or/hub-id python spaces/app.py # the same through the environment
    python spaces/app.py --build_only                     # fill the caches (labels, atlas) and exit

Images come from the embedded corpus' test split (`modeling_sparse_clip.data.build_corpus`) or from
a folder (`--images_dir`, captions from file names). Uploads stay in a private temp folder.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import threading
import traceback
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

import gradio as gr
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError
from transformers import HfArgumentParser

from modeling_sparse_clip.interpret import (
    ConceptEvolution,
    FeatureEncoder,
    ZeroShotClassifier,
    concept_features,
    discover_checkpoints,
    load_or_build_feature_atlas,
    load_or_compute_concept_labels,
    steer_image,
)
from modeling_sparse_clip.interpret.encoding import hash_strings

log = logging.getLogger("sparse_clip_space")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 25_000_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
Image.MAX_IMAGE_PIXELS = 4 * MAX_PIXELS  # PIL refuses decompression bombs beyond this


@dataclass
class SpaceArguments:
    model: str = field(
        default=os.environ.get("SPARSE_CLIP_MODEL", str(REPO_ROOT / "outputs" / "embedded" / "sparse")),
        metadata={"help": "Sparse CLIP folder or Hub id (env SPARSE_CLIP_MODEL)."},
    )
    images_dir: str | None = field(default=os.environ.get("SPARSE_CLIP_IMAGES"), metadata={"help": "Folder of images for the atlas and gallery (default: the corpus test split)."})
    data_cache: str = field(default=str(REPO_ROOT / ".cache" / "data"), metadata={"help": "Cache folder of modeling_sparse_clip.data."})
    max_images: int = field(default=2000, metadata={"help": "At most this many atlas images."})
    vocabulary: str | None = field(default=None, metadata={"help": "A word list (one per line) for concept labels (default: the paper's vocabulary)."})
    classes: str | None = field(default=None, metadata={"help": "Comma-separated zero-shot classes (default: the emoji_subgroups eval set, else the first zero-shot one)."})
    templates: str = field(default="a photo of a {}.|an emoji of a {}.|an icon of a {}.", metadata={"help": "'|'-separated prompt templates when --classes is given."})
    cache_dir: str = field(default=str(REPO_ROOT / ".cache" / "interpret"), metadata={"help": "Cache of tower outputs (and labels when the model folder is read-only)."})
    evolution: bool = field(default=True, metadata={"help": "Load evolution/progress_* checkpoints when present."})
    host: str = field(default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    port: int = field(default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    build_only: bool = field(default=False, metadata={"help": "Compute and cache labels/atlases, then exit."})
    vlm: str | None = field(
        default=os.environ.get("SPARSE_CLIP_VLM", str(REPO_ROOT / "outputs" / "embedded" / "vlm")),
        metadata={"help": "Sparse-feature VLM folder whose captions the Steering tab shows before/after (env SPARSE_CLIP_VLM; skipped when absent)."},
    )


class UserInputError(ValueError):
    """A problem with what the visitor typed or uploaded: shown as is."""


# ------------------------------------------------------------------------------------------------
# Data the Space shows
# ------------------------------------------------------------------------------------------------
class FolderImages:
    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[int(i)]) as im:
            return im.convert("RGB")


def load_image_set(args: SpaceArguments):
    """(images, ids, captions, source) for the atlas and the galleries."""
    if args.images_dir:
        paths = sorted(p for p in Path(args.images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: args.max_images]
        if not paths:
            raise FileNotFoundError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {args.images_dir}.")
        captions = [p.stem.replace("_", " ").replace("-", " ") for p in paths]
        return FolderImages(paths), [p.name for p in paths], captions, f"folder:{args.images_dir}"
    from modeling_sparse_clip.data import build_corpus
    from modeling_sparse_clip.interpret import DatasetImages

    split = build_corpus(cache_dir=args.data_cache)["test"]
    split = split.select(range(min(args.max_images, len(split))))
    captions = [t[0] if isinstance(t, list) and t else str(t) for t in split["text"]]
    ids = [f"test/{i}" for i in range(len(split))]
    return DatasetImages(split), ids, captions, "corpus:test"


def load_classes(args: SpaceArguments) -> tuple[list[str], list[str], str]:
    if args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        return classes, args.templates.split("|"), "--classes"
    from modeling_sparse_clip.data import load_eval_sets

    eval_sets = load_eval_sets(cache_dir=args.data_cache)
    # Emoji subgroups first: the most varied everyday concepts of the embedded sets.
    for eval_set in sorted(eval_sets.values(), key=lambda e: e.name != "emoji_subgroups"):
        if eval_set.task == "zero_shot":
            return list(eval_set.class_names), list(eval_set.templates or ["{}"]), eval_set.name
    raise FileNotFoundError("No zero-shot eval set found: pass --classes 'dog,cat,...'.")


def load_vocabulary(args: SpaceArguments) -> list[str]:
    if args.vocabulary:
        words = [w.strip() for w in Path(args.vocabulary).read_text().splitlines() if w.strip()]
        return list(dict.fromkeys(words))
    from modeling_sparse_clip.data import build_vocabulary

    return build_vocabulary()


class SpaceState:
    """Everything loaded once at start: model, labels, atlas, classifier, evolution."""

    def __init__(self, args: SpaceArguments):
        self.args = args
        log.info("loading %s", args.model)
        self.encoder = FeatureEncoder.from_pretrained(args.model, cache_dir=args.cache_dir)
        self.vocabulary = load_vocabulary(args)
        self.labels = load_or_compute_concept_labels(self.encoder, self.vocabulary, cache_dir=args.cache_dir)
        self.images, self.ids, self.captions, source = load_image_set(args)
        atlas_name = "atlas_" + hash_strings([source])
        self.atlas = load_or_build_feature_atlas(self.encoder, self.images, self.ids, self.captions, name=atlas_name, cache_dir=args.cache_dir, source=source)
        self.atlas.image_index()  # built once here, not inside concurrent requests
        self.class_names, self.templates, self.class_source = load_classes(args)
        self.classifier = ZeroShotClassifier(self.encoder, self.class_names, self.templates)
        self.evolution = None
        checkpoints = discover_checkpoints(args.model) if args.evolution and Path(args.model).is_dir() else []
        if checkpoints:
            self.evolution = ConceptEvolution.build(
                checkpoints, self.vocabulary, self.images, self.ids, self.captions, atlas_name=atlas_name, cache_dir=args.cache_dir
            )
        self.gallery_rows = list(range(min(48, len(self.ids))))
        # Images go out as files written once (atomically): gradio re-writes a PIL output's cache file
        # on every request, which races with concurrent downloads of the same image.
        self.files_dir = Path(os.environ["GRADIO_TEMP_DIR"]) / "atlas-images"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._files_lock = threading.Lock()

    def _image_file(self, row: int, size: int | None) -> str:
        path = self.files_dir / f"{row}_{size or 'full'}.png"
        if not path.exists():
            image = self.images[row].convert("RGB")
            if size:
                image.thumbnail((size, size))
            with self._files_lock:
                if not path.exists():
                    staging = path.with_suffix(f".{threading.get_ident()}.tmp")
                    image.save(staging, format="PNG")
                    os.replace(staging, path)
        return str(path)

    def thumb(self, row: int) -> str:
        return self._image_file(int(row), 128)

    def image_file(self, row: int) -> str:
        return self._image_file(int(row), None)

    def gallery_items(self, rows):
        return [(self.thumb(r), self.captions[r][:40]) for r in rows]


# ------------------------------------------------------------------------------------------------
# Input checks: every problem becomes a sentence for the visitor
# ------------------------------------------------------------------------------------------------
def open_upload(path: str | None) -> Image.Image:
    if not path:
        raise UserInputError("No file uploaded: choose an image file (PNG, JPEG, WebP or GIF).")
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise UserInputError(f"The file is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB. Upload a smaller image.")
    try:
        with Image.open(path) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise UserInputError(
                    f"The image is {width}x{height} pixels ({width * height / 1e6:.0f} MP); the limit is {MAX_PIXELS / 1e6:.0f} MP. Resize it first."
                )
            probe.thumbnail((1024, 1024))
            return probe.convert("RGB")
    except UserInputError:
        raise
    except Image.DecompressionBombError:
        raise UserInputError(f"The image is too large to open safely (limit {MAX_PIXELS / 1e6:.0f} MP). Resize it first.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        name = Path(path).name
        raise UserInputError(f"'{name}' is not an image this Space can read. Upload a PNG, JPEG, WebP or GIF file.") from None


def check_text(text: str | None, what: str = "text") -> str:
    text = (text or "").strip()
    if not text:
        raise UserInputError(f"The {what} is empty: type something, e.g. 'a dog on the grass'.")
    if len(text) > 500:
        raise UserInputError(f"The {what} has {len(text)} characters; keep it under 500.")
    return text


def parse_feature_query(state: SpaceState, query: str | None) -> tuple[str, object]:
    """('id', int) or ('word', str); raises UserInputError for unknown ids and words."""
    query = (query or "").strip()
    if not query:
        raise UserInputError("Type a concept word (e.g. 'dog') or a feature id (e.g. 42).")
    if query.lstrip("#f").isdigit():
        feature = int(query.lstrip("#f"))
        if feature >= state.labels.num_features:
            raise UserInputError(f"Feature {feature} does not exist: this model has features 0..{state.labels.num_features - 1}.")
        return "id", feature
    word = query.lower()
    if not state.labels.has_word(word):
        hints = state.labels.suggestions(word)
        hint = f" Did you mean: {', '.join(hints)}?" if hints else ""
        raise UserInputError(f"'{query}' is not in the {len(state.vocabulary):,}-word concept vocabulary.{hint}")
    return "word", word


def parse_words(state: SpaceState, text: str | None) -> list[str]:
    words = [w.strip().lower() for w in (text or "").split(",") if w.strip()]
    for word in words:
        if not state.labels.has_word(word):
            hints = state.labels.suggestions(word)
            hint = f" Did you mean: {', '.join(hints)}?" if hints else ""
            raise UserInputError(f"'{word}' is not in the concept vocabulary.{hint}")
    return words


def guarded(n_outputs: int):
    """Run a handler; on any error show a message in the status box and leave other outputs as they are."""

    def wrap(fn):
        @functools.wraps(fn)  # keeps the signature: gradio injects gr.SelectData by type hint
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UserInputError as error:
                message = f"**Cannot do that:** {error}"
            except (KeyError, ValueError) as error:
                message = f"**Cannot do that:** {error.args[0] if error.args else error}"
            except Exception as error:  # never a stack trace in the UI; keep it in the log
                log.error("handler %s failed:\n%s", fn.__name__, traceback.format_exc())
                message = f"**Something went wrong** ({type(error).__name__}). Try another input."
            return (message,) + tuple(gr.skip() for _ in range(n_outputs - 1))

        return handler

    return wrap


# ------------------------------------------------------------------------------------------------
# Views
# ------------------------------------------------------------------------------------------------
def bar_chart(names: list[str], values: list[float], title: str, values_b: list[float] | None = None, legend=("", "")) -> Figure:
    fig = Figure(figsize=(7, max(2.2, 0.36 * len(names) + 0.8)), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    if values_b is None:
        ax.barh(y, values, color="#4c72b0")
    else:
        ax.barh(y - 0.2, values, height=0.4, color="#4c72b0", label=legend[0])
        ax.barh(y + 0.2, values_b, height=0.4, color="#dd8452", label=legend[1])
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("activation (share of the L2-normalised embedding)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def active_features(acts: np.ndarray, n: int) -> list[tuple[int, float]]:
    norm = float(np.linalg.norm(acts))
    if norm == 0:
        return []
    order = np.argsort(-acts)[:n]
    return [(int(f), float(acts[f] / norm)) for f in order if acts[f] > 0]


def feature_table(state: SpaceState, features: list[tuple[int, float]]) -> pd.DataFrame:
    rows = []
    for f, value in features:
        summary = state.atlas.summary(f)
        rows.append({
            "feature": f,
            "activation": round(value, 4),
            "top words": state.labels.label(f, 4),
            "density": f"{summary['density']:.2%}",
            "modality": "-" if summary["modality"] is None else f"{summary['modality']:.2f}",
        })
    return pd.DataFrame(rows, columns=["feature", "activation", "top words", "density", "modality"])


def top_image_gallery(state: SpaceState, features: list[int], per_feature: int = 4):
    items = []
    for f in features:
        for row, act in state.atlas.top(f, per_feature):
            items.append((state.thumb(row), f"f{f} {state.labels.label(f, 1)} · {act:.2f}"))
    return items


def describe_features(state: SpaceState, acts: np.ndarray, what: str, n: int = 12):
    features = active_features(acts, n)
    if not features:
        raise UserInputError(f"No feature is active for this {what}: its embedding is all zeros.")
    l0 = int((acts > 0).sum())
    names = [f"f{f}: {state.labels.label(f, 2)}" for f, _ in features]
    chart = bar_chart(names, [v for _, v in features], f"top {len(features)} of {l0} active features ({what})")
    status = f"{l0} of {len(acts):,} features active ({l0 / len(acts):.2%}). Top images of the 4 strongest below."
    return status, chart, feature_table(state, features), top_image_gallery(state, [f for f, _ in features[:4]])


class Handlers:
    def __init__(self, state: SpaceState):
        self.state = state

    # -- Inspect --------------------------------------------------------------------------------
    def inspect_gallery(self, evt: gr.SelectData):
        return self._inspect_row(int(evt.index))

    def _inspect_row(self, row: int):
        acts = self.state.atlas.image_acts[row].toarray()[0]
        status, chart, table, gallery = describe_features(self.state, acts, "image")
        return f"**{self.state.captions[row]}** · {status}", self.state.image_file(row), chart, table, gallery

    def inspect_upload(self, path):
        image = open_upload(path)
        status, chart, table, gallery = describe_features(self.state, self.state.encoder.encode_image(image), "image")
        return f"**Uploaded image** · {status}", path, chart, table, gallery

    def inspect_text(self, text):
        text = check_text(text)
        status, chart, table, gallery = describe_features(self.state, self.state.encoder.encode_text(text), "text")
        return f"**“{text}”** · {status}", None, chart, table, gallery

    # -- Feature browser ------------------------------------------------------------------------
    def browse(self, query):
        state = self.state
        kind, value = parse_feature_query(state, query)
        if kind == "id":
            feature, matches = value, [(value, None)]
            intro = f"Feature **{feature}**"
        else:
            matches = concept_features(state.encoder, value, top_k=8)
            if not matches:
                raise UserInputError(f"'{value}' activates no feature of this model.")
            feature = matches[0][0]
            intro = f"**'{value}'** activates features {', '.join(f'f{f}' for f, _ in matches)}; showing its strongest, **f{feature}**"
        words = state.labels.words(feature, 10)
        summary = state.atlas.summary(feature)
        modality = "-" if summary["modality"] is None else f"{summary['modality']:.2f} ({state.atlas.modality_kind(feature)})"
        details = (
            f"{intro}.\n\n**Top words:** {', '.join(f'{w} ({s:.2f})' for w, s in words) or '(no vocabulary word activates it)'}\n\n"
            f"**Density:** fires on {summary['density']:.2%} of {state.atlas.num_images:,} images "
            f"(magnitude-weighted {summary['weighted_density']:.3f}) · **Modality score:** {modality}"
        )
        table = pd.DataFrame(
            [{"feature": f, "word activation": "-" if a is None else round(a, 4), "top words": state.labels.label(f, 5)} for f, a in matches]
        )
        gallery = top_image_gallery(state, [feature], per_feature=8)
        if state.evolution is not None:
            headers, rows = state.evolution.table(feature)
            evolution_table = pd.DataFrame(rows, columns=headers)
            evolution_plot = state.evolution.plot(feature)
            evo_gallery = []
            for view in state.evolution.checkpoints:
                if view.atlas is not None:
                    evo_gallery += [(state.thumb(r), f"{view.name} · {a:.2f}") for r, a in view.atlas.top(feature, 3)]
        else:
            evolution_table = pd.DataFrame([{"checkpoint": "no evolution/progress_* checkpoints next to this model"}])
            evolution_plot, evo_gallery = None, []
        return details, table, gallery, evolution_table, evolution_plot, evo_gallery

    # -- Steering -------------------------------------------------------------------------------
    def steer(self, row, upload, suppress, boost, top_k, strength):
        state = self.state
        if upload:
            acts, image, image_name = state.encoder.encode_image(open_upload(upload)), upload, "the uploaded image"
        elif row is not None:
            image, acts, image_name = state.image_file(int(row)), state.atlas.image_acts[int(row)].toarray()[0], f"'{state.captions[int(row)]}'"
        else:
            raise UserInputError("Choose an image first: click one in the gallery or upload one.")
        suppress_words, boost_words = parse_words(state, suppress), parse_words(state, boost)
        if not suppress_words and not boost_words:
            raise UserInputError("Name at least one concept to suppress or boost (comma-separated words, e.g. 'dog').")
        result = steer_image(
            state.encoder, acts, state.classifier, state.atlas.image_index(), suppress=suppress_words, boost=boost_words,
            top_k=int(top_k), strength=float(strength), n=5, captioner=CAPTIONER,
        )
        used = "; ".join(f"'{w}' -> {', '.join(f'f{f} ({state.labels.label(f, 2)})' for f in fs)}" for w, fs in result.features_of.items())
        status = (
            f"Steered {image_name}: {result.edit.describe()}.\n\n**Features per concept (top-{int(top_k)} through the text tower):** {used}\n\n"
            f"Strength {float(strength):g} = {float(strength):g} x the image's largest activation; zero-shot classes from {state.class_source}."
        )
        before = {name: p for name, p in result.before}
        after = {name: p for name, p in result.after}
        gallery_before = [(state.thumb(r), f"{state.captions[r][:30]} · {s:.2f}") for r, s in result.retrieval_before]
        gallery_after = [(state.thumb(r), f"{state.captions[r][:30]} · {s:.2f}") for r, s in result.retrieval_after]
        caption = (
            f"**Caption before:** {result.caption_before}\n\n**Caption after:** {result.caption_after}"
            if result.caption_before is not None
            else "_Generated captions before/after appear here once a captioning VLM is plugged in (`CAPTIONER` in spaces/app.py)._"
        )
        return status, image, before, after, gallery_before, gallery_after, caption

    # -- Shared concepts ------------------------------------------------------------------------
    def shared(self, row, upload, text):
        state = self.state
        text = check_text(text)
        if upload:
            image_acts = state.encoder.encode_image(open_upload(upload))
        elif row is not None:
            image_acts = state.atlas.image_acts[int(row)].toarray()[0]
        else:
            raise UserInputError("Choose an image first: click one in the gallery or upload one.")
        text_acts = state.encoder.encode_text(text)
        image_unit = image_acts / max(np.linalg.norm(image_acts), 1e-12)
        text_unit = text_acts / max(np.linalg.norm(text_acts), 1e-12)
        both = np.nonzero((image_unit > 0) & (text_unit > 0))[0]
        cosine = float(image_unit @ text_unit)
        header = (
            f"Image: {int((image_acts > 0).sum())} active · text: {int((text_acts > 0).sum())} active · "
            f"**{len(both)} shared** · cosine similarity {cosine:.3f}"
        )
        if len(both) == 0:
            return header + "\n\nThe image and the text share no active feature.", None, pd.DataFrame(columns=["feature", "image", "text", "top words"])
        order = both[np.argsort(-(image_unit[both] * text_unit[both]))][:12]
        names = [f"f{f}: {state.labels.label(int(f), 2)}" for f in order]
        chart = bar_chart(names, list(image_unit[order]), "shared features (by contribution to the similarity)", list(text_unit[order]), ("image", "text"))
        table = pd.DataFrame(
            [{"feature": int(f), "image": round(float(image_unit[f]), 4), "text": round(float(text_unit[f]), 4),
              "contribution": round(float(image_unit[f] * text_unit[f]), 4), "top words": state.labels.label(int(f), 4)} for f in order]
        )
        return header, chart, table


# A later issue plugs in a small VLM: a callable (image activations -> caption) shown before/after steering.
CAPTIONER = None


def load_captioner(args: SpaceArguments, encoder: FeatureEncoder):
    """The sparse-feature VLM (modeling_sparse_clip.vlm) at `args.vlm` when it was trained on this model's features, else None."""
    if not args.vlm or not (Path(args.vlm) / "config.json").exists():
        log.info("no captioning VLM at %s: the Steering tab shows no captions", args.vlm)
        return None
    from modeling_sparse_clip.vlm import SparseFeatureCaptioner

    try:
        return SparseFeatureCaptioner.from_pretrained(args.vlm, encoder=encoder)
    except ValueError as err:  # a VLM trained on another Sparse CLIP's features would caption garbage
        log.warning("captioning VLM %s not used: %s", args.vlm, err)
        return None


def build_demo(state: SpaceState) -> gr.Blocks:
    h = Handlers(state)
    samples = state.gallery_items(state.gallery_rows)
    cfg = state.encoder.model.config
    with gr.Blocks(title="Sparse CLIP explorer") as demo:
        gr.Markdown(
            f"# Sparse CLIP explorer\nModel `{state.args.model}` · {cfg.projection_dim:,} features · "
            f"{len(state.vocabulary):,} concept words · atlas of {state.atlas.num_images:,} images"
            + (f" · evolution over {', '.join(state.evolution.names)}" if state.evolution else "")
        )
        with gr.Tabs():
            with gr.Tab("Inspect", id="inspect"):
                with gr.Row():
                    with gr.Column(scale=1):
                        inspect_gallery = gr.Gallery(samples, label="Pick an image", columns=6, height=300, allow_preview=False, elem_id="inspect-gallery")
                        inspect_upload = gr.File(label="…or upload an image", type="filepath", elem_id="inspect-upload")
                        inspect_text = gr.Textbox(label="…or type a text", placeholder="a dog on the grass", elem_id="inspect-text")
                        inspect_text_button = gr.Button("Inspect text", variant="primary")
                    with gr.Column(scale=2):
                        inspect_status = gr.Markdown(elem_id="inspect-status")
                        inspect_image = gr.Image(label="input", height=160, interactive=False)
                        inspect_chart = gr.Plot(label="active features")
                inspect_table = gr.Dataframe(label="active features", interactive=False)
                inspect_tops = gr.Gallery(label="top images of the strongest features", columns=8, height=260, allow_preview=False)
                outputs = [inspect_status, inspect_image, inspect_chart, inspect_table, inspect_tops]
                inspect_gallery.select(guarded(5)(h.inspect_gallery), None, outputs, api_name=False)
                inspect_upload.upload(guarded(5)(h.inspect_upload), inspect_upload, outputs, api_name="inspect_upload")
                inspect_text_button.click(guarded(5)(h.inspect_text), inspect_text, outputs, api_name="inspect_text")
                inspect_text.submit(guarded(5)(h.inspect_text), inspect_text, outputs, api_name=False)

            with gr.Tab("Feature browser", id="browser"):
                with gr.Row():
                    browse_query = gr.Textbox(label="Concept word or feature id", placeholder="dog  or  42", elem_id="browse-query", scale=3)
                    browse_button = gr.Button("Search", variant="primary", scale=1)
                browse_details = gr.Markdown(elem_id="browse-status")
                browse_matches = gr.Dataframe(label="features", interactive=False)
                browse_gallery = gr.Gallery(label="top images", columns=8, height=200, allow_preview=False)
                gr.Markdown("### Evolution across training checkpoints")
                with gr.Row():
                    evolution_table = gr.Dataframe(label="top words per checkpoint", interactive=False)
                    evolution_plot = gr.Plot(label="evolution")
                evolution_gallery = gr.Gallery(label="top images per checkpoint", columns=9, height=160, allow_preview=False)
                browse_outputs = [browse_details, browse_matches, browse_gallery, evolution_table, evolution_plot, evolution_gallery]
                browse_button.click(guarded(6)(h.browse), browse_query, browse_outputs, api_name="browse")
                browse_query.submit(guarded(6)(h.browse), browse_query, browse_outputs, api_name=False)

            with gr.Tab("Steering", id="steering"):
                steer_row = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=1):
                        steer_gallery = gr.Gallery(samples, label="Choose an image", columns=6, height=260, allow_preview=False, elem_id="steer-gallery")
                        steer_upload = gr.File(label="…or upload one", type="filepath", elem_id="steer-upload")
                        steer_suppress = gr.Textbox(label="Suppress concepts (comma-separated)", placeholder="dog", elem_id="steer-suppress")
                        steer_boost = gr.Textbox(label="Boost concepts (comma-separated)", placeholder="cat", elem_id="steer-boost")
                        steer_topk = gr.Slider(1, 8, value=2, step=1, label="features per concept (top-K through the text tower)")
                        steer_strength = gr.Slider(0.0, 6.0, value=2.0, step=0.25, label="boost strength SS (x the image's largest activation)")
                        steer_button = gr.Button("Steer", variant="primary")
                    with gr.Column(scale=2):
                        steer_status = gr.Markdown("Choose an image, then name concepts to suppress or boost.", elem_id="steer-status")
                        steer_image = gr.Image(label="image", height=140, interactive=False)
                        with gr.Row():
                            steer_before = gr.Label(label="zero-shot before", num_top_classes=5, elem_id="steer-before")
                            steer_after = gr.Label(label="zero-shot after", num_top_classes=5, elem_id="steer-after")
                        steer_retrieval_before = gr.Gallery(label="retrieval before", columns=5, height=150, allow_preview=False)
                        steer_retrieval_after = gr.Gallery(label="retrieval after", columns=5, height=150, allow_preview=False)
                        # Hook for a later issue: a small VLM's caption of the image before/after steering.
                        steer_caption = gr.Markdown(elem_id="steer-caption")
                # Picking a gallery image replaces an earlier upload (the upload would win otherwise).
                steer_gallery.select(_select_index, None, [steer_row, steer_upload], api_name=False)
                steer_button.click(
                    guarded(7)(h.steer),
                    [steer_row, steer_upload, steer_suppress, steer_boost, steer_topk, steer_strength],
                    [steer_status, steer_image, steer_before, steer_after, steer_retrieval_before, steer_retrieval_after, steer_caption],
                    api_name="steer",
                )

            with gr.Tab("Shared concepts", id="shared"):
                shared_row = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=1):
                        shared_gallery = gr.Gallery(samples, label="Choose an image", columns=6, height=260, allow_preview=False, elem_id="shared-gallery")
                        shared_upload = gr.File(label="…or upload one", type="filepath", elem_id="shared-upload")
                    with gr.Column(scale=1):
                        shared_text = gr.Textbox(label="Text", placeholder="a smiling face", elem_id="shared-text")
                        shared_button = gr.Button("Compare", variant="primary")
                        shared_status = gr.Markdown(elem_id="shared-status")
                shared_chart = gr.Plot(label="shared features")
                shared_table = gr.Dataframe(label="shared features", interactive=False)
                shared_gallery.select(_select_index, None, [shared_row, shared_upload], api_name=False)
                shared_button.click(guarded(3)(h.shared), [shared_row, shared_upload, shared_text], [shared_status, shared_chart, shared_table], api_name="shared")
    return demo


def _select_index(evt: gr.SelectData):
    return int(evt.index), None


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    (args,) = HfArgumentParser(SpaceArguments).parse_args_into_dataclasses(args=argv)
    state = SpaceState(args)
    if args.build_only:
        print(f"caches ready: {state.labels.num_features} features, {state.atlas.num_images} atlas images")
        return
    global CAPTIONER
    CAPTIONER = CAPTIONER or load_captioner(args, state.encoder)
    demo = build_demo(state)
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, show_error=False, max_file_size="25mb")


if __name__ == "__main__":
    main()
