"""The embedded corpus on its real sources: builders, caching, splits, held-out evaluation sets, data card.

Every test runs on the installed packages (`make sources`); a test is skipped, with the install hint,
only when its source is not installed.
"""

import hashlib
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from modeling_sparse_clip.constants import DATA_CACHE_DIR
from modeling_sparse_clip.data import (
    SOURCES,
    SPLIT_FRACTIONS,
    build_corpus,
    build_source_dataset,
    load_eval_sets,
    split_of,
    write_data_card,
)
from modeling_sparse_clip.data import corpus as corpus_module
from modeling_sparse_clip.data.eval_sets import fashion_mnist_eval
from modeling_sparse_clip.data.rasterise import rasterise_svg, rasterise_svgs
from modeling_sparse_clip.data.sources import emoji_split_key, find_npm_package, subsample_items

INSTALLER = Path(__file__).resolve().parents[1] / ".ci" / "install_sources.py"

# name -> (fewest items expected, most items expected, expected image size or None for "any <= 224")
EXPECTED = {
    "noto_emoji": (3700, 4100, (136, 128)),
    "openmoji": (4495, 4495, (128, 128)),
    "google_emoji": (3786, 3786, (64, 64)),
    "game_icons": (4134, 4134, (128, 128)),
    "openclipart": (8000, 8121, None),
    "fashion_mnist": (60000, 60000, (28, 28)),
    "sklearn_digits": (1797, 1797, (8, 8)),
}


def require(name: str):
    hint = SOURCES[name].missing(DATA_CACHE_DIR)
    if hint is not None:
        pytest.skip(f"{name} not installed: {hint}")


def hashes_of(dataset: datasets.Dataset) -> list[str]:
    raw = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    return [hashlib.sha256(row["image"]["bytes"]).hexdigest() for row in raw]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_source_items_counts_and_captions(name):
    require(name)
    items = SOURCES[name].items(DATA_CACHE_DIR)
    low, high, _ = EXPECTED[name]
    assert low <= len(items) <= high, f"{name}: {len(items)} items"
    assert len({item.uid for item in items}) == len(items), "uids must be unique"
    from modeling_sparse_clip.data import normalize_captions

    with_caption = sum(bool(normalize_captions(item.captions)) for item in items)
    assert with_caption / len(items) > 0.99, f"{name}: only {with_caption}/{len(items)} items have a caption"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_source_builder_on_real_files(name, tmp_path):
    require(name)
    build = build_source_dataset(name, tmp_path, limit=24)
    dataset = build.dataset
    assert not build.cached and len(dataset) == 24 - build.dropped_empty >= 20
    _, _, size = EXPECTED[name]
    for row, digest in zip(dataset, dataset["image_hash"]):
        image = row["image"]
        assert image.mode == "RGB"
        assert max(image.size) <= 224
        if size is not None:
            assert image.size == size
        assert row["text"] and all(t and t == t.strip() and t == t.lower() for t in row["text"])
        assert row["source"] == name and row["license"]
        # not a blank canvas: the renderer really drew something
        pixels = np.asarray(image)
        assert pixels.std() > 0
    raw = dataset.cast_column("image", datasets.Image(decode=False))
    assert [hashlib.sha256(r["image"]["bytes"]).hexdigest() for r in raw] == dataset["image_hash"]
    again = build_source_dataset(name, tmp_path, limit=24)
    assert again.cached and again.dataset["image_hash"] == dataset["image_hash"]


def test_labels_where_the_source_has_them(tmp_path):
    require("openmoji")
    require("fashion_mnist")
    openmoji = build_source_dataset("openmoji", tmp_path, limit=50).dataset
    assert all(openmoji["label"]) and "face-smiling" in {i.label for i in SOURCES["openmoji"].items(DATA_CACHE_DIR)}
    fashion = build_source_dataset("fashion_mnist", tmp_path, limit=50).dataset
    from modeling_sparse_clip.data.sources import FASHION_MNIST_CLASSES

    assert set(fashion["label"]) <= set(FASHION_MNIST_CLASSES)
    assert all(label.lower() in texts[0] for label, texts in zip(fashion["label"], fashion["text"]))


def test_svg_sheet_equals_rsvg_convert_alone():
    require("openmoji")
    require("game_icons")
    root = find_npm_package("openmoji", DATA_CACHE_DIR)
    svgs = [p.read_text() for p in sorted((root / "color" / "svg").glob("*.svg"))[::300]]
    svgs += [item.payload for item in SOURCES["game_icons"].items(DATA_CACHE_DIR)[::400]]
    tiled = list(rasterise_svgs(svgs, 96, columns=4))
    assert len(tiled) == len(svgs)
    for svg, tile in zip(svgs, tiled):
        alone = rasterise_svg(svg, 96)
        np.testing.assert_array_equal(np.asarray(tile), np.asarray(alone))


def test_split_of_is_deterministic_with_the_configured_fractions():
    keys = [f"image:{i}" for i in range(20000)]
    splits = [split_of(k) for k in keys]
    assert splits == [split_of(k) for k in keys]
    for split, fraction in SPLIT_FRACTIONS.items():
        assert abs(splits.count(split) / len(keys) - fraction) < 0.01


