"""The tabs' event handlers and the checks of what a visitor types or uploads.

Every problem with an input becomes one sentence in the tab's status box (`guarded`), never a Python
message, and the tab's other outputs are cleared so that no earlier result stays under the message.
Handlers only read the state: each request's result depends on its own inputs alone.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import traceback
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from modeling_sparse_clip.images import open_image
from modeling_sparse_clip.interpret import concept_features, steer_image
from state import SpaceState
from views import active_features, bar_chart, evolution_view, feature_table, retrieval_gallery, shared_features_view, top_image_gallery

log = logging.getLogger("sparse_clip_space")

# The limits, stated once: the page, the README and gradio's own upload check all read these.
MAX_UPLOAD_MB = 20
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024  # gradio's "mb" is 1024 x 1024 bytes
MAX_MEGAPIXELS = 25
MAX_PIXELS = MAX_MEGAPIXELS * 1_000_000
MAX_TEXT_CHARS = 300  # longer texts are cut by the text tower anyway (its token limit)
MAX_QUERY_CHARS = 60  # a concept word or phrase, or a feature id
MAX_CONCEPTS = 8  # concept words per steering box
UPLOAD_HINT = f"PNG, JPEG, WebP or GIF, up to {MAX_UPLOAD_MB} MB and {MAX_MEGAPIXELS} megapixels"
Image.MAX_IMAGE_PIXELS = 4 * MAX_PIXELS  # PIL refuses decompression bombs beyond this
FEATURE_ID = re.compile(r"^(?:#|f)?\s*([0-9]+)$", re.ASCII | re.IGNORECASE)


class UserInputError(ValueError):
    """A problem with what the visitor typed or uploaded: shown as is."""


def shown(text: str, limit: int = 40) -> str:
    """A visitor's input as quoted back: shortened, Markdown characters escaped."""
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", text)


