"""Modality score of features (Papadimitriou et al. 2025): unimodal or multimodal?"""

import datasets
import evaluate
import numpy as np
import scipy.sparse as sp

_DESCRIPTION = """
Modality score per feature over PAIRED data (image n and its text n), after Papadimitriou et al. 2025.

With A_img, A_txt the (N x W) activations of the images and of their paired texts (each row
L2-normalised first when `normalize=True`, the default: CLIP's loss ignores row norms, so raw
magnitudes of the two towers are not comparable):
    score_i   = E_n[A_img[n, i]] / ( E_n[A_img[n, i]] + E_n[A_txt[n, i]] )
                (defined for features that fire on either modality; 1 = image-only, 0 = text-only)
    density_i = ( sum_n A_img[n, i] + sum_n A_txt[n, i] ) / ( sum_n sum_j (A_img[n, j] + A_txt[n, j]) )
                (magnitude-weighted firing frequency: the share of all activation mass on feature i)
    multimodal feature i  <=>  low <= score_i <= high        (default band [0.25, 0.75]: neither
                modality's mean activation exceeds 3x the other's)
    multimodal_fraction          = #multimodal / #scored features
    multimodal_density_fraction  = sum of density_i over multimodal features (share of mass)
    image_only_fraction / text_only_fraction: score exactly 1 / exactly 0.
Negative activations (a dense model) are taken as magnitudes |a| so that the ratio stays in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    image_indices / image_values (`list[list[int|float]]`): per pair, the image's sparse activations.
    text_indices / text_values (`list[list[int|float]]`): per pair, the paired text's sparse activations.
    width (`int`, optional): number of features (default: largest index + 1).
    band (`tuple[float, float]`, default (0.25, 0.75)): the multimodal band.
    normalize (`bool`, default True): L2-normalise each row before averaging.
    histogram_bins (`int`, default 10): bins of the returned score histogram over [0, 1].
Returns:
    `multimodal_fraction`, `multimodal_density_fraction`, `mean_score`, `density_weighted_score`,
    `image_only_fraction`, `text_only_fraction`, `num_scored_features`, `score_histogram`.
Examples:
    >>> metric = evaluate.load("benchmarks/metrics/modality_score")
    >>> metric.compute(image_indices=[[0, 1]], image_values=[[1.0, 1.0]], text_indices=[[0]],
    ...                text_values=[[1.0]], normalize=False)["multimodal_fraction"]
    0.5
"""

_CITATION = """
@article{papadimitriou2025interpreting, title={Interpreting the Linear Structure of Vision-language Model Embedding Spaces},
  author={Papadimitriou, Isabel and Su, Huangyuan and Fel, Thomas and Kakade, Sham and Gil, Stephanie}, journal={arXiv:2504.11695}, year={2025}}
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


class ModalityScore(evaluate.Metric):
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
                    "text_indices": datasets.Sequence(datasets.Value("int32")),
                    "text_values": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(
        self, image_indices, image_values, text_indices, text_values, width=None, band=(0.25, 0.75), normalize=True, histogram_bins=10
    ):
        if width is None:
            width = 1 + max([int(np.max(r)) for r in list(image_indices) + list(text_indices) if len(r)], default=0)
        images = abs(_rows_to_csr(image_indices, image_values, width))
        texts = abs(_rows_to_csr(text_indices, text_values, width))
        if normalize:
            images, texts = _normalize_rows(images), _normalize_rows(texts)
        mean_image = np.asarray(images.mean(axis=0)).ravel()
        mean_text = np.asarray(texts.mean(axis=0)).ravel()
        total = mean_image + mean_text
        scored = total > 0
        if not scored.any():
            raise ValueError("No feature fires on either modality; the modality score is undefined.")
        score = mean_image[scored] / total[scored]
        density = total[scored] / total[scored].sum()
        low, high = band
        multimodal = (score >= low) & (score <= high)
        histogram, _ = np.histogram(score, bins=histogram_bins, range=(0.0, 1.0))
        return {
            "multimodal_fraction": float(multimodal.mean()),
            "multimodal_density_fraction": float(density[multimodal].sum()),
            "mean_score": float(score.mean()),
            "density_weighted_score": float((density * score).sum()),
            "image_only_fraction": float((score == 1.0).mean()),
            "text_only_fraction": float((score == 0.0).mean()),
            "num_scored_features": int(scored.sum()),
            "score_histogram": histogram.tolist(),
        }
