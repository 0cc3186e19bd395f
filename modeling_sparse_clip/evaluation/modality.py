"""Modality score of features (Papadimitriou et al. 2025): unimodal or multimodal?

Over PAIRED data (image n and its text n), with A_img, A_txt the (N x W) activations of the images
and of their paired texts (each row L2-normalised first when `normalize=True`, the default: CLIP's
loss ignores row norms, so raw magnitudes of the two towers are not comparable):
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

from __future__ import annotations

import numpy as np

from ..sparse_embeddings import SparseEmbeddings
from .cosine import float64_csr, unit_rows


def evaluate(
    image_activations: SparseEmbeddings,
    text_activations: SparseEmbeddings,
    band: tuple[float, float] = (0.25, 0.75),
    normalize: bool = True,
    histogram_bins: int = 10,
) -> dict:
    """`multimodal_fraction`, `multimodal_density_fraction`, `mean_score`, `density_weighted_score`,
    `image_only_fraction`, `text_only_fraction`, `num_scored_features`, `score_histogram`.
    Row n of `text_activations` is the text paired with image n."""
    if len(image_activations) != len(text_activations):
        raise ValueError(f"{len(image_activations)} images but {len(text_activations)} paired texts.")
    if image_activations.width != text_activations.width:
        raise ValueError(f"Image activations are {image_activations.width}-d but text activations are {text_activations.width}-d.")
    images = abs(float64_csr(image_activations))
    texts = abs(float64_csr(text_activations))
    if normalize:
        images, texts = unit_rows(images), unit_rows(texts)
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
