"""Modality score of features (Papadimitriou et al. 2025): unimodal or multimodal? (an `evaluate`
shell over `modeling_sparse_clip.evaluation.modality`)."""

from modeling_sparse_clip.evaluation import modality
from modeling_sparse_clip.evaluation import metric_shell  # the module, not its class: evaluate takes the first Metric class it finds
from modeling_sparse_clip.evaluation.metric_inputs import embeddings_from_rows, rows_width

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
    >>> metric = modeling_sparse_clip.evaluation.load_metric("modality_score")
    >>> metric.compute(image_indices=[[0, 1]], image_values=[[1.0, 1.0]], text_indices=[[0]],
    ...                text_values=[[1.0]], normalize=False)["multimodal_fraction"]
    0.5
"""

_CITATION = """
@article{papadimitriou2025interpreting, title={Interpreting the Linear Structure of Vision-language Model Embedding Spaces},
  author={Papadimitriou, Isabel and Su, Huangyuan and Fel, Thomas and Kakade, Sham and Gil, Stephanie}, journal={arXiv:2504.11695}, year={2025}}
""" + metric_shell.SPARSE_CLIP_CITATION


class ModalityScore(metric_shell.SparseMetric):
    task = modality
    inputs = {**metric_shell.sparse_rows("image"), **metric_shell.sparse_rows("text")}
    inputs_description = _KWARGS_DESCRIPTION
    citation = _CITATION

    def _compute(self, image_indices, image_values, text_indices, text_values, width=None, band=(0.25, 0.75), normalize=True, histogram_bins=10):
        if width is None:
            width = rows_width(image_indices, text_indices)
        images = embeddings_from_rows(image_indices, image_values, width)
        texts = embeddings_from_rows(text_indices, text_values, width)
        return modality.evaluate(images, texts, band=band, normalize=normalize, histogram_bins=histogram_bins)
