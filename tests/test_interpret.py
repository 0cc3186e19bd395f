"""The interpretability toolkit against direct computations with the model itself.

Every number the toolkit caches (top words, top images, densities, modality scores, steering,
retrieval) is recomputed here from `get_text_features` / `get_image_features` and compared.
"""

import shutil

import numpy as np
import pytest
import torch

from interpret_fixtures import build_fresh_head_model, emoji_sample, render_emoji, small_vocabulary
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.evaluation.zero_shot import ZeroShotClassifier
from modeling_sparse_clip.interpret import (
    ConceptEvolution,
    ConceptLabels,
    FeatureAtlas,
    build_feature_atlas,
    SteeringEdit,
    compute_concept_labels,
    concept_features,
    discover_checkpoints,
    load_or_build_feature_atlas,
    load_or_compute_concept_labels,
    retrieve,
    steer,
    steer_image,
)
from modeling_sparse_clip.interpret import concept_labels as concept_labels_module
from modeling_sparse_clip.sparse_embeddings import normalize_rows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_fresh_head_model(tmp_path_factory.mktemp("model") / "fresh-head", projection_dim=384)


@pytest.fixture(scope="module")
def encoder(model_dir, tmp_path_factory):
    return SparseCLIPEncoder.from_pretrained(model_dir, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def emoji_set():
    chars, names = emoji_sample(24)
    return render_emoji(chars), chars, names


def direct_text(encoder, texts):
    inputs = encoder.processor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return encoder.model.get_text_features(**inputs).pooler_output.numpy()


def direct_images(encoder, images):
    inputs = encoder.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        return encoder.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output.numpy()


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_encoder_matches_model_features(encoder, emoji_set):
    images, _, names = emoji_set
    texts = encoder.project_texts(encoder.pool_texts(names[:6], batch_size=4)).to_dense().numpy()
    np.testing.assert_allclose(texts, direct_text(encoder, names[:6]), atol=1e-4)
    pixels = encoder.project_images(encoder.pool_images(images[:5], batch_size=2)).to_dense().numpy()
    np.testing.assert_allclose(pixels, direct_images(encoder, images[:5]), atol=1e-4)


def test_concept_labels_are_the_top_words_of_each_feature(encoder):
    vocabulary = small_vocabulary(300)
    labels = compute_concept_labels(encoder, vocabulary, top_k=5, chunk_size=128)
    scores = unit(direct_text(encoder, vocabulary))  # words x features
    assert labels.top_words.shape == (encoder.width, 5)
    for feature in range(0, encoder.width, 37):
        column = scores[:, feature]
        expected = np.argsort(-column, kind="stable")[:5]
        expected = [vocabulary[i] for i in expected if column[i] > 0]
        got = [w for w, _ in labels.words(feature, 5)]
        assert got == expected, feature
        assert labels.word_counts[feature] == int((column > 0).sum())
    with pytest.raises(KeyError, match="does not exist"):
        labels.words(encoder.width)


def test_concept_labels_cache_roundtrip_and_invalidation(encoder, model_dir, monkeypatch):
    vocabulary = small_vocabulary(200)
    first = load_or_compute_concept_labels(encoder, vocabulary, model_dir=model_dir)
    assert list((model_dir / "interpret").glob("concept_labels_*.safetensors"))

    def must_not_recompute(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(concept_labels_module, "compute_concept_labels", must_not_recompute)
    again = load_or_compute_concept_labels(encoder, vocabulary, model_dir=model_dir)
    np.testing.assert_array_equal(first.top_words, again.top_words)
    assert again.vocabulary == vocabulary
    with pytest.raises(AssertionError, match="cache"):  # another vocabulary is another cache entry
        load_or_compute_concept_labels(encoder, vocabulary[:-1], model_dir=model_dir)


def test_concept_features_are_the_words_top_features(encoder):
    acts = direct_text(encoder, ["dog"])[0]
    got = concept_features(encoder, "dog", top_k=3)
    assert [f for f, _ in got] == list(np.argsort(-acts)[:3])
    np.testing.assert_allclose([v for _, v in got], unit(acts)[np.argsort(-acts)[:3]], rtol=1e-4)
    with pytest.raises(ValueError, match="empty"):
        concept_features(encoder, "   ")


def test_feature_atlas_against_direct_computation(encoder, emoji_set, model_dir):
    images, chars, names = emoji_set
    atlas = load_or_build_feature_atlas(encoder, images, chars, names, top_k=4, model_dir=model_dir)
    image_acts = unit(direct_images(encoder, images))
    text_acts = unit(direct_text(encoder, names))
    np.testing.assert_allclose(atlas.image_acts.to_dense().numpy(), image_acts, atol=1e-3)
    for feature in range(0, encoder.width, 29):
        column = image_acts[:, feature]
        firing = int((column > 0).sum())
        assert atlas.density[feature] == pytest.approx(firing / len(images))
        expected_rows = np.argsort(-column, kind="stable")[: min(4, firing)]
        assert [r for r, _ in atlas.top(feature, 4)] == list(expected_rows)
        e_img, e_txt = column.mean(), text_acts[:, feature].mean()
        if e_img + e_txt > 0:
            assert atlas.modality[feature] == pytest.approx(e_img / (e_img + e_txt), abs=2e-3)
        else:
            assert np.isnan(atlas.modality[feature])
    # stored once, loaded back equal
    stored = list((model_dir / "interpret").glob("atlas_*.safetensors"))
    assert len(stored) == 1
    loaded = FeatureAtlas.load(stored[0])
    assert loaded.image_ids == list(chars) and loaded.captions == list(names)
    np.testing.assert_array_equal(loaded.top_images, atlas.top_images)
    assert loaded.image_acts.equal(atlas.image_acts) and loaded.text_acts.equal(atlas.text_acts)
    np.testing.assert_array_equal(loaded.modality, atlas.modality)
    # the cache is keyed by the inputs: other captions are another atlas
    other = load_or_build_feature_atlas(encoder, images, chars, [n.upper() for n in names], top_k=4, model_dir=model_dir)
    assert len(list((model_dir / "interpret").glob("atlas_*.safetensors"))) == 2
    np.testing.assert_array_equal(other.top_images, atlas.top_images)


def test_steer_suppress_and_boost():
    acts = np.array([[0.0, 1.0, 3.0, 0.5], [2.0, 0.0, 0.0, 4.0]], np.float32)
    edited = steer(acts, SteeringEdit(suppress=[2], boost=[0], strength=1.5))
    np.testing.assert_allclose(edited, [[1.5, 1.0, 0.0, 0.5], [6.0, 0.0, 0.0, 4.0]])  # 1.5 x each row's max
    absolute = steer(acts[0], SteeringEdit(boost=[3], strength=2.0, strength_scale="absolute"))
    np.testing.assert_allclose(absolute, [0.0, 1.0, 3.0, 2.0])
    np.testing.assert_allclose(acts[0], [0.0, 1.0, 3.0, 0.5])  # the input is not modified
    with pytest.raises(KeyError, match="does not exist"):
        steer(acts, SteeringEdit(boost=[4]))
    with pytest.raises(ValueError, match=">= 0"):
        SteeringEdit(boost=[0], strength=-1)


def test_zero_shot_and_retrieval_before_after(encoder, emoji_set):
    images, chars, names = emoji_set
    classes = names[:6]
    classifier = ZeroShotClassifier(encoder, classes, ["{}"])
    image_acts = direct_images(encoder, images[:1])[0]
    text = unit(direct_text(encoder, classes))
    expected = encoder.model.effective_logit_scale().item() * unit(image_acts) @ text.T
    np.testing.assert_allclose(classifier.logits(image_acts)[0], expected, rtol=1e-4)

    gallery = normalize_rows(encoder.encode_images(images))
    brute = unit(direct_images(encoder, images)) @ unit(image_acts)
    assert [r for r, _ in retrieve(image_acts, gallery, 5)] == list(np.argsort(-brute)[:5])
    atlas = build_feature_atlas(encoder, images, chars)
    through_index = retrieve(image_acts, atlas.image_index(), 5)  # the project's SparseIndex
    assert [r for r, _ in through_index] == list(np.argsort(-brute)[:5])
    np.testing.assert_allclose([s for _, s in through_index], np.sort(brute)[::-1][:5], atol=2e-3)

    target = classes[3]
    result = steer_image(encoder, image_acts, classifier, gallery, boost=[target], top_k=2, strength=3.0)
    boosted = [f for f, _ in concept_features(encoder, target, 2)]
    assert result.edit.boost == sorted(boosted) and result.features_of == {target: boosted}
    after = dict(result.after)
    before = dict(result.before)
    # boosting the class name's own text features must raise that class's probability
    assert after.get(target, 0.0) > before.get(target, 0.0) or result.after[0][0] == target
    assert result.caption_before is None  # no captioner plugged in


def test_concept_evolution_over_checkpoints(model_dir, tmp_path, emoji_set):
    from safetensors.torch import load_file, save_file

    images, chars, names = emoji_set
    run = tmp_path / "run"
    for pct, noise in ((1, 1.0), (10, 0.3), (100, 0.0)):
        folder = run / "evolution" / f"progress_{pct:03d}"
        shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("interpret"))
        weights = load_file(folder / "model.safetensors")
        generator = torch.Generator().manual_seed(pct)
        weights["text_projection.weight"] += noise * torch.randn(weights["text_projection.weight"].shape, generator=generator) * 0.05
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    (run / "evolution" / "progress_x").mkdir()  # not a checkpoint: ignored
    checkpoints = discover_checkpoints(run)
    assert [name for name, _ in checkpoints] == ["1%", "10%", "100%"]
    evolution = ConceptEvolution.build(checkpoints, small_vocabulary(150), images[:8], chars[:8], names[:8], cache_dir=tmp_path / "cache", progress=False)
    history = evolution.history(5)
    assert [row["checkpoint"] for row in history] == ["1%", "10%", "100%"]
    assert history[-1]["overlap_with_final"] == 1.0
    assert all(row["density"] is not None for row in history)
    # the towers are shared, so every checkpoint's atlas and labels used the same cached tower outputs
    assert len(list((tmp_path / "cache").glob("pooled_image_*.safetensors"))) == 1
    assert len(list((tmp_path / "cache").glob("pooled_text_*.safetensors"))) == 2  # vocabulary + captions
    assert len({view.labels.fingerprint for view in evolution.checkpoints}) == 3  # yet three different heads
    headers, rows = evolution.table(5)
    assert len(rows) == 3 and headers[0] == "checkpoint"
    figure = evolution.plot(5)
    assert figure.axes[0].get_title() == "feature 5 across training"
    with pytest.raises(FileNotFoundError, match="progress_"):
        ConceptEvolution.from_model_dir(tmp_path / "nowhere", [])
