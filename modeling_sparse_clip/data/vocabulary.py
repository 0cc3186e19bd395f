"""The paper's concept vocabulary: the first lemma of every WordNet synset ∪ wordfreq's 20K most common
English words, underscores to spaces, duplicates removed (the paper reports 98,619 words).

WordNet's `data.{noun,verb,adj,adv}` files are parsed directly (one synset per line: offset, lexfile,
type, word count in hex, then word / lex-id pairs), which needs no NLTK corpus set-up.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..atomic import atomic_write_text
from ..constants import DATA_CACHE_DIR, WORDNET_DIR

logger = logging.getLogger(__name__)

WORDNET_POS_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDFREQ_TOP_N = 20000
# Adjective lemmas may carry a syntactic marker: `aforesaid(a)`, `galore(ip)`, `elect(p)`.
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def clean_word(word: str) -> str:
    return " ".join(_ADJ_MARKER.sub("", word).replace("_", " ").split())


def wordnet_first_lemmas(wordnet_dir: str | os.PathLike = WORDNET_DIR) -> list[str]:
    """The first lemma of each synset, in file order (117,659 synsets in WordNet 3.0)."""
    wordnet_dir = Path(wordnet_dir)
    if not (wordnet_dir / "data.noun").exists():
        raise FileNotFoundError(f"WordNet not found in {wordnet_dir}: run `apt-get install wordnet-base` or `make sources`")
    lemmas = []
    for name in WORDNET_POS_FILES:
        with open(wordnet_dir / name, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                fields = line.split(" ", 5)
                lemmas.append(clean_word(fields[4]))
    return lemmas


def wordfreq_top_words(n: int = WORDFREQ_TOP_N) -> list[str]:
    try:
        from wordfreq import top_n_list
    except ImportError as error:
        raise ImportError("wordfreq is missing: run `pip install wordfreq` or `make sources`") from error
    return [clean_word(w) for w in top_n_list("en", n)]


def build_vocabulary(
    path: str | os.PathLike | None = DATA_CACHE_DIR / "vocabulary.txt",
    wordnet_dir: str | os.PathLike = WORDNET_DIR,
    top_n: int = WORDFREQ_TOP_N,
) -> list[str]:
    """WordNet first lemmas then the wordfreq words, deduplicated in that order; written one per line."""
    words = list(dict.fromkeys(w for w in [*wordnet_first_lemmas(wordnet_dir), *wordfreq_top_words(top_n)] if w))
    if path is not None:
        path = Path(path)
        atomic_write_text(path, "\n".join(words) + "\n")
        logger.info("vocabulary: %d words written to %s", len(words), path)
    return words


def load_vocabulary(path: str | os.PathLike = DATA_CACHE_DIR / "vocabulary.txt") -> list[str]:
    """Read a vocabulary file written by `build_vocabulary` (building it first when absent)."""
    path = Path(path)
    if not path.exists():
        return build_vocabulary(path)
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def normalise_query(word: str) -> str:
    """What a visitor typed, in the vocabulary's spelling conventions: spaces for underscores, single spaces."""
    return " ".join(str(word).replace("_", " ").split())


class WordLookup:
    """Case-insensitive look-up of words in a vocabulary, the exact form preferred.

    The vocabulary keeps WordNet's capitals ("Persian cat", "Santa Claus", "Sno-cat") and sometimes
    several forms of one word ("Polish" and "polish"): `resolve` returns the form typed when it is
    there, else the lowercase form, else the first form in vocabulary order that matches ignoring case.
    """

    def __init__(self, words):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.folded: dict[str, int] = {}
        for i, w in enumerate(self.words):
            self.folded.setdefault(w.casefold(), i)

    def __len__(self) -> int:
        return len(self.words)

    def resolve(self, word: str) -> str | None:
        """The vocabulary's form of `word`, or None when no form of it is in the vocabulary."""
        query = normalise_query(word)
        for candidate in (query, query.lower()):
            if candidate in self.index:
                return candidate
        i = self.folded.get(query.casefold())
        return None if i is None else self.words[i]

    def position(self, word: str) -> int | None:
        resolved = self.resolve(word)
        return None if resolved is None else self.index[resolved]
