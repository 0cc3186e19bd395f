"""The tabs' event handlers and the checks of what a visitor types or uploads.

Every problem with an input becomes a sentence in the tab's status box (`guarded`), never a stack trace.
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from modeling_sparse_clip.encoding import as_rgb
from modeling_sparse_clip.interpret import concept_features, steer_image
from state import SpaceState
from views import active_features, bar_chart, evolution_view, feature_table, retrieval_gallery, shared_features_view, top_image_gallery

log = logging.getLogger("sparse_clip_space")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 25_000_000
Image.MAX_IMAGE_PIXELS = 4 * MAX_PIXELS  # PIL refuses decompression bombs beyond this


class UserInputError(ValueError):
    """A problem with what the visitor typed or uploaded: shown as is."""


# ------------------------------------------------------------------------------------------------
# Input checks
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
            return as_rgb(probe)
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


def select_index(evt: gr.SelectData):
    """A gallery click: the row picked, and None for the upload it replaces (the upload would win otherwise)."""
    return int(evt.index), None


# ------------------------------------------------------------------------------------------------
# Handlers
# ------------------------------------------------------------------------------------------------
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
    """The event handlers of every tab, bound to the loaded state."""

    def __init__(self, state: SpaceState):
        self.state = state

    def _picked_image(self, row, upload) -> tuple[np.ndarray, str, str]:
        """(activations, image file, how to name it) of the uploaded image, else of the gallery row."""
        state = self.state
        if upload:
            return state.encoder.encode_image(open_upload(upload)), upload, "the uploaded image"
        if row is not None:
            return state.atlas.image_activations(int(row)), state.image_file(int(row)), f"'{state.captions[int(row)]}'"
        raise UserInputError("Choose an image first: click one in the gallery or upload one.")

    # -- Inspect --------------------------------------------------------------------------------
    def inspect_gallery(self, evt: gr.SelectData):
        row = int(evt.index)
        status, chart, table, gallery = describe_features(self.state, self.state.atlas.image_activations(row), "image")
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
        return (details, table, gallery, *evolution_view(state, feature))

    # -- Steering -------------------------------------------------------------------------------
    def steer(self, row, upload, suppress, boost, top_k, strength):
        state = self.state
        acts, image, image_name = self._picked_image(row, upload)
        suppress_words, boost_words = parse_words(state, suppress), parse_words(state, boost)
        if not suppress_words and not boost_words:
            raise UserInputError("Name at least one concept to suppress or boost (comma-separated words, e.g. 'dog').")
        result = steer_image(
            state.encoder, acts, state.classifier, state.atlas.image_index(), suppress=suppress_words, boost=boost_words,
            top_k=int(top_k), strength=float(strength), n=5, captioner=state.captioner,
        )
        used = "; ".join(f"'{w}' -> {', '.join(f'f{f} ({state.labels.label(f, 2)})' for f in fs)}" for w, fs in result.features_of.items())
        status = (
            f"Steered {image_name}: {result.edit.describe()}.\n\n**Features per concept (top-{int(top_k)} through the text tower):** {used}\n\n"
            f"Strength {float(strength):g} = {float(strength):g} x the image's largest activation; zero-shot classes from {state.class_source}."
        )
        caption = (
            f"**Caption before:** {result.caption_before}\n\n**Caption after:** {result.caption_after}"
            if result.caption_before is not None
            else "_Generated captions before/after appear here once a captioning VLM trained on this model's features is "
            "given (`--vlm FOLDER`)._"
        )
        return (
            status, image, dict(result.before), dict(result.after),
            retrieval_gallery(state, result.retrieval_before), retrieval_gallery(state, result.retrieval_after), caption,
        )

    # -- Shared concepts ------------------------------------------------------------------------
    def shared(self, row, upload, text):
        text = check_text(text)
        image_acts, _, _ = self._picked_image(row, upload)
        return shared_features_view(self.state, image_acts, self.state.encoder.encode_text(text))
