"""The evaluation tasks and the shipped `evaluate` metric shells over them: each against values computed
by hand or by an independent brute force (through the shells), and shell == task function."""

import itertools

import evaluate
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modeling_sparse_clip.evaluation import METRIC_NAMES, clarity, load_metric, modality, retrieval, sparsity, zero_shot
from modeling_sparse_clip.evaluation import labels as label_task
from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load(name):
    return load_metric(name)


def rows(dense):
    """Dense [N, D] -> the metrics' sparse-row input (indices, values) of the non-zero entries."""
    dense = np.asarray(dense, np.float32)
    return [np.flatnonzero(r) for r in dense], [r[r != 0] for r in dense]


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_metric_loads_offline_by_path_with_a_formula_docstring(name):
    metric = load(name)
    assert isinstance(metric, evaluate.Metric)
    assert "=" in metric.description  # states its formula


def test_load_metric_names_what_it_ships():
    with pytest.raises(ValueError, match="clarity"):
        load_metric("no_such_metric")


def sparse(dense):
    return SparseEmbeddings.from_dense(torch.tensor(np.asarray(dense, np.float32)))


def test_metric_shells_return_exactly_what_the_task_functions_return():
    """The `evaluate` modules only convert their inputs: on the same (float32) data they give the task
    functions' results to the last bit (the runner calls the functions directly)."""
    rng = np.random.default_rng(7)
    images = np.maximum(rng.normal(size=(40, 12)) - 0.5, 0).astype(np.float32)
    texts = np.maximum(images + rng.normal(scale=0.5, size=images.shape) - 0.2, 0).astype(np.float32)
    reference = rng.normal(size=(40, 6)).astype(np.float32)
    words = np.maximum(rng.normal(size=(30, 12)), 0).astype(np.float32)
    word_embeddings = rng.normal(size=(30, 6)).astype(np.float32)
    labels_ = rng.integers(0, 3, 40)
    prompts = np.maximum(rng.normal(size=(3, 2, 12)), 0).astype(np.float32)
    (ii, iv), (ti, tv) = rows(images), rows(texts)

    assert load("sparsity").compute(active_indices=ii, active_values=iv, width=12) == sparsity.evaluate(sparse(images))
    assert load("clarity").compute(active_indices=ii, active_values=iv, reference_embeddings=reference, width=12, seed=1) == \
        clarity.evaluate(sparse(images), reference, seed=1)
    assert load("modality_score").compute(image_indices=ii, image_values=iv, text_indices=ti, text_values=tv, width=12) == \
        modality.evaluate(sparse(images), sparse(texts))
    assert load("label_agreement").compute(image_indices=ii, image_values=iv, image_reference_embeddings=reference,
                                           word_activations=words, word_embeddings=word_embeddings, num_random_words=5) == \
        label_task.evaluate(sparse(images), reference, sparse(words), word_embeddings, num_random_words=5)
    assert load("zero_shot_accuracy").compute(image_indices=ii, image_values=iv, labels=labels_, class_embeddings=prompts) == \
        zero_shot.evaluate(sparse(images), zero_shot.split_prompts(sparse(prompts.reshape(6, 12)), 2), labels_)
    captions = [[t] for t in texts]
    caption_rows = [rows(c) for c in captions]
    assert load("retrieval_recall").compute(image_indices=ii, image_values=iv, text_indices=[r[0] for r in caption_rows],
                                            text_values=[r[1] for r in caption_rows], width=12) == \
        retrieval.evaluate(sparse(images), sparse(texts), [1] * 40)


