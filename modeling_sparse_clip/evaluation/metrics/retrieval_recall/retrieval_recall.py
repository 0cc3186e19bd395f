"""Image-text retrieval recall@k in both directions, several captions per image (an `evaluate` shell
over `modeling_sparse_clip.evaluation.retrieval`)."""

from modeling_sparse_clip.evaluation import retrieval
from modeling_sparse_clip.evaluation import metric_shell  # the module, not its class: evaluate takes the first Metric class it finds
from modeling_sparse_clip.evaluation.metric_inputs import embeddings_from_rows, rows_width

_KWARGS_DESCRIPTION = """
Args:
    image_indices / image_values (`list[list[int|float]]`): per image, its sparse embedding row.
    text_indices / text_values (`list[list[list[int|float]]]`): per image, the sparse embedding
        rows of each of its captions (one or more).
    k_values (`list[int]`, default `[1, 5, 10]`).
    width (`int`, optional): embedding width (default: largest index + 1).
Returns:
    `image_to_text_R@K` (query image, retrieve captions) and `text_to_image_R@K` for each K,
    plus `num_images`, `num_texts`.
Examples:
    >>> metric = modeling_sparse_clip.evaluation.load_metric("retrieval_recall")
    >>> metric.compute(image_indices=[[0], [1]], image_values=[[1.0], [1.0]],
    ...                text_indices=[[[0]], [[1], [0, 1]]], text_values=[[[1.0]], [[1.0], [1.0, 1.0]]],
    ...                k_values=[1])["text_to_image_R@1"]
    0.6666666666666666
"""

_CITATION = """
@inproceedings{radford2021clip, title={Learning Transferable Visual Models From Natural Language Supervision},
  author={Radford, Alec and others}, booktitle={ICML}, year={2021}}
""" + metric_shell.SPARSE_CLIP_CITATION


class RetrievalRecall(metric_shell.SparseMetric):
    task = retrieval
    inputs = {**metric_shell.sparse_rows("image"), **metric_shell.sparse_rows("text", nested=True)}
    inputs_description = _KWARGS_DESCRIPTION
    citation = _CITATION

    def _compute(self, image_indices, image_values, text_indices, text_values, k_values=(1, 5, 10), width=None, chunk_size=1024):
        caption_counts = [len(captions) for captions in text_indices]
        flat_text_indices = [row for captions in text_indices for row in captions]
        flat_text_values = [row for captions in text_values for row in captions]
        if width is None:
            width = rows_width(image_indices, flat_text_indices)
        images = embeddings_from_rows(image_indices, image_values, width)
        texts = embeddings_from_rows(flat_text_indices, flat_text_values, width)
        return retrieval.evaluate(images, texts, caption_counts, k_values=k_values, chunk_size=chunk_size)
