"""Clarity (Dreyer et al. 2025) of features, as in Sparse CLIP's eq. 2, with its random-image baseline."""

import datasets
import evaluate
import numpy as np
import scipy.sparse as sp

_DESCRIPTION = """
Clarity: how visually coherent the images that activate a feature are, judged by a fixed
reference image encoder (Dreyer et al. 2025; Sparse CLIP, Qin et al. 2026, eq. 2).

For feature i:  I_i = {images n : A[n, i] > tau}   (tau = 0.001).
Features with |I_i| >= n_min (= 2) are the "active features"; for each, with u_n the reference
embedding of image n normalised to unit length,
    clarity_i = 1/(|I_i|(|I_i|-1)) * sum_{j != k in I_i} u_j . u_k          (mean pairwise cosine)
              = ( ||sum_{n in I_i} u_n||^2 - |I_i| ) / ( |I_i| (|I_i| - 1) )  (the O(|I_i| d) form used here)
    Clarity   = mean of clarity_i over active features.
Random baseline: for every active feature, the same quantity for |I_i| images drawn uniformly at
random without replacement from all N images (seeded); averaged over features and `baseline_draws`
draws. A model whose features group images no better than chance scores at the baseline.

The reference encoder is pluggable: pass any per-image `reference_embeddings`. The paper used
OpenAI CLIP ViT; this repository's embedded suite uses the global-pooled features of a frozen
ImageNet EfficientNet-Lite0 (the only pretrained image encoder available offline here), so
absolute values are not comparable with the paper's 0.485 / 0.549.
"""

_KWARGS_DESCRIPTION = """
Args:
    active_indices / active_values (`list[list[int|float]]`): per image, the model's sparse
        activations (indices of non-zero features and their values).
    reference_embeddings (`list[list[float]]`): per image, its embedding by the reference encoder.
    tau (`float`, default 0.001), n_min (`int`, default 2): as in eq. 2.
    width (`int`, optional): number of features, to report `active_features_percent`.
    baseline_draws (`int`, default 1), seed (`int`, default 0): the random-image-set baseline.
    return_per_feature (`bool`, default False): also return `clarity_per_feature` {feature: value}.
Returns:
    `clarity`, `random_baseline_clarity`, `num_active_features`, `active_features_percent`
    (if width given), `mean_images_per_feature`, `num_images`.
Examples:
    >>> metric = evaluate.load("benchmarks/metrics/clarity")
    >>> metric.compute(active_indices=[[0], [0], [0]], active_values=[[1.0], [1.0], [1.0]],
    ...                reference_embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])["clarity"]
    0.4714045207910316
"""

_CITATION = """
@article{dreyer2025mechanistic, title={Mechanistic understanding and validation of large AI models with SemanticLens},
  author={Dreyer, Maximilian and others}, journal={Nature Machine Intelligence}, year={2025}}
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


def unit_rows(embeddings):
    """Reference embeddings as float64 unit vectors; an all-zero embedding has no direction: error."""
    embeddings = np.asarray(np.stack(list(embeddings)) if getattr(embeddings, "dtype", None) == object else embeddings, np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{int((norms == 0).sum())} reference embeddings are all zeros; cosine similarity is undefined for them.")
    return embeddings / norms


def set_clarity(membership, unit_embeddings):
    """clarity of each column's image set: membership is a sparse 0/1 [N, F] matrix; O(nnz * d)."""
    sizes = np.asarray(membership.sum(axis=0)).ravel()
    sums = np.asarray(membership.T @ unit_embeddings)  # [F, d]: sum of unit vectors per set
    return ((sums**2).sum(axis=1) - sizes) / (sizes * (sizes - 1)), sizes


def random_sets(num_images, sizes, rng):
    """For each size n_i, n_i distinct images drawn uniformly: a sparse 0/1 [N, len(sizes)] matrix.

    Vectorised rejection sampling: draw every member at once, redraw the (rare) repeats within a set
    until none are left; large sets (over a quarter of the images) use a permutation instead."""
    sizes = np.asarray(sizes, np.int64)
    large = sizes > num_images // 4
    cols = np.repeat(np.arange(len(sizes)), np.where(large, 0, sizes))
    rows = rng.integers(0, num_images, size=len(cols))
    while True:
        order = np.lexsort((rows, cols))
        repeat = np.zeros(len(cols), dtype=bool)
        repeat[order[1:]] = (cols[order[1:]] == cols[order[:-1]]) & (rows[order[1:]] == rows[order[:-1]])
        if not repeat.any():
            break
        rows[repeat] = rng.integers(0, num_images, size=int(repeat.sum()))
    big = np.flatnonzero(large)
    rows = np.concatenate([rows] + [rng.permutation(num_images)[: sizes[f]] for f in big])
    cols = np.concatenate([cols] + [np.full(sizes[f], f) for f in big])
    return sp.csc_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_images, len(sizes)))


class Clarity(evaluate.Metric):
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
                    "active_indices": datasets.Sequence(datasets.Value("int32")),
                    "active_values": datasets.Sequence(datasets.Value("float32")),
                    "reference_embeddings": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(
        self,
        active_indices,
        active_values,
        reference_embeddings,
        tau=0.001,
        n_min=2,
        width=None,
        baseline_draws=1,
        seed=0,
        return_per_feature=False,
    ):
        if n_min < 2:
            raise ValueError("n_min must be >= 2: a pairwise mean needs two images.")
        units = unit_rows(reference_embeddings)
        acts = _rows_to_csr(active_indices, active_values, width)
        num_images = acts.shape[0]
        fires = (acts > tau).astype(np.float64).tocsc()
        counts = np.diff(fires.indptr)
        active = np.flatnonzero(counts >= n_min)
        result = {"num_images": int(num_images), "num_active_features": int(len(active))}
        if width is not None:
            result["active_features_percent"] = 100.0 * len(active) / width
        if len(active) == 0:
            result.update(clarity=float("nan"), random_baseline_clarity=float("nan"), mean_images_per_feature=0.0)
            return result
        clarity, sizes = set_clarity(fires[:, active], units)
        result["clarity"] = float(clarity.mean())
        result["mean_images_per_feature"] = float(sizes.mean())

        # Random baseline: the same set sizes, random image sets.
        rng = np.random.default_rng(seed)
        baseline = []
        for _ in range(baseline_draws):
            baseline.append(set_clarity(random_sets(num_images, sizes.astype(np.int64), rng), units)[0].mean())
        result["random_baseline_clarity"] = float(np.mean(baseline))
        if return_per_feature:
            result["clarity_per_feature"] = {int(f): float(c) for f, c in zip(active, clarity)}
        return result