def test_zero_shot_classifier_uses_the_task_prompt_ensemble():
    class Encoder:  # stands in for SparseCLIPEncoder: one-hot "text features" per class word
        class model:
            @staticmethod
            def effective_logit_scale():
                return torch.tensor(10.0)

        @staticmethod
        def encode_texts(texts, desc=""):
            return sparse([[1.0 if w in t else 0.0 for w in ("cat", "dog")] + [1.0] for t in texts])

    classifier = zero_shot.ZeroShotClassifier(Encoder(), ["cat", "dog"], ["a {}", "the {} here"])
    np.testing.assert_allclose(classifier.class_embeddings, np.array([[1, 0, 1], [0, 1, 1]]) / np.sqrt(2), rtol=1e-6)
    assert [name for name, _ in classifier.top(np.array([0.0, 2.0, 1.0]), 2)] == ["dog", "cat"]
    np.testing.assert_allclose(classifier.probabilities(np.array([[1.0, 0, 0], [0, 1.0, 0]])).sum(axis=1), 1.0)


# -- zero-shot ------------------------------------------------------------------------------------
def test_zero_shot_by_hand():
    # 3 classes x 2 templates in 3 dims. Class 0's prompts (1,0,0),(2,0,0) -> c0 = (1,0,0);
    # class 1's prompts (0,1,0),(0,0,1) -> c1 = (0,1,1)/sqrt2; class 2's prompt pair (0,0,3),(0,0,1) -> c2 = (0,0,1).
    class_embeddings = np.array(
        [[[1, 0, 0], [2, 0, 0]], [[0, 1, 0], [0, 0, 1]], [[0, 0, 3], [0, 0, 1]]], dtype=np.float64
    )
    images = np.array([[1.0, 0.1, 0], [0, 1, 0.2], [0, 0.1, 1], [0, 0, 0], [0, 1, 0.9]])
    labels = [0, 1, 2, 1, 2]
    # scores: img0 -> c0 wins (correct); img1 -> c1 = 1.2/sqrt2 = .85 > c2 = .2 (correct);
    # img2 -> c2 = 1 > c1 = 1.1/sqrt2 = .78 (correct); img3 all zero: ties -> wrong at top-1 and top-2;
    # img4 (label 2): c1 = 1.9/sqrt2 = 1.34 > c2 = .9 -> wrong at top-1, right at top-2.
    indices, values = rows(images)
    result = load("zero_shot_accuracy").compute(
        image_indices=indices, image_values=values, labels=labels, class_embeddings=class_embeddings, top_k=[1, 2]
    )
    assert result["top1_accuracy"] == pytest.approx(3 / 5)
    assert result["top2_accuracy"] == pytest.approx(4 / 5)
    # per class top-1: class0 1/1, class1 1/2, class2 1/2 -> mean 2/3
    assert result["mean_per_class_top1"] == pytest.approx(2 / 3)
    assert result["zero_embedding_fraction"] == pytest.approx(1 / 5)
    assert result["num_classes"] == 3


def test_zero_shot_accepts_sparse_per_class_prompts_with_different_counts():
    per_class = [sp.csr_matrix([[1.0, 0, 0]]), sp.csr_matrix([[0, 1.0, 0], [0, 1.0, 0.5], [0, 2.0, 0]])]
    indices, values = rows([[0.9, 0.1, 0], [0.1, 0.9, 0.1]])
    result = load("zero_shot_accuracy").compute(image_indices=indices, image_values=values, labels=[0, 1], class_embeddings=per_class, top_k=[1])
    assert result["top1_accuracy"] == 1.0


def test_zero_shot_rejects_bad_labels():
    indices, values = rows([[1.0, 0]])
    with pytest.raises(ValueError, match="labels must lie"):
        load("zero_shot_accuracy").compute(image_indices=indices, image_values=values, labels=[5], class_embeddings=np.eye(2))


# -- retrieval ------------------------------------------------------------------------------------
def brute_force_recall(images, captions, k):
    """Independent loop version of the protocol, pessimistic ties."""
    unit = lambda v: v / np.linalg.norm(v) if np.linalg.norm(v) > 0 else v
    images = [unit(np.asarray(i, float)) for i in images]
    texts = [(unit(np.asarray(t, float)), owner) for owner, caps in enumerate(captions) for t in caps]
    t2i_hits = 0
    for t, owner in texts:
        own = t @ images[owner]
        better = sum(1 for j, im in enumerate(images) if j != owner and t @ im >= own)
        t2i_hits += better < k
    i2t_hits = 0
    for i, im in enumerate(images):
        best = max(t @ im for t, owner in texts if owner == i)
        better = sum(1 for t, owner in texts if owner != i and t @ im >= best)
        i2t_hits += better < k
    return i2t_hits / len(images), t2i_hits / len(texts)


