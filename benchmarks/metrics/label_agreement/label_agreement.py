"""Label agreement: do a feature's top words (found through the text tower) describe its top images?"""

import datasets
import evaluate
import numpy as np
import scipy.sparse as sp

_DESCRIPTION = """
Label agreement of concept labels: the paper names each feature by the vocabulary word whose TEXT
embedding activates it most; this metric checks, with a reference encoder that is independent of
the model, whether that word describes the images that activate the feature most.

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
below or above 0.5 without its labels saying anything about its images. So the metric also
reports the image-side control, which is exactly 0.5 for labels independent of the images:
    J_i = R features drawn uniformly among the other labelled features (seeded)
    specificity_i = ( #{j in J_i : S_i(w_i) > S_j(w_i)} + 0.5 #{ties} ) / R
label_specificity = mean_i specificity_i: does the label describe its OWN feature's top images better
than other features' top images?
"""

_KWARGS_DESCRIPTION = """
Args:
    image_indices / image_values (`list[list[int|float]]`): per image, the model's sparse activations.
    image_reference_embeddings (`list[list[float]]`): per image, its embedding in the reference text space.
    word_activations (`[V, W]` array, torch tensor or scipy sparse matrix): the model's activations of
        each vocabulary word (text tower).
    word_embeddings (`[V, d]` array): each vocabulary word embedded by the reference text encoder.
    words (`list[str]`, optional): the vocabulary, to return example labels.
    top_images (`int`, default 10), num_random_words (`int`, default 100), tau (`float`, default
        0.001), n_min (`int`, default 2), seed (`int`, default 0), num_examples (`int`, default 10).
Returns:
    `label_agreement`, `label_top1`, `top1_chance`, `label_specificity`, `top_word_similarity`, `random_word_similarity`,
    `num_labelled_features`, `num_unlabelled_features`, and `examples` ({feature: word} for the
    most frequently firing labelled features) when `words` is given.
Examples:
    >>> metric = evaluate.load("benchmarks/metrics/label_agreement")
    >>> metric.compute(image_indices=[[0], [0]], image_values=[[1.0], [1.0]],
    ...     image_reference_embeddings=[[1.0, 0.0], [1.0, 0.1]],
    ...     word_activations=np.array([[1.0], [0.0]]), word_embeddings=np.array([[1.0, 0.0], [0.0, 1.0]]),
    ...     num_random_words=1)["label_agreement"]
    1.0
"""

_CITATION = """
@inproceedings{qin2026sparseclip, title={Sparse CLIP: Co-Optimizing Interpretability and Performance in Contrastive Learning},
  author={Qin, Chuan and Venhoff, Constantin and Joseph, Sonia and Xiao, Fanyi and Scherer, Stefan}, booktitle={ICLR}, year={2026}}
"""

def _rows_to_csr(indices, values, width):
    """Per-row sparse (indices, values) -> CSR [rows, width]. (Each metric module is self-contained.)"""
    lengths = np.array([len(row) for row in indices], dtype=np.int64)
    if len(values) != len(indices) or any(len(v) != n for v, n in zip(values, lengths)):
        raise ValueError("Each row needs as many values as indices.")
    flat_indices = np.concatenate([np.asarray(r, np.int64).ravel() for r in indices] + [np.zeros(0, np.int64)])
    flat_values = np.concatenate([np.asarray(r, np.float64).ravel() for r in values] + [np.zeros(0)])
    if width is None:
        width = int(flat_indices.max()) + 1 if flat_indices.size else 1
    if flat_indices.size and (flat_indices.min() < 0 or flat_indices.max() >= width):
        raise ValueError(f"Embedding indices must lie in [0, {width}); got {flat_indices.min()}..{flat_indices.max()}.")
    matrix = sp.csr_matrix((flat_values, flat_indices, np.concatenate([[0], np.cumsum(lengths)])), shape=(len(lengths), width))
    matrix.sum_duplicates()
    return matrix


def _normalize_rows(matrix):
    """L2-normalise rows of a dense or sparse matrix; zero rows stay zero."""
    if sp.issparse(matrix):
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _dense_unit_rows(matrix):
    matrix = np.asarray(np.stack(list(matrix)) if getattr(matrix, "dtype", None) == object else matrix, np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{int((norms == 0).sum())} reference embeddings are all zeros; cosine similarity is undefined for them.")
    return matrix / norms


class LabelAgreement(evaluate.Metric):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Hand `_compute` numpy arrays, not Python lists (see zero_shot_accuracy for why this is set here).
        self.info.format = "numpy"

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "image_indices": datasets.Sequence(datasets.Value("int32")),
                    "image_values": datasets.Sequence(datasets.Value("float32")),
                    "image_reference_embeddings": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(
        self,
        image_indices,
        image_values,
        image_reference_embeddings,
        word_activations=None,
        word_embeddings=None,
        words=None,
        top_images=10,
        num_random_words=100,
        tau=0.001,
        n_min=2,
        seed=0,
        num_examples=10,
        chunk_size=512,
    ):
        if word_activations is None or word_embeddings is None:
            raise ValueError("Pass word_activations= (the model's [V, W] activations of the vocabulary) and "
                             "word_embeddings= (the reference text encoder's [V, d] embeddings of the same words).")
        if hasattr(word_activations, "detach"):
            word_activations = word_activations.detach().float().cpu().numpy()
        word_activations = sp.csc_matrix(word_activations)
        num_words, width = word_activations.shape
        word_units = _dense_unit_rows(word_embeddings)
        if word_units.shape[0] != num_words:
            raise ValueError(f"word_activations has {num_words} words but word_embeddings has {word_units.shape[0]}.")
        if num_words < 2:
            raise ValueError("The vocabulary needs at least two words (the label and a random word).")
        image_units = _dense_unit_rows(image_reference_embeddings)
        if image_units.shape[1] != word_units.shape[1]:
            raise ValueError("image_reference_embeddings and word_embeddings must come from the same reference text space (same width).")
        acts = _rows_to_csr(image_indices, image_values, width).tocsc()

        top_word = np.asarray(word_activations.argmax(axis=0)).ravel()
        top_word_value = np.asarray(word_activations.max(axis=0).toarray()).ravel()
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
            frequency = np.array([np.diff(acts.indptr)[i] for i in features])
            chosen = np.argsort(-frequency, kind="stable")[:num_examples]
            result["examples"] = {int(features[j]): str(words[labels[j]]) for j in chosen}
        return result
