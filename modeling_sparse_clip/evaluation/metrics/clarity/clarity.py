"""Clarity (Dreyer et al. 2025) of features, as in Sparse CLIP's eq. 2, with its random-image baseline
(an `evaluate` shell over `modeling_sparse_clip.evaluation.clarity`)."""

from modeling_sparse_clip.evaluation import clarity
from modeling_sparse_clip.evaluation import metric_shell  # the module, not its class: evaluate takes the first Metric class it finds
from modeling_sparse_clip.evaluation.metric_inputs import embeddings_from_rows

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
    >>> metric = modeling_sparse_clip.evaluation.load_metric("clarity")
    >>> metric.compute(active_indices=[[0], [0], [0]], active_values=[[1.0], [1.0], [1.0]],
    ...                reference_embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])["clarity"]
    0.4714045207910316
"""

_CITATION = """
@article{dreyer2025mechanistic, title={Mechanistic understanding and validation of large AI models with SemanticLens},
  author={Dreyer, Maximilian and others}, journal={Nature Machine Intelligence}, year={2025}}
""" + metric_shell.SPARSE_CLIP_CITATION


class Clarity(metric_shell.SparseMetric):
    task = clarity
    inputs = {**metric_shell.sparse_rows("active"), **metric_shell.dense_rows("reference_embeddings")}
    inputs_description = _KWARGS_DESCRIPTION
    citation = _CITATION

    def _compute(self, active_indices, active_values, reference_embeddings, tau=0.001, n_min=2, width=None, baseline_draws=1, seed=0,
                 return_per_feature=False):
        activations = embeddings_from_rows(active_indices, active_values, width)
        result = clarity.evaluate(activations, reference_embeddings, tau=tau, n_min=n_min, baseline_draws=baseline_draws, seed=seed,
                                  return_per_feature=return_per_feature)
        if width is None:  # a percentage of an inferred width would mean nothing
            result.pop("active_features_percent")
        return result