def test_retrieval_by_hand():
    # image 0 = e0, image 1 = e1; captions: image 0 -> [e0]; image 1 -> [e1, (e0+e1)]
    indices, values = rows([[1, 0], [0, 1]])
    result = load("retrieval_recall").compute(
        image_indices=indices, image_values=values,
        text_indices=[[[0]], [[1], [0, 1]]], text_values=[[[1.0]], [[1.0], [1.0, 1.0]]], k_values=[1, 2],
    )
    # text (e0+e1) ties both images -> miss at 1, hit at 2; the other two texts hit at 1.
    assert result["text_to_image_R@1"] == pytest.approx(2 / 3)
    assert result["text_to_image_R@2"] == 1.0
    # image 1's best caption is e1 (score 1); the only other caption e0 scores 0 -> hit at 1.
    # image 0's caption e0 scores 1; image 1's caption (e0+e1) scores .707 < 1 -> hit at 1.
    assert result["image_to_text_R@1"] == 1.0
    assert result["num_texts"] == 3


def test_retrieval_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(30, 8)) * (rng.random((30, 8)) > 0.4)
    captions = [[images[i] + rng.normal(scale=1.5, size=8) for _ in range(rng.integers(1, 4))] for i in range(30)]
    indices, values = rows(images)
    text_rows = [rows(np.stack(c)) for c in captions]
    result = load("retrieval_recall").compute(
        image_indices=indices, image_values=values,
        text_indices=[r[0] for r in text_rows], text_values=[r[1] for r in text_rows], k_values=[1, 5, 10], width=8, chunk_size=7,
    )
    for k in (1, 5, 10):
        i2t, t2i = brute_force_recall(images, captions, k)
        assert result[f"image_to_text_R@{k}"] == pytest.approx(i2t)
        assert result[f"text_to_image_R@{k}"] == pytest.approx(t2i)
    assert 0 < result["text_to_image_R@1"] < result["text_to_image_R@10"] <= 1


# -- sparsity ----------------------------------------------------------------------------------------
def test_sparsity_by_hand():
    acts = np.array([[1.0, 0, 0.0005, 0, 0], [0, 0, 2.0, 0, 0], [3.0, 0, 1.0, 0, 0]])
    indices, values = rows(acts)
    result = load("sparsity").compute(active_indices=indices, active_values=values, width=5, tau=0.001)
    # L0 = [2, 1, 2]; feature 2 fires above tau (rows 1, 2); feature 0 too; features 1, 3, 4 are dead.
    assert result["l0_mean"] == pytest.approx(5 / 3)
    assert result["l0_median"] == 2
    assert result["l0_percent_of_width"] == pytest.approx(100 * 5 / 3 / 5)
    assert result["active_features"] == 2 and result["dead_features"] == 3
    assert result["active_features_percent"] == pytest.approx(40.0)


def test_sparsity_of_a_dense_matrix_is_the_width():
    acts = np.random.default_rng(0).normal(size=(6, 7))
    indices, values = rows(acts)
    result = load("sparsity").compute(active_indices=indices, active_values=values, width=7)
    assert result["l0_mean"] == 7 and result["l0_percent_of_width"] == 100.0


def test_sparsity_needs_width():
    with pytest.raises(ValueError, match="width"):
        load("sparsity").compute(active_indices=[[0]], active_values=[[1.0]])


# -- clarity -----------------------------------------------------------------------------------------
def explicit_pairwise_clarity(acts, reference, tau=0.001, n_min=2):
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    values = []
    for i in range(acts.shape[1]):
        members = np.flatnonzero(acts[:, i] > tau)
        if len(members) < n_min:
            continue
        pairs = [unit[j] @ unit[k] for j, k in itertools.permutations(members, 2)]
        values.append(np.mean(pairs))
    return np.mean(values), len(values)


