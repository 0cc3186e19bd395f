"""Zero-shot classification accuracy of a CLIP-style model, computed from embeddings."""

import datasets
import evaluate
import numpy as np
import scipy.sparse as sp

_DESCRIPTION = """
Zero-shot top-k accuracy (Radford et al. 2021), from image embeddings and class text embeddings.

Each class k has T_k prompt embeddings e_{k,t} (the class name in templates such as
"a photo of a {}."). As CLIP does, the class vector is the renormalised mean of the normalised
prompt embeddings:  c_k = normalize( mean_t normalize(e_{k,t}) ).
Each image x_i scores  s_{i,k} = normalize(x_i) . c_k.
The rank of the true class y_i is  r_i = #{k != y_i : s_{i,k} >= s_{i,y_i}}  (ties count AGAINST
the image, so an all-zero embedding, which ties every class, is never correct by luck).
    top-k accuracy      = mean_i [ r_i < k ]
    mean per-class top-1 = mean_k ( mean_{i : y_i = k} [ r_i < 1 ] )   (balanced accuracy)

Embeddings arrive as sparse rows (`image_indices`, `image_values`): the non-zero dimensions of each
image's embedding and their values; a dense embedding simply lists every dimension.
"""

_KWARGS_DESCRIPTION = """
Args:
    image_indices (`list[list[int]]`): per image, the indices of its non-zero embedding dimensions.
    image_values (`list[list[float]]`): per image, the values at those indices.
    labels (`list[int]`): per image, the true class index.
    class_embeddings: the prompt embeddings of each class: a dense array `[C, D]` (one prompt per
        class), `[C, T, D]` (T templates), or a list of C arrays / scipy sparse matrices `[T_k, D]`.
    top_k (`list[int]`, default `[1, 5]`): which top-k accuracies to report.
Returns:
    `top{k}_accuracy` for each k, `mean_per_class_top1`, `num_images`, `num_classes`,
    `zero_embedding_fraction` (images whose embedding is all zeros).
Examples:
    >>> metric = evaluate.load("benchmarks/metrics/zero_shot_accuracy")
    >>> metric.compute(image_indices=[[0], [1]], image_values=[[1.0], [2.0]], labels=[0, 1],
    ...                class_embeddings=np.eye(2), top_k=[1])["top1_accuracy"]
    1.0
"""

_CITATION = """
@inproceedings{radford2021clip, title={Learning Transferable Visual Models From Natural Language Supervision},
  author={Radford, Alec and others}, booktitle={ICML}, year={2021}}
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


def class_vectors(class_embeddings):
    """CLIP's prompt ensembling: c_k = normalize(mean_t normalize(e_{k,t})), as a dense [C, D] array."""
    if hasattr(class_embeddings, "detach"):  # a torch tensor
        class_embeddings = class_embeddings.detach().float().cpu().numpy()
    if isinstance(class_embeddings, np.ndarray) and class_embeddings.dtype != object:
        if class_embeddings.ndim == 2:
            class_embeddings = class_embeddings[:, None, :]
        if class_embeddings.ndim != 3:
            raise ValueError(f"class_embeddings must be [C, D] or [C, T, D]; got shape {class_embeddings.shape}.")
        per_class = list(class_embeddings)
    else:
        per_class = list(class_embeddings)
    vectors = []
    for prompts in per_class:
        if hasattr(prompts, "detach"):
            prompts = prompts.detach().float().cpu().numpy()
        prompts = prompts if sp.issparse(prompts) else np.atleast_2d(np.asarray(prompts, np.float64))
        mean = np.asarray(_normalize_rows(prompts).mean(axis=0)).ravel()
        vectors.append(mean)
    return _normalize_rows(np.stack(vectors))


class ZeroShotAccuracy(evaluate.Metric):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Hand `_compute` numpy arrays instead of Python lists (evaluate only allows "numpy" for
        # scalar features at construction; datasets' numpy formatter handles list columns fine).
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
                    "labels": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, image_indices, image_values, labels, class_embeddings=None, top_k=(1, 5)):
        if class_embeddings is None:
            raise ValueError("Pass class_embeddings= (the prompt embeddings of every class), see the metric's docstring.")
        classes = class_vectors(class_embeddings)
        num_classes, width = classes.shape
        labels = np.asarray(labels, np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}) for {num_classes} classes; got {labels.min()}..{labels.max()}.")
        images = _rows_to_csr(image_indices, image_values, width)
        scores = np.asarray(_normalize_rows(images) @ classes.T)  # [N, C]
        true_scores = scores[np.arange(len(labels)), labels]
        # Pessimistic ties: every other class scoring >= the true class ranks above it.
        ranks = (scores >= true_scores[:, None]).sum(axis=1) - 1
        result = {f"top{k}_accuracy": float((ranks < k).mean()) if len(ranks) else float("nan") for k in top_k}
        per_class = [float((ranks[labels == k] < 1).mean()) for k in range(num_classes) if (labels == k).any()]
        result["mean_per_class_top1"] = float(np.mean(per_class)) if per_class else float("nan")
        result["num_images"] = int(len(labels))
        result["num_classes"] = int(num_classes)
        result["zero_embedding_fraction"] = float((images.getnnz(axis=1) == 0).mean()) if len(labels) else 0.0
        return result
