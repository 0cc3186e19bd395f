"""Label agreement: do a feature's top words (found through the text tower) describe its top images?

The paper names each feature by the vocabulary word whose TEXT embedding activates it most; this
checks, with a reference encoder that is independent of the model, whether that word describes the
images that activate the feature most.

Inputs: A (N images x W features, the model's image activations); B (V words x W, the model's
activations of the vocabulary words through its text tower); r_n (image n embedded in a reference
TEXT space, e.g. its caption or class name by a sentence encoder, or a reference classifier's
expected label embedding); e_v (word v embedded by the same reference text encoder).
For every feature i with #{n : A[n, i] > tau} >= n_min and max_v B[v, i] > 0 (a "labelled" feature):
    w_i    = argmax_v B[v, i]                                    (the feature's concept label)
    T_i    = the m images with the largest A[n, i] > tau          (its top images; m = top_images)
    S_i(v) = mean_{n in T_i} cos(r_n, e_v)                        (how well word v describes them)
    R_i    = R words drawn uniformly from the vocabulary without w_i (seeded)
    agreement_i = ( #{v in R_i : S_i(w_i) > S_i(v)} + 0.5 #{v in R_i : S_i(w_i) = S_i(v)} ) / R
    top1_i      = [ S_i(w_i) > max_{v in R_i} S_i(v) ]
label_agreement = mean_i agreement_i: a two-way zero-shot test of the top images against the label
and a random word (chance 0.5, perfect 1.0); label_top1 = mean_i top1_i: an (R+1)-way zero-shot
(chance 1/(R+1)).
Chance is 0.5 only if labels are distributed like random vocabulary words. A model whose labels are
"hub" words (the same generic or odd words top many features, as in untrained towers) can score
below or above 0.5 without its labels saying anything about its images. So the task also reports
the image-side control, which is exactly 0.5 for labels independent of the images:
    J_i = R features drawn uniformly among the other labelled features (seeded)
    specificity_i = ( #{j in J_i : S_i(w_i) > S_j(w_i)} + 0.5 #{ties} ) / R
label_specificity = mean_i specificity_i: does the label describe its OWN feature's top images better
than other features' top images?
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..sparse_embeddings import SparseEmbeddings
from .cosine import float64_csr, unit_reference_rows


def evaluate(
    image_activations: SparseEmbeddings,
    image_reference_embeddings,
    word_activations: SparseEmbeddings,
    word_embeddings,
    words: Sequence[str] | None = None,
    top_images: int = 10,
    num_random_words: int = 100,
    tau: float = 0.001,
    n_min: int = 2,
    seed: int = 0,
    num_examples: int = 10,
    chunk_size: int = 512,
) -> dict:
    """`label_agreement`, `label_top1`, `top1_chance`, `label_specificity`, `top_word_similarity`,
    `random_word_similarity`, `num_labelled_features`, `num_unlabelled_features`, and `examples`
    ({feature: word} for the most frequently firing labelled features) when `words` is given.

    `image_activations` [N, W]; `image_reference_embeddings` [N, d] (reference text space);
    `word_activations` [V, W] (the model's text tower on each word); `word_embeddings` [V, d]."""
    word_columns = word_activations.to_scipy().tocsc()
    num_words, width = word_columns.shape
    if image_activations.width != width:
        raise ValueError(f"Image activations are {image_activations.width}-d but word activations are {width}-d.")
    word_units = unit_reference_rows(word_embeddings)
    if word_units.shape[0] != num_words:
        raise ValueError(f"word_activations has {num_words} words but word_embeddings has {word_units.shape[0]}.")
    if num_words < 2:
        raise ValueError("The vocabulary needs at least two words (the label and a random word).")
    image_units = unit_reference_rows(image_reference_embeddings)
    if image_units.shape[1] != word_units.shape[1]:
        raise ValueError("image_reference_embeddings and word_embeddings must come from the same reference text space (same width).")
    acts = float64_csr(image_activations).tocsc()

    top_word = np.asarray(word_columns.argmax(axis=0)).ravel()
    top_word_value = np.asarray(word_columns.max(axis=0).toarray()).ravel()
    features, top_sets = [], []
    num_unlabelled = 0
    for i in range(width):  # top images of each feature that fires on >= n_min images
        rows = acts.indices[acts.indptr[i] : acts.indptr[i + 1]]
        values = acts.data[acts.indptr[i] : acts.indptr[i + 1]]
        firing = values > tau
        if firing.sum() < n_min:
            continue
        if top_word_value[i] <= 0:
            num_unlabelled += 1
            continue
        rows, values = rows[firing], values[firing]
        order = np.argsort(-values, kind="stable")[:top_images]
        features.append(i)
        top_sets.append(rows[order])
    result = {"num_labelled_features": len(features), "num_unlabelled_features": num_unlabelled,
              "top1_chance": 1.0 / (num_random_words + 1)}
    if not features:
        result.update(label_agreement=float("nan"), label_top1=float("nan"), label_specificity=float("nan"),
                      top_word_similarity=float("nan"), random_word_similarity=float("nan"))
        return result
    features = np.array(features)
    labels = top_word[features]
    # Mean reference embedding of each feature's top images: S_i(v) = mean_n cos(r_n, e_v) = mean_n(r_n) . e_v.
    top_means = np.stack([image_units[rows].mean(axis=0) for rows in top_sets])
    rng = np.random.default_rng(seed)
    random_words = rng.integers(0, num_words - 1, size=(len(features), num_random_words))
    random_words += random_words >= labels[:, None]  # uniform over the vocabulary without the label
    label_scores = (top_means * word_units[labels]).sum(axis=1)
    random_scores = np.empty((len(features), num_random_words))
    for start in range(0, len(features), chunk_size):
        stop = start + chunk_size
        random_scores[start:stop] = np.einsum("fd,frd->fr", top_means[start:stop], word_units[random_words[start:stop]])
    wins = (label_scores[:, None] > random_scores).sum(axis=1) + 0.5 * (label_scores[:, None] == random_scores).sum(axis=1)
    # Image-side control: the same label scored on other features' top images.
    specificity = float("nan")
    if len(features) > 1:
        others = rng.integers(0, len(features) - 1, size=(len(features), num_random_words))
        others += others >= np.arange(len(features))[:, None]  # uniform over the other features
        label_units = word_units[labels]
        other_scores = np.empty((len(features), num_random_words))
        for start in range(0, len(features), chunk_size):
            stop = start + chunk_size
            other_scores[start:stop] = np.einsum("fd,frd->fr", label_units[start:stop], top_means[others[start:stop]])
        beats = (label_scores[:, None] > other_scores).sum(axis=1) + 0.5 * (label_scores[:, None] == other_scores).sum(axis=1)
        specificity = float((beats / num_random_words).mean())
    result.update(
        label_specificity=specificity,
        label_agreement=float((wins / num_random_words).mean()),
        label_top1=float((label_scores > random_scores.max(axis=1)).mean()),
        top_word_similarity=float(label_scores.mean()),
        random_word_similarity=float(random_scores.mean()),
    )
    if words is not None:
        frequency = np.diff(acts.indptr)[features]
        chosen = np.argsort(-frequency, kind="stable")[:num_examples]
        result["examples"] = {int(features[j]): str(words[labels[j]]) for j in chosen}
    return result
