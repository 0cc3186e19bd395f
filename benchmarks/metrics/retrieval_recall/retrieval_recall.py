"""Image-text retrieval recall@k in both directions, with several captions per image."""

import datasets
import evaluate
import numpy as np
import scipy.sparse as sp

_DESCRIPTION = """
Retrieval Recall@K (the COCO/Flickr protocol of CLIP and clip_benchmark), from embeddings.

Image i owns captions C(i); similarities are cosine: s(t, i) = normalize(text_t) . normalize(image_i).
  text -> image  R@K = mean over texts t of [ #{images j != owner(t) : s(t, j) >= s(t, owner(t))} < K ]
  image -> text  R@K = mean over images i of [ #{texts u not in C(i) : s(u, i) >= s*_i} < K ],
                 where s*_i = max_{c in C(i)} s(c, i)   (a hit when ANY of its captions is in the top K)
Ties count against the query (pessimistic), so all-zero embeddings never score by luck.
Embeddings arrive as sparse rows (indices of non-zero dimensions and their values).
"""

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
    >>> metric = evaluate.load("benchmarks/metrics/retrieval_recall")
    >>> metric.compute(image_indices=[[0], [1]], image_values=[[1.0], [1.0]],
    ...                text_indices=[[[0]], [[1], [0, 1]]], text_values=[[[1.0]], [[1.0], [1.0, 1.0]]],
    ...                k_values=[1])["text_to_image_R@1"]
    0.6666666666666666
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


class RetrievalRecall(evaluate.Metric):
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
                    "text_indices": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
                    "text_values": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                }
            ),
        )

    def _compute(self, image_indices, image_values, text_indices, text_values, k_values=(1, 5, 10), width=None, chunk_size=1024):
        caption_counts = np.array([len(c) for c in text_indices], dtype=np.int64)
        if (caption_counts == 0).any():
            raise ValueError(f"Every image needs at least one caption; {int((caption_counts == 0).sum())} have none.")
        flat_text_indices = [row for captions in text_indices for row in captions]
        flat_text_values = [row for captions in text_values for row in captions]
        if width is None:
            width = 1 + max(
                [int(np.max(r)) for r in list(image_indices) + flat_text_indices if len(r)], default=0
            )
        images = _normalize_rows(_rows_to_csr(image_indices, image_values, width)).tocsr()
        texts = _normalize_rows(_rows_to_csr(flat_text_indices, flat_text_values, width)).tocsr()
        owner = np.repeat(np.arange(len(caption_counts)), caption_counts)
        num_images, num_texts = images.shape[0], texts.shape[0]

        text_ranks = np.empty(num_texts, dtype=np.int64)
        best_caption_score = np.full(num_images, -np.inf)
        for start in range(0, num_texts, chunk_size):  # chunks keep the [texts, images] matrix small
            stop = min(start + chunk_size, num_texts)
            scores = (texts[start:stop] @ images.T).toarray()
            own = scores[np.arange(stop - start), owner[start:stop]]
            text_ranks[start:stop] = (scores >= own[:, None]).sum(axis=1) - 1
            np.maximum.at(best_caption_score, owner[start:stop], own)
        # image -> text: count other images' captions scoring >= the image's best own caption.
        image_ranks = np.zeros(num_images, dtype=np.int64)
        for start in range(0, num_images, chunk_size):
            stop = min(start + chunk_size, num_images)
            scores = (images[start:stop] @ texts.T).toarray()  # [images, texts]
            not_own = owner[None, :] != np.arange(start, stop)[:, None]
            image_ranks[start:stop] = ((scores >= best_caption_score[start:stop, None]) & not_own).sum(axis=1)
        result = {}
        for k in k_values:
            result[f"image_to_text_R@{k}"] = float((image_ranks < k).mean())
            result[f"text_to_image_R@{k}"] = float((text_ranks < k).mean())
        result["num_images"] = int(num_images)
        result["num_texts"] = int(num_texts)
        return result