def test_clarity_by_hand():
    # feature 0 fires on images 0, 1, 2 -> pairwise cosines 0, .707, .707 -> sqrt2/3;
    # feature 1 fires on images 0 and 2 (image 1 is below tau) -> cos = .707;
    # feature 2 fires on one image only -> not active.
    acts = np.array([[1.0, 1.0, 0], [1.0, 0.0005, 0], [1.0, 2.0, 5.0]])
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    indices, values = rows(acts)
    result = load("clarity").compute(active_indices=indices, active_values=values, reference_embeddings=reference, width=3)
    assert result["num_active_features"] == 2
    assert result["clarity"] == pytest.approx((np.sqrt(2) / 3 + np.sqrt(0.5)) / 2)
    assert result["active_features_percent"] == pytest.approx(200 / 3)


def test_clarity_fast_form_equals_explicit_pairwise_mean():
    rng = np.random.default_rng(1)
    acts = np.maximum(rng.normal(size=(60, 25)) - 0.8, 0)
    # float32-exact values: the metric stores its inputs as float32 (evaluate's Arrow cache).
    reference = (rng.normal(size=(60, 16)) + 0.3).astype(np.float32).astype(np.float64)
    indices, values = rows(acts)
    result = load("clarity").compute(active_indices=indices, active_values=values, reference_embeddings=reference, return_per_feature=True)
    expected, count = explicit_pairwise_clarity(acts, reference)
    assert result["num_active_features"] == count
    assert result["clarity"] == pytest.approx(expected, rel=1e-10)
    for feature, value in result["clarity_per_feature"].items():
        members = np.flatnonzero(acts[:, feature] > 0.001)
        assert value == pytest.approx(explicit_pairwise_clarity(acts[:, [feature]], reference)[0], rel=1e-10)
        assert len(members) >= 2


def test_random_features_score_at_the_random_baseline():
    """Features that ignore the images: their image sets are random, so Clarity = the baseline.

    Both numbers are means over F features of per-set clarities with the same distribution, drawn
    independently, so their difference has standard deviation sqrt(2) * sd(clarity_i) / sqrt(F);
    the test allows 4 of those (a false failure rate below 1e-4)."""
    rng = np.random.default_rng(2)
    # Reference embeddings with real structure: 5 clusters, so coherent sets would score high.
    centers = rng.normal(size=(5, 32))
    reference = centers[rng.integers(0, 5, 1500)] + 0.7 * rng.normal(size=(1500, 32))
    acts = np.where(rng.random((1500, 200)) < 0.03, rng.random((1500, 200)), 0.0)
    indices, values = rows(acts)
    result = load("clarity").compute(active_indices=indices, active_values=values, reference_embeddings=reference, return_per_feature=True, seed=3)
    spread = np.std(list(result["clarity_per_feature"].values()))
    tolerance = 4 * np.sqrt(2) * spread / np.sqrt(result["num_active_features"])
    assert abs(result["clarity"] - result["random_baseline_clarity"]) < tolerance
    # ... while features that follow the clusters score well above it.
    cluster = np.argmax(reference @ centers.T, axis=1)
    coherent = np.stack([(cluster == c).astype(float) for c in range(5)], axis=1)
    indices, values = rows(coherent)
    coherent_result = load("clarity").compute(active_indices=indices, active_values=values, reference_embeddings=reference)
    assert coherent_result["clarity"] > result["random_baseline_clarity"] + 0.3


def test_clarity_rejects_zero_reference_embeddings():
    with pytest.raises(ValueError, match="all zeros"):
        load("clarity").compute(active_indices=[[0], [0]], active_values=[[1.0], [1.0]], reference_embeddings=[[0.0, 0.0], [1.0, 0.0]])


