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
    WordLookup,
)

needs_wordnet = pytest.mark.skipif(
    not (Path(WORDNET_DIR) / "data.noun").exists(), reason="WordNet not installed: run `apt-get install wordnet-base` or `make sources`"
)


@needs_wordnet
def test_wordnet_has_every_synset():
    lemmas = wordnet_first_lemmas()
    assert len(lemmas) == 117659  # WordNet 3.0's synset count
    assert lemmas[:3] == ["entity", "physical entity", "abstraction"]
    assert not any("_" in w or w.endswith(")") for w in lemmas)


@needs_wordnet
def test_clean_word():
    assert clean_word("physical_entity") == "physical entity"
    assert clean_word("aforesaid(a)") == "aforesaid"
    assert clean_word("galore(ip)") == "galore"


@needs_wordnet
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


def test_lookup_ignores_case_and_prefers_the_exact_form():
    lookup = WordLookup(["dog", "Persian cat", "Santa Claus", "Sno-cat", "Polish", "polish", "PC", "pc board"])
    assert lookup.resolve("persian cat") == "Persian cat"
    assert lookup.resolve("SANTA  claus") == "Santa Claus"  # spaces normalised too
    assert lookup.resolve("sno-cat") == "Sno-cat"
    assert lookup.resolve("Polish") == "Polish" and lookup.resolve("polish") == "polish"  # the exact form wins
    assert lookup.resolve("POLISH") == "polish"  # else the lowercase form
    assert lookup.resolve("pc") == "PC" and lookup.resolve("Dog") == "dog"
    assert lookup.resolve("persian_cat") == "Persian cat"
    assert lookup.resolve("cat") is None and lookup.resolve("") is None
    assert lookup.position("santa claus") == 2


def test_concept_labels_look_words_up_without_case():
    import numpy as np

    from modeling_sparse_clip.interpret import ConceptLabels

    vocabulary = ["dog", "Persian cat", "Santa Claus", "polish", "Polish"]
    top = np.array([[1, 0], [2, -1], [4, 3]], np.int32)
    labels = ConceptLabels(vocabulary, top, np.ones((3, 2), np.float32), np.ones(3, np.int32))
    assert labels.has_word("PERSIAN CAT") and labels.resolve_word("persian cat") == "Persian cat"
    assert labels.features_labelled("santa claus") == [1]
    assert labels.features_labelled("Polish") == [2] and labels.features_labelled("polish") == [2]
    assert labels.features_labelled("Persian Cat") == [0]
    assert "Santa Claus" in labels.suggestions("santa clause")