# ------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------
def open_upload(path: str | None) -> Image.Image:
    """The upload read through the one image path (as training read its images), or a UserInputError."""
    if not path:
        raise UserInputError(f"No file uploaded: choose an image file ({UPLOAD_HINT}).")
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise UserInputError(f"The file is {size / 1024 / 1024:.1f} MB; the limit is {MAX_UPLOAD_MB} MB. Upload a smaller image.")
    try:
        with Image.open(path) as probe:
            width, height = probe.size
        if width * height > MAX_PIXELS:
            raise UserInputError(
                f"The image is {width}x{height} pixels ({width * height / 1e6:.0f} MP); the limit is {MAX_MEGAPIXELS} MP. Resize it first."
            )
        image = open_image(path)
    except UserInputError:
        raise
    except Image.DecompressionBombError:
        raise UserInputError(f"The image is too large to open safely (limit {MAX_MEGAPIXELS} MP). Resize it first.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError):
        raise UserInputError(f"'{shown(Path(path).name)}' is not an image this Space can read. Upload a PNG, JPEG, WebP or GIF file.") from None
    image.thumbnail((1024, 1024))
    return image


def check_text(text: str | None, what: str = "text") -> str:
    text = " ".join((text or "").split())
    if not text:
        raise UserInputError(f"The {what} is empty: type something, e.g. 'a dog on the grass'.")
    if len(text) > MAX_TEXT_CHARS:
        raise UserInputError(f"The {what} has {len(text):,} characters; keep it under {MAX_TEXT_CHARS}.")
    return text


def unknown_word(state: SpaceState, word: str) -> UserInputError:
    hints = state.labels.suggestions(word) if len(word) <= MAX_QUERY_CHARS else []
    hint = f" Did you mean: {', '.join(shown(h) for h in hints)}?" if hints else ""
    return UserInputError(f"'{shown(word)}' is not in the {len(state.vocabulary):,}-word concept vocabulary.{hint}")


def parse_feature_query(state: SpaceState, query: str | None) -> tuple[str, object]:
    """('id', int) or ('word', the vocabulary's form of the word); UserInputError for anything else."""
    query = " ".join((query or "").split())
    last = state.labels.num_features - 1
    if not query:
        raise UserInputError(f"Type a concept word (e.g. 'dog') or a feature id (0 to {last}).")
    if len(query) > MAX_QUERY_CHARS:
        raise UserInputError(f"That is {len(query):,} characters; a concept word or feature id has at most {MAX_QUERY_CHARS}.")
    match = FEATURE_ID.match(query)
    if match:
        feature = int(match.group(1))
        if feature > last:
            raise UserInputError(f"Feature {shown(match.group(1), 20)} does not exist: this model has features 0 to {last}.")
        return "id", feature
    if any(c.isdigit() for c in query) and not any(c.isalpha() for c in query):
        raise UserInputError(f"'{shown(query)}' is not a feature id: write it with the digits 0-9, from 0 to {last}.")
    word = state.labels.resolve_word(query)
    if word is None:
        raise unknown_word(state, query)
    return "word", word


def parse_words(state: SpaceState, text: str | None, box: str) -> list[str]:
    """The vocabulary forms of comma-separated concept words, de-duplicated, at most MAX_CONCEPTS."""
    raw = [" ".join(w.split()) for w in (text or "").split(",")]
    raw = [w for w in raw if w]
    if len(raw) > MAX_CONCEPTS:
        raise UserInputError(f"{len(raw):,} concepts to {box}; name at most {MAX_CONCEPTS} (comma-separated).")
    words = []
    for word in raw:
        if len(word) > MAX_QUERY_CHARS:
            raise UserInputError(f"A concept to {box} has {len(word):,} characters; a concept word has at most {MAX_QUERY_CHARS}.")
        resolved = state.labels.resolve_word(word)
        if resolved is None:
            raise unknown_word(state, word)
        if resolved not in words:
            words.append(resolved)
    return words


def guarded(n_outputs: int):
    """Run a handler; on any error show one sentence in the status box and clear the other outputs."""

    def wrap(fn):
        @functools.wraps(fn)  # keeps the signature: gradio injects gr.SelectData by type hint
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UserInputError as error:
                message = f"**Cannot do that:** {error}"
            except Exception as error:  # never a Python message in the UI; the trace goes to the log
                log.error("handler %s failed:\n%s", fn.__name__, traceback.format_exc())
                message = f"**Something went wrong** ({type(error).__name__}). Try another input."
            return (message,) + (None,) * (n_outputs - 1)

        return handler

    return wrap


def select_index(evt: gr.SelectData):
    """A gallery click: the row picked, and None for the upload it replaces (the upload would win otherwise)."""
    return int(evt.index), None


def word_features(state: SpaceState, word: str, top_k: int) -> list[int]:
    """The top-k features a concept word activates through the text tower (UserInputError when none)."""
    try:
        matches = concept_features(state.encoder, word, top_k=top_k)
    except ValueError:
        matches = []
    if not matches:
        raise UserInputError(f"'{shown(word)}' activates no feature of this model: try another word.")
    return [f for f, _ in matches]


# ------------------------------------------------------------------------------------------------
# Handlers
# ------------------------------------------------------------------------------------------------
def describe_features(state: SpaceState, acts: np.ndarray, what: str, n: int = 12):
    features = active_features(acts, n)
    if not features:
        raise UserInputError(f"No feature is active for this {what}: try another {what}.")
    l0 = int((acts > 0).sum())
    names = [f"f{f}: {state.labels.label(f, 2)}" for f, _ in features]
    chart = bar_chart(names, [v for _, v in features], f"top {len(features)} of {l0} active features ({what})")
    status = f"{l0} of {len(acts):,} features active ({l0 / len(acts):.2%}). Top images of the 4 strongest below."
    return status, chart, feature_table(state, features), top_image_gallery(state, [f for f, _ in features[:4]])


class Handlers:
    """The event handlers of every tab, bound to the loaded (read-only) state."""

    def __init__(self, state: SpaceState):
        self.state = state

    def _picked_image(self, row, upload) -> tuple[np.ndarray, str, str]:
        """(activations, image file, how to name it) of the uploaded image, else of the gallery row."""
        state = self.state
        if upload:
            return state.encoder.encode_image(open_upload(upload)), upload, "the uploaded image"
        if row is not None:
            row = int(row)
            if not 0 <= row < len(state.ids):
                raise UserInputError("Choose an image first: click one in the gallery or upload one.")
            return state.atlas.image_activations(row), state.image_file(row), f"'{shown(state.captions[row])}'"
        raise UserInputError("Choose an image first: click one in the gallery or upload one.")

    # -- Inspect --------------------------------------------------------------------------------
    def inspect_gallery(self, evt: gr.SelectData):
        row = self.state.gallery_rows[int(evt.index)]
        status, chart, table, gallery = describe_features(self.state, self.state.atlas.image_activations(row), "image")
        return f"**{shown(self.state.captions[row], 60)}** · {status}", self.state.image_file(row), chart, table, gallery

    def inspect_upload(self, path):
        image = open_upload(path)
        status, chart, table, gallery = describe_features(self.state, self.state.encoder.encode_image(image), "image")
        return f"**Uploaded image** '{shown(Path(path).name)}' · {status}", path, chart, table, gallery

    def inspect_text(self, text):
        text = check_text(text)
        status, chart, table, gallery = describe_features(self.state, self.state.encoder.encode_text(text), "text")
        return f"**“{shown(text, 80)}”** · {status}", None, chart, table, gallery

    # -- Feature browser ------------------------------------------------------------------------
    def browse(self, query):
        state = self.state
        kind, value = parse_feature_query(state, query)
        if kind == "id":
            feature, matches = value, [(value, None)]
            intro = f"Feature **{feature}**"
        else:
            try:
                matches = concept_features(state.encoder, value, top_k=8)
            except ValueError:
                matches = []
            if not matches:
                raise UserInputError(f"'{shown(value)}' activates no feature of this model: try another word.")
            feature = matches[0][0]
            intro = f"**'{shown(value)}'** activates features {', '.join(f'f{f}' for f, _ in matches)}; showing its strongest, **f{feature}**"
        words = state.labels.words(feature, 10)
        summary = state.atlas.summary(feature)
        modality = "-" if summary["modality"] is None else f"{summary['modality']:.2f} ({state.atlas.modality_kind(feature)})"
        details = (
            f"{intro}.\n\n**Top words:** {', '.join(f'{shown(w)} ({s:.2f})' for w, s in words) or '(no vocabulary word activates it)'}\n\n"
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
        suppress_words, boost_words = parse_words(state, suppress, "suppress"), parse_words(state, boost, "boost")
        if not suppress_words and not boost_words:
            raise UserInputError("Name at least one concept to suppress or boost (comma-separated words, e.g. 'dog').")
        both = [w for w in suppress_words if w in boost_words]
        if both:
            raise UserInputError(f"'{shown(both[0])}' is both suppressed and boosted: name it in one box only.")
        top_k, strength = int(min(max(int(top_k or 1), 1), 8)), float(min(max(float(strength or 0.0), 0.0), 6.0))
        acts, image, image_name = self._picked_image(row, upload)
        features_of = {w: word_features(state, w, top_k) for w in [*suppress_words, *boost_words]}
        result = steer_image(
            state.encoder, acts, state.classifier, state.atlas.image_index(),
            suppress_features=[f for w in suppress_words for f in features_of[w]],
            boost_features=[f for w in boost_words for f in features_of[w]],
            top_k=top_k, strength=strength, n=5, captioner=state.captioner,
        )
        used = "; ".join(f"'{shown(w)}' -> {', '.join(f'f{f} ({state.labels.label(f, 2)})' for f in fs)}" for w, fs in features_of.items())
        status = (
            f"Steered {image_name}: {result.edit.describe()}.\n\n**Features per concept (top-{top_k} through the text tower):** {used}\n\n"
            f"Strength {strength:g} = {strength:g} x the image's largest activation; zero-shot classes from {state.class_source}."
        )
        caption = (
            f"**Caption before:** {shown(result.caption_before, 300)}\n\n**Caption after:** {shown(result.caption_after, 300)}"
            if result.caption_before is not None
            else "_No captions here: this Space runs without a captioning model for these features. "
            "Where one is installed, the captions of the image before and after steering appear in this box._"
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
