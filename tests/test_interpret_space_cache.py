"""The Space cache (modeling_sparse_clip.interpret.space_cache): built once with the model, stored in
`<model>/space_cache/`, read back (also from a read-only folder such as a Hub snapshot) without any
recomputation, refused for other weights or inputs, and equal to the direct computations."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from interpret_fixtures import build_fresh_head_model, emoji_sample, render_emoji, small_vocabulary
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.interpret import build_feature_atlas, build_space_cache, compute_concept_labels, load_space_cache, spread_rows
from modeling_sparse_clip.interpret import concept_labels as concept_labels_module
from modeling_sparse_clip.interpret import space_cache as space_cache_module


def add_checkpoints(model_dir, percents=(10, 100)):
    """evolution/progress_* copies with perturbed heads (stand-ins for a run's checkpoints)."""
    from safetensors.torch import load_file, save_file

    for pct in percents:
        folder = model_dir / "evolution" / f"progress_{pct:03d}"
        shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("evolution", "space_cache", "interpret"))
        weights = load_file(folder / "model.safetensors")
        weights["text_projection.weight"] += (100 - pct) / 100 * 0.05 * torch.randn(weights["text_projection.weight"].shape, generator=torch.Generator().manual_seed(pct))
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("space-cache")
    model_dir = build_fresh_head_model(root / "model", projection_dim=256)
    add_checkpoints(model_dir)
    chars, names = emoji_sample(20)
    images = render_emoji(chars)
    vocabulary = small_vocabulary(150) + ["Persian cat", "Santa Claus"]
    calls = []
    folder = build_space_cache(
        model_dir, images=images, ids=chars, captions=names, groups=[[n.split()[0]] for n in names], vocabulary=vocabulary,
        cache_dir=root / "cache", progress=lambda stage, done, total: calls.append((stage, done, total)),
        classes=(["dog", "cat", "flag"], ["an emoji of a {}."], "test classes"),
    )
    encoder = SparseCLIPEncoder.from_pretrained(model_dir, cache_dir=root / "cache", progress=False)
    return dict(root=root, model_dir=model_dir, folder=folder, images=images, chars=chars, names=names, vocabulary=vocabulary, calls=calls, encoder=encoder)


def test_cache_lives_in_the_model_and_matches_direct_computation(built):
    folder, encoder = built["folder"], built["encoder"]
    assert folder == built["model_dir"] / "space_cache"
    manifest = json.loads((folder / "space.json").read_text())
    assert manifest["model_fingerprint"] == encoder.fingerprint() and len(manifest["images"]) == 20
    assert [c["name"] for c in manifest["evolution"]] == ["10%", "100%"]
    assert manifest["classes"] == {"names": ["dog", "cat", "flag"], "templates": ["an emoji of a {}."], "source": "test classes"}
    cache = load_space_cache(built["model_dir"], encoder.fingerprint(), cache_dir=built["root"] / "cache")
    assert cache is not None and cache.vocabulary == built["vocabulary"] and cache.ids == list(built["chars"])
    labels = compute_concept_labels(encoder, built["vocabulary"])
    np.testing.assert_array_equal(cache.labels.top_words, labels.top_words)
    atlas = build_feature_atlas(encoder, built["images"], built["chars"], built["names"])
    np.testing.assert_array_equal(cache.atlas.top_images, atlas.top_images)
    np.testing.assert_allclose(cache.atlas.density, atlas.density)
    assert cache.evolution.names == ["10%", "100%"]
    # the stored images are the ones the atlas was computed on
    assert np.array_equal(np.asarray(space_cache_module.FolderImages(cache.image_files)[3]), np.asarray(built["images"][3].convert("RGB")))
    stages = {stage.split(":")[-1].strip() for stage, _, _ in built["calls"]}
    assert {"images", "concept labels", "feature atlas", "done"} <= stages


def test_cache_is_refused_for_other_weights_or_inputs(built):
    model_dir, fp = built["model_dir"], built["encoder"].fingerprint()
    assert load_space_cache(model_dir, "0" * 20) is None
    assert load_space_cache(model_dir, fp, request="another image set") is None


def test_read_only_model_folder_loads_without_recomputing(built, tmp_path, monkeypatch):
    """A Hub snapshot is read-only: its shipped space_cache is still what the Space reads."""
    copy = tmp_path / "snapshot"
    shutil.copytree(built["model_dir"], copy, ignore=shutil.ignore_patterns("evolution", "interpret"))
    real_access = os.access
    # read-only as a Hub snapshot is (chmod would not stop root, so the check itself answers "no")
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if mode == os.W_OK and str(path).startswith(str(copy)) else real_access(path, mode, *a, **k))

    def must_not_compute(*args, **kwargs):
        raise AssertionError("the shipped cache should have been used")

    monkeypatch.setattr(concept_labels_module, "compute_concept_labels", must_not_compute)
    monkeypatch.setattr(space_cache_module, "compute_concept_labels", must_not_compute)
    encoder = SparseCLIPEncoder.from_pretrained(copy, cache_dir=tmp_path / "cache", progress=False)
    assert space_cache_module.writable_cache_folder(copy, tmp_path / "cache", encoder.fingerprint()).is_relative_to(tmp_path / "cache")
    cache = load_space_cache(copy, encoder.fingerprint(), cache_dir=tmp_path / "cache")
    assert cache is not None and cache.folder == copy / "space_cache"
    labels = concept_labels_module.load_or_compute_concept_labels(encoder, built["vocabulary"], model_dir=copy, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(labels.top_words, cache.labels.top_words)


def test_default_vocabulary_comes_from_data_cache(built, tmp_path, monkeypatch):
    """`data_cache` names where the vocabulary file is read (not `.cache/data` of the working directory)."""
    model_dir = tmp_path / "model"
    shutil.copytree(built["model_dir"], model_dir, ignore=shutil.ignore_patterns("evolution", "space_cache", "interpret"))
    data_cache = tmp_path / "data"
    data_cache.mkdir()
    words = small_vocabulary(60)
    (data_cache / "vocabulary.txt").write_text("\n".join(words) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    folder = build_space_cache(model_dir, images=built["images"][:4], ids=list(built["chars"][:4]), vocabulary=None,
                               data_cache=data_cache, cache_dir=tmp_path / "cache", evolution=False, classes=(["dog"], ["{}"], "test"))
    encoder = SparseCLIPEncoder.from_pretrained(model_dir, cache_dir=tmp_path / "cache", progress=False)
    assert load_space_cache(model_dir, encoder.fingerprint(), cache_dir=tmp_path / "cache").vocabulary == words
    assert folder == model_dir / "space_cache" and not (work / ".cache").exists()


def test_spread_rows_covers_sources_then_classes():
    groups = [("flags", f"flag {i}") for i in range(50)] + [("emoji", "cat"), ("emoji", "cat"), ("emoji", "dog"), ("fashion", "shoe")]
    rows = spread_rows(groups, 6)
    assert len(rows) == 6 and len(set(rows)) == 6
    assert {groups[r][0] for r in rows[:3]} == {"flags", "emoji", "fashion"}
    assert groups[rows[4]] == ("emoji", "dog")  # the second emoji pick is another class, not the second cat
    assert sorted(spread_rows(groups, 100)) == list(range(54))  # every row once when n exceeds them