# -- modality ----------------------------------------------------------------------------------------
def test_modality_score_by_hand():
    # Two pairs, three features, no normalisation.
    # feature 0: images 2, 2 / texts 2, 2 -> 0.5 (multimodal); feature 1: images 3, 0 / texts 0, 0 -> 1 (image only);
    # feature 2: images 0, 0 / texts 1, 0 -> 0 (text only).  mass: f0 = 8, f1 = 3, f2 = 1 of 12.
    images = np.array([[2.0, 3.0, 0], [2.0, 0, 0]])
    texts = np.array([[2.0, 0, 1.0], [2.0, 0, 0]])
    (ii, iv), (ti, tv) = rows(images), rows(texts)
    result = load("modality_score").compute(image_indices=ii, image_values=iv, text_indices=ti, text_values=tv, normalize=False, width=4)
    assert result["num_scored_features"] == 3  # feature 3 never fires: unscored
    assert result["multimodal_fraction"] == pytest.approx(1 / 3)
    assert result["multimodal_density_fraction"] == pytest.approx(8 / 12)
    assert result["image_only_fraction"] == pytest.approx(1 / 3) and result["text_only_fraction"] == pytest.approx(1 / 3)
    assert result["mean_score"] == pytest.approx(0.5)
    assert result["density_weighted_score"] == pytest.approx((8 * 0.5 + 3 * 1 + 1 * 0) / 12)


def test_modality_band_edges_and_normalisation():
    # One pair: image row (3, 1), text row (1, 3). With normalisation both rows are scaled by 1/sqrt10,
    # so scores are .75 and .25: both exactly on the band edges (inclusive).
    (ii, iv), (ti, tv) = rows([[3.0, 1.0]]), rows([[1.0, 3.0]])
    result = load("modality_score").compute(image_indices=ii, image_values=iv, text_indices=ti, text_values=tv)
    assert result["multimodal_fraction"] == 1.0
    narrow = load("modality_score").compute(image_indices=ii, image_values=iv, text_indices=ti, text_values=tv, band=(0.3, 0.7))
    assert narrow["multimodal_fraction"] == 0.0
    # Normalisation removes a tower-wide scale: texts 10x larger still give the same scores.
    (ti10, tv10) = rows([[10.0, 30.0]])
    scaled = load("modality_score").compute(image_indices=ii, image_values=iv, text_indices=ti10, text_values=tv10)
    assert scaled["mean_score"] == pytest.approx(result["mean_score"])


# -- label agreement ------------------------------------------------------------------------------------
def test_label_agreement_by_hand():
    # Reference space: 3 orthogonal directions. Words: 0 "cat" (e0), 1 "car" (e1), 2 "sky" (e2).
    # Feature 0's top images are cats, its top word (through the text tower) is "cat": agrees.
    # Feature 1's top images are cars but its top word is "sky": disagrees.
    word_embeddings = np.eye(3)
    word_activations = np.array([[5.0, 0.0], [0.0, 1.0], [0.0, 4.0]])  # [V, W]
    image_reference = np.array([[1.0, 0, 0], [1.0, 0.1, 0], [0, 1.0, 0], [0.1, 1.0, 0]])
    acts = np.array([[2.0, 0], [1.0, 0], [0, 3.0], [0, 2.0]])
    indices, values = rows(acts)
    result = load("label_agreement").compute(
        image_indices=indices, image_values=values, image_reference_embeddings=image_reference,
        word_activations=word_activations, word_embeddings=word_embeddings, words=["cat", "car", "sky"],
        num_random_words=50, top_images=2,
    )
    # Feature 0: S(cat) ~ 1 beats both other words -> agreement 1. Feature 1: S(sky) = 0 loses to "car"
    # (S > 0.5) and ties with "cat" (S = 0.05 > 0: loses too) -> agreement 0. Mean 0.5; top-1 = 1/2.
    assert result["label_agreement"] == pytest.approx(0.5)
    assert result["label_top1"] == pytest.approx(0.5)
    # Image side: "cat" fits feature 0's cats better than feature 1's cars (1); "sky" fits neither (tie: 0.5).
    assert result["label_specificity"] == pytest.approx(0.75)
    assert result["num_labelled_features"] == 2
    assert result["examples"] == {0: "cat", 1: "sky"}


