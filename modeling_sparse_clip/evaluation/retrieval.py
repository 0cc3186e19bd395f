"""Image-text retrieval Recall@K in both directions, several captions per image (the COCO/Flickr
protocol of CLIP and clip_benchmark).

Image i owns captions C(i); similarities are cosine: s(t, i) = normalize(text_t) . normalize(image_i).
  text -> image  R@K = mean over texts t of [ #{images j != owner(t) : s(t, j) >= s(t, owner(t))} < K ]
  image -> text  R@K = mean over images i of [ #{texts u not in C(i) : s(u, i) >= s*_i} < K ],
                 where s*_i = max_{c in C(i)} s(c, i)   (a hit when ANY of its captions is in the top K)
Ties count against the query (pessimistic), so all-zero embeddings never score by luck.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..sparse_embeddings import SparseEmbeddings
from .cosine import float64_csr, unit_rows


def evaluate(
    image_embeddings: SparseEmbeddings,
    text_embeddings: SparseEmbeddings,
    caption_counts: Sequence[int],
    k_values: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict:
    """`image_to_text_R@K` (query image, retrieve captions) and `text_to_image_R@K` for each K, plus
    `num_images`, `num_texts`. The texts are the captions of image 0, then of image 1, ...;
    `caption_counts[i]` says how many image i has (at least one)."""
    caption_counts = np.asarray(caption_counts, dtype=np.int64)
    if len(caption_counts) != len(image_embeddings):
        raise ValueError(f"{len(caption_counts)} caption counts for {len(image_embeddings)} images.")
    if (caption_counts == 0).any():
        raise ValueError(f"Every image needs at least one caption; {int((caption_counts == 0).sum())} have none.")
    if int(caption_counts.sum()) != len(text_embeddings):
        raise ValueError(f"The caption counts add up to {int(caption_counts.sum())} but there are {len(text_embeddings)} texts.")
    if image_embeddings.width != text_embeddings.width:
        raise ValueError(f"Image embeddings are {image_embeddings.width}-d but text embeddings are {text_embeddings.width}-d.")
    images = unit_rows(float64_csr(image_embeddings)).tocsr()
    texts = unit_rows(float64_csr(text_embeddings)).tocsr()
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
