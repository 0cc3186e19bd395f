"""Sparsity of feature activations: L0 per input, active and dead features (an `evaluate` shell over
`modeling_sparse_clip.evaluation.sparsity`)."""

from modeling_sparse_clip.evaluation import sparsity
from modeling_sparse_clip.evaluation import metric_shell  # the module, not its class: evaluate takes the first Metric class it finds
from modeling_sparse_clip.evaluation.metric_inputs import embeddings_from_rows

_KWARGS_DESCRIPTION = """
Args:
    active_indices (`list[list[int]]`): per input, the indices of its non-zero features.
    active_values (`list[list[float]]`): per input, the values at those indices.
    width (`int`, required): number of features W.
    tau (`float`, default 0.001): threshold for a feature to count as firing (Clarity's tau).
Returns:
    `l0_mean`, `l0_median`, `l0_std`, `l0_percent_of_width`, `active_features`,
    `active_features_percent`, `dead_features`, `num_inputs`, `width`.
Examples:
    >>> metric = modeling_sparse_clip.evaluation.load_metric("sparsity")
    >>> metric.compute(active_indices=[[0, 2], [2]], active_values=[[1.0, 0.5], [2.0]], width=4)["l0_mean"]
    1.5
"""


class Sparsity(metric_shell.SparseMetric):
    task = sparsity
    inputs = metric_shell.sparse_rows("active")
    inputs_description = _KWARGS_DESCRIPTION

    def _compute(self, active_indices, active_values, width=None, tau=0.001):
        if width is None:
            raise ValueError("Pass width= (the number of features); sparsity percentages and dead features need it.")
        return sparsity.evaluate(embeddings_from_rows(active_indices, active_values, int(width)), tau=tau)