def test_label_agreement_of_unrelated_labels_is_chance():
    """Labels drawn independently of the images: the label is just another random word, so it beats a
    random word with probability 1/2. With F features x R = 100 random words per feature, the mean of
    F near-independent win rates has sd <= 0.5 / sqrt(F); the test allows 4 sd."""
    rng = np.random.default_rng(4)
    num_images, width, vocab, dim = 800, 300, 500, 24
    image_reference = rng.normal(size=(num_images, dim))
    word_embeddings = rng.normal(size=(vocab, dim))
    acts = np.where(rng.random((num_images, width)) < 0.05, rng.random((num_images, width)), 0.0)
    word_activations = np.where(rng.random((vocab, width)) < 0.05, rng.random((vocab, width)), 0.0)
    indices, values = rows(acts)
    result = load("label_agreement").compute(
        image_indices=indices, image_values=values, image_reference_embeddings=image_reference,
        word_activations=sp.csr_matrix(word_activations), word_embeddings=word_embeddings, seed=5,
    )
    assert abs(result["label_agreement"] - 0.5) < 4 * 0.5 / np.sqrt(result["num_labelled_features"])
    assert abs(result["label_specificity"] - 0.5) < 4 * 0.5 / np.sqrt(result["num_labelled_features"])
    # Hub labels: every feature is labelled by the same generic word that is close to ALL descriptions.
    # The word-side score is fooled (far above chance); the image-side control stays at chance.
    # (Descriptions share a common direction, as real sentence embeddings do; the hub word is that direction.)
    common = rng.normal(size=dim)
    hub_embeddings = word_embeddings.copy()
    hub_embeddings[0] = common
    hub_activations = np.zeros((vocab, width))
    hub_activations[0] = 1.0
    hub = load("label_agreement").compute(
        image_indices=indices, image_values=values, image_reference_embeddings=image_reference + common,
        word_activations=hub_activations, word_embeddings=hub_embeddings, seed=5,
    )
    assert hub["label_agreement"] > 0.9
    assert abs(hub["label_specificity"] - 0.5) < 4 * 0.5 / np.sqrt(hub["num_labelled_features"])
    # Labels that DO describe the images: each feature's top images share a direction, and so does its word.
    directions = rng.normal(size=(width, dim))
    owner = acts.argmax(axis=1)
    aligned_reference = directions[owner] + 0.5 * rng.normal(size=(num_images, dim))
    aligned_words = np.concatenate([directions, rng.normal(size=(vocab - width, dim))])
    aligned_activations = np.concatenate([np.eye(width), np.zeros((vocab - width, width))])
    result = load("label_agreement").compute(
        image_indices=indices, image_values=values, image_reference_embeddings=aligned_reference,
        word_activations=aligned_activations, word_embeddings=aligned_words, seed=5,
    )
    assert result["label_agreement"] > 0.8 and result["label_specificity"] > 0.8


def test_clarity_random_sets_are_uniform_distinct_subsets_of_the_right_size():
    rng = np.random.default_rng(0)
    sizes = np.array([2, 5, 9, 9, 30, 39, 40] * 300)  # small sets (rejection sampling) and large ones (> N/4: permutation)
    sets = clarity.random_sets(40, sizes, rng)
    assert sets.max() == 1  # no image twice in a set
    np.testing.assert_array_equal(np.asarray(sets.sum(axis=0)).ravel(), sizes)
    # Uniform: every image is equally likely to be in a size-9 set (600 sets: 135 memberships each, sd ~11).
    counts = np.asarray(sets[:, np.flatnonzero(sizes == 9)].sum(axis=1)).ravel()
    assert counts.min() > 135 - 5 * 11 and counts.max() < 135 + 5 * 11
