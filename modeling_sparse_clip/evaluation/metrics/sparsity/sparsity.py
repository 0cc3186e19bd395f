"""Sparsity of feature activations: L0 per input, active and dead features (an `evaluate` shell over
`modeling_sparse_clip.evaluation.sparsity`)."""

import datasets
import evaluate

from modeling_sparse_clip.evaluation import sparsity
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

_CITATION = """
@inproceedings{qin2026sparseclip, title={Sparse CLIP: Co-Optimizing Interpretability and Performance in Contrastive Learning},
  author={Qin, Chuan and Venhoff, Constantin and Joseph, Sonia and Xiao, Fanyi and Scherer, Stefan}, booktitle={ICLR}, year={2026}}
"""


class Sparsity(evaluate.Metric):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Hand `_compute` numpy arrays, not Python lists (see zero_shot_accuracy for why this is set here).
        self.info.format = "numpy"

    def _info(self):
        return evaluate.MetricInfo(
            description=sparsity.__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "active_indices": datasets.Sequence(datasets.Value("int32")),
                    "active_values": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, active_indices, active_values, width=None, tau=0.001):
        if width is None:
            raise ValueError("Pass width= (the number of features); sparsity percentages and dead features need it.")
        return sparsity.evaluate(embeddings_from_rows(active_indices, active_values, int(width)), tau=tau)