def test_emoji_split_key_groups_skin_tones_and_presentations():
    assert emoji_split_key("👋🏽") == emoji_split_key("👋") == "emoji:1f44b"
    assert emoji_split_key("❤️") == emoji_split_key("❤")
    assert emoji_split_key("👋") != emoji_split_key("👍")


def test_subsample_is_deterministic_and_split_independent():
    require("fashion_mnist")
    items = SOURCES["fashion_mnist"].items(DATA_CACHE_DIR)
    first = subsample_items(items, 3000)
    assert [i.uid for i in first] == [i.uid for i in subsample_items(items, 3000)]
    # the cap must not favour one split, or a capped corpus would hold no test images
    share = sum(split_of(i.uid) == "test" for i in first) / len(first)
    assert abs(share - SPLIT_FRACTIONS["test"]) < 0.03


SMALL_SOURCES = ["noto_emoji", "openmoji", "google_emoji", "game_icons", "openclipart", "fashion_mnist", "sklearn_digits"]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    names = [n for n in SMALL_SOURCES if SOURCES[n].missing(DATA_CACHE_DIR) is None]
    if len(names) < 2:
        pytest.skip("fewer than two sources installed: run `make sources`")
    cache = tmp_path_factory.mktemp("corpus")
    corpus = build_corpus(cache, max_per_source=150, sources=names)
    return cache, names, corpus


def test_small_corpus_columns_splits_and_disjointness(small_corpus):
    _, names, corpus = small_corpus
    assert list(corpus) == ["train", "validation", "test"]
    for split in corpus.values():
        assert split.column_names == ["image", "text", "source", "license", "label"]
        assert all(texts and all(texts) for texts in split["text"])
    assert set(corpus["train"]["source"]) == set(names)
    split_hashes = {name: set(hashes_of(split)) for name, split in corpus.items()}
    assert sum(map(len, split_hashes.values())) == sum(map(len, corpus.values())), "duplicate images survived"
    assert not split_hashes["train"] & split_hashes["test"]
    assert not split_hashes["train"] & split_hashes["validation"]
    assert not split_hashes["validation"] & split_hashes["test"]
    total = sum(map(len, corpus.values()))
    assert 0.7 < len(corpus["train"]) / total < 0.9


def test_second_build_hits_the_cache_and_rebuild_is_stable(small_corpus, monkeypatch):
    cache, names, corpus = small_corpus

    def no_work(*args, **kwargs):
        raise AssertionError("a cached corpus must not rebuild any source")

    with monkeypatch.context() as patch:
        patch.setattr(corpus_module, "build_source_dataset", no_work)
        start = time.perf_counter()
        cached = build_corpus(cache, max_per_source=150, sources=names)
        assert time.perf_counter() - start < 20
    for split in corpus:
        assert hashes_of(cached[split]) == hashes_of(corpus[split])
    # from scratch in a new cache: the same rows land in the same splits
    rebuilt = build_corpus(cache / "again", max_per_source=150, sources=names[:2])
    for split in corpus:
        original = {h for h, s in zip(hashes_of(corpus[split]), corpus[split]["source"]) if s in names[:2]}
        assert set(hashes_of(rebuilt[split])) == original


def test_missing_source_is_one_log_line_and_the_rest_is_built(tmp_path, monkeypatch, caplog):
    require("sklearn_digits")
    monkeypatch.setattr(SOURCES["openclipart"], "missing", lambda cache_dir: "run `apt-get install openclipart-png` or `make sources`")
    with caplog.at_level(logging.INFO, logger="modeling_sparse_clip.data"):
        corpus = build_corpus(tmp_path, max_per_source=30, sources=["openclipart", "sklearn_digits"])
    lines = [r.getMessage() for r in caplog.records if "openclipart" in r.getMessage()]
    assert lines == ["openclipart: not installed; run `apt-get install openclipart-png` or `make sources`"]
    assert set(corpus["train"]["source"]) == {"sklearn_digits"}
    assert any("sklearn_digits" in r.getMessage() and "train" in r.getMessage() for r in caplog.records), "per-source counts reported"


def test_fashion_mnist_eval_is_the_real_test_split():
    require("fashion_mnist")
    eval_set = fashion_mnist_eval(200)
    assert eval_set.task == "zero_shot" and len(eval_set.class_names) == 10
    assert eval_set.class_names[0] == "T-shirt/top" and eval_set.class_names[-1] == "Ankle boot"
    labels = eval_set.dataset["label"]
    assert len(labels) == 200 and np.bincount(labels).tolist() == [20] * 10
    from modeling_sparse_clip.data.sources import read_fashion_mnist

    test_images, test_labels = read_fashion_mnist("test")
    first = eval_set.dataset[0]["image"]
    assert first.size == (28, 28)
    matches = [i for i in range(len(test_images)) if np.array_equal(test_images[i], np.asarray(first)[:, :, 0])]
    assert matches and test_labels[matches[0]] == labels[0]


