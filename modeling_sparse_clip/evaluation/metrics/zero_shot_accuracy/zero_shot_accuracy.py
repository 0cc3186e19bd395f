"""Zero-shot classification accuracy of a CLIP-style model, from embeddings (an `evaluate` shell over
`modeling_sparse_clip.evaluation.zero_shot`)."""

import datasets
import numpy as np

from modeling_sparse_clip.evaluation import zero_shot
from modeling_sparse_clip.evaluation import metric_shell  # the module, not its class: evaluate takes the first Metric class it finds
from modeling_sparse_clip.evaluation.metric_inputs import embeddings_from_matrix, embeddings_from_rows

_KWARGS_DESCRIPTION = """
Args:
    image_indices (`list[list[int]]`): per image, the indices of its non-zero embedding dimensions.
    image_values (`list[list[float]]`): per image, the values at those indices.
    labels (`list[int]`): per image, the true class index.
    class_embeddings: the prompt embeddings of each class: a dense array `[C, D]` (one prompt per
        class), `[C, T, D]` (T templates), or a list of C arrays / tensors / scipy sparse matrices `[T_k, D]`.
    top_k (`list[int]`, default `[1, 5]`): which top-k accuracies to report.
Returns:
    `top{k}_accuracy` for each k, `mean_per_class_top1`, `num_images`, `num_classes`,
    `zero_embedding_fraction` (images whose embedding is all zeros).
Examples:
    >>> metric = modeling_sparse_clip.evaluation.load_metric("zero_shot_accuracy")
    >>> metric.compute(image_indices=[[0], [1]], image_values=[[1.0], [2.0]], labels=[0, 1],
    ...                class_embeddings=np.eye(2), top_k=[1])["top1_accuracy"]
    1.0
"""

_CITATION = """
@inproceedings{radford2021clip, title={Learning Transferable Visual Models From Natural Language Supervision},
  author={Radford, Alec and others}, booktitle={ICML}, year={2021}}
""" + metric_shell.SPARSE_CLIP_CITATION


def per_class_prompts(class_embeddings):
    """`[C, D]`, `[C, T, D]` or a list of `[T_k, D]` -> one SparseEmbeddings of prompts per class."""
    if hasattr(class_embeddings, "detach"):  # a torch tensor
        class_embeddings = class_embeddings.detach().float().cpu().numpy()
    if isinstance(class_embeddings, np.ndarray) and class_embeddings.dtype != object:
        if class_embeddings.ndim == 2:
            class_embeddings = class_embeddings[:, None, :]
        if class_embeddings.ndim != 3:
            raise ValueError(f"class_embeddings must be [C, D] or [C, T, D]; got shape {class_embeddings.shape}.")
    return [embeddings_from_matrix(prompts) for prompts in class_embeddings]


class ZeroShotAccuracy(metric_shell.SparseMetric):
    task = zero_shot
    inputs = {**metric_shell.sparse_rows("image"), "labels": datasets.Value("int64")}
    inputs_description = _KWARGS_DESCRIPTION
    citation = _CITATION

    def _compute(self, image_indices, image_values, labels, class_embeddings=None, top_k=(1, 5)):
        if class_embeddings is None:
            raise ValueError("Pass class_embeddings= (the prompt embeddings of every class), see the metric's docstring.")
        prompts = per_class_prompts(class_embeddings)
        images = embeddings_from_rows(image_indices, image_values, prompts[0].width if prompts else None)
        return zero_shot.evaluate(images, prompts, labels, top_k=top_k)
