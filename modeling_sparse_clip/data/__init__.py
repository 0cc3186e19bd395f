"""Real embedded data for sparse-clip: image–text corpora, held-out evaluation sets, user data, vocabulary.

    from modeling_sparse_clip.data import build_corpus, load_eval_sets, build_vocabulary, load_image_text_dataset

`make sources` (`python .ci/install_sources.py`) installs every source; `sparse-clip-build-data`
builds everything and writes the data card. The default cache is `constants.DATA_CACHE_DIR`.
"""

from .captions import normalize_caption, normalize_captions
from .corpus import DEFAULT_MAX_PER_SOURCE, SPLIT_FRACTIONS, build_corpus, corpus_report, format_report, split_of
from .data_card import render_data_card, write_data_card
from .eval_sets import EvalSet, load_eval_sets
from .sources import SOURCES, build_source_dataset
from .user_data import load_image_text_dataset
from .vocabulary import build_vocabulary, load_vocabulary

__all__ = [
    "DEFAULT_MAX_PER_SOURCE",
    "SOURCES",
    "SPLIT_FRACTIONS",
    "EvalSet",
    "build_corpus",
    "build_source_dataset",
    "build_vocabulary",
    "corpus_report",
    "format_report",
    "load_eval_sets",
    "load_image_text_dataset",
    "load_vocabulary",
    "normalize_caption",
    "normalize_captions",
    "render_data_card",
    "split_of",
    "write_data_card",
]