def test_eval_sets_from_a_small_corpus_are_held_out(small_corpus):
    cache, names, corpus = small_corpus
    eval_sets = load_eval_sets(cache, fashion_mnist_size=100, corpus=corpus)
    train_hashes = set(hashes_of(corpus["train"]))
    for name, eval_set in eval_sets.items():
        assert len(eval_set.dataset) > 0, name
        assert not set(hashes_of(eval_set.dataset)) & train_hashes, f"{name} overlaps train"
        if eval_set.task == "zero_shot":
            labels = eval_set.dataset["label"]
            assert 0 <= min(labels) and max(labels) < len(eval_set.class_names)
            assert eval_set.templates and all("{}" in t for t in eval_set.templates)
        else:
            assert eval_set.dataset.column_names == ["image", "text"]
            firsts = [t[0] for t in eval_set.dataset["text"]]
            assert len(set(firsts)) == len(firsts), "retrieval targets must be unique"


@pytest.mark.slow
def test_full_corpus_eval_sets_and_data_card(tmp_path, monkeypatch):
    for name in SOURCES:
        require(name)
    start = time.perf_counter()
    corpus = build_corpus(DATA_CACHE_DIR)
    first_seconds = time.perf_counter() - start
    counts = {name: sum(split["source"].count(name) for split in corpus.values()) for name in SOURCES}
    # after merging duplicates; Fashion-MNIST is capped at 5000 by default
    assert 3500 <= counts["noto_emoji"] <= 4100
    assert 4100 <= counts["openmoji"] <= 4495  # OpenMoji reuses artwork (e.g. one flag for three regions)
    assert 3700 <= counts["google_emoji"] <= 3786
    assert 4000 <= counts["game_icons"] <= 4134
    assert 6000 <= counts["openclipart"] <= 8121
    assert 4900 <= counts["fashion_mnist"] <= 5000
    assert 1700 <= counts["sklearn_digits"] <= 1797
    for split in corpus.values():
        sample = split.shuffle(seed=0).select(range(200))
        for row in sample:
            assert row["image"].mode == "RGB" and max(row["image"].size) <= 224 and row["text"]

    with monkeypatch.context() as patch:
        patch.setattr(corpus_module, "build_source_dataset", lambda *a, **k: pytest.fail("cached build rendered"))
        start = time.perf_counter()
        again = build_corpus(DATA_CACHE_DIR)
        cached_seconds = time.perf_counter() - start
    assert cached_seconds < 30
    assert {s: len(d) for s, d in again.items()} == {s: len(d) for s, d in corpus.items()}

    eval_sets = load_eval_sets(DATA_CACHE_DIR)
    assert set(eval_sets) == {"fashion_mnist", "emoji_subgroups", "openclipart_categories", "emoji_retrieval", "game_icons_retrieval"}
    assert len(eval_sets["fashion_mnist"]) == 1000
    assert 400 <= len(eval_sets["emoji_retrieval"]) <= 500
    assert 400 <= len(eval_sets["game_icons_retrieval"]) <= 500
    assert len(eval_sets["emoji_subgroups"].class_names) >= 30
    assert len(eval_sets["openclipart_categories"].class_names) >= 15
    train_hashes = set(hashes_of(corpus["train"]))
    for name, eval_set in eval_sets.items():
        assert not set(hashes_of(eval_set.dataset)) & train_hashes, f"{name} overlaps train"

    card = write_data_card(corpus, eval_sets, tmp_path / "DATA_CARD.md").read_text()
    assert "game-icons.net" in card and "CC BY 3.0" in card and "CC BY-SA 4.0" in card
    for name in SOURCES:
        assert f"| {name} |" in card
    reports = [json.loads(p.read_text()) for p in DATA_CACHE_DIR.glob("corpus-*/build_report.json")]
    assert any(r["counts"] == corpus_module.corpus_report(corpus) for r in reports)
    print(f"\nfull corpus: {first_seconds:.1f}s (first call), {cached_seconds:.1f}s cached; counts {counts}")


def test_install_sources_is_idempotent_and_quick_when_everything_is_present(monkeypatch):
    # a set-up script, not a library module: imported from its file
    spec = importlib.util.spec_from_file_location("install_sources", INSTALLER)
    installer = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, installer)  # dataclasses look their module up there
    spec.loader.exec_module(installer)
    args = installer.InstallSourcesArguments(browser=False)
    missing = [p for p, probe in installer.APT_PACKAGES.items() if not installer.apt_package_installed(p, probe)]
    missing += [n for n in installer.NPM_PACKAGES if not installer.npm_package_installed(n, args.cache_dir)]
    if missing:
        pytest.skip(f"not everything is installed ({missing}): run `make sources`")

    def no_subprocess(*a, **k):
        raise AssertionError(f"nothing should be installed when everything is present: {a}")

    monkeypatch.setattr(installer.subprocess, "run", no_subprocess)
    start = time.perf_counter()
    assert installer.install_sources(args) == []
    assert time.perf_counter() - start < 5
