"""The sources of the embedded corpus, by name. The order is the corpus's row order, so it decides
which of two identical images is kept when they are merged: append new sources at the end."""

from __future__ import annotations

from .base import Source
from .digits import SklearnDigitsSource
from .emoji import GoogleEmojiSource, NotoEmojiSource, OpenMojiSource
from .fashion_mnist import FashionMNISTSource
from .game_icons import GameIconsSource
from .openclipart import OpenclipartSource

SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        NotoEmojiSource(),
        OpenMojiSource(),
        GoogleEmojiSource(),
        GameIconsSource(),
        OpenclipartSource(),
        FashionMNISTSource(),
        SklearnDigitsSource(),
    )
}
EMOJI_SOURCES = ("noto_emoji", "openmoji", "google_emoji")
