"""The paper's concept vocabulary, built from the real WordNet 3.0 files and wordfreq."""

from pathlib import Path

import pytest

from modeling_sparse_clip.data.vocabulary import (
    WORDNET_DIR,
    build_vocabulary,
    clean_word,
    load_vocabulary,
    wordfreq_top_words,
    wordnet_first_lemmas,
)

pytestmark = pytest.mark.skipif(
    not (Path(WORDNET_DIR) / "data.noun").exists(), reason="WordNet not installed: run `apt-get install wordnet-base` or `make sources`"
)


def test_wordnet_has_every_synset():
    lemmas = wordnet_first_lemmas()
    assert len(lemmas) == 117659  # WordNet 3.0's synset count
    assert lemmas[:3] == ["entity", "physical entity", "abstraction"]
    assert not any("_" in w or w.endswith(")") for w in lemmas)


def test_clean_word():
    assert clean_word("physical_entity") == "physical entity"
    assert clean_word("aforesaid(a)") == "aforesaid"
    assert clean_word("galore(ip)") == "galore"


def test_vocabulary_file_size_and_contents(tmp_path):
    path = tmp_path / "vocabulary.txt"
    words = build_vocabulary(path)
    assert 95_000 <= len(words) <= 100_000  # the paper reports 98,619; wordfreq's top list drifts by version
    assert len(set(words)) == len(words)
    assert all(w and "_" not in w and w == w.strip() for w in words)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == words
    assert load_vocabulary(path) == words
    top = wordfreq_top_words()
    assert len(top) == 20000 and {w for w in top if w} <= set(words)
    assert {"dog", "physical entity", "sailboat"} <= set(words)
    print(f"\nvocabulary: {len(words)} words")
