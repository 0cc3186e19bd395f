"""Sparse CLIP image activations of a corpus split, through the one encoder and its one cache.

The image encoder is frozen, so the VLM never needs pixels: each split goes through the image tower
once (progress bar) and the encoder caches the pooled tower outputs (`SparseCLIPEncoder(cache_dir=...)`)
keyed by the tower, its preprocessing and the split's datasets fingerprint; the projection is re-run
on every call (a matmul). Change the tower or the split and it is recomputed; a new head on the same
frozen tower (a retrained Sparse CLIP) only re-projects.
"""

from __future__ import annotations

from modeling_sparse_clip.caching import fingerprint
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.interpret import DatasetImages
from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings


def cached_image_activations(encoder: SparseCLIPEncoder, dataset, image_column: str = "image") -> SparseEmbeddings:
    """Un-normalised Sparse CLIP activations (`get_image_features(...).pooler_output`) of every image of
    `dataset` (a `datasets.Dataset`); the tower outputs are cached in the encoder's `cache_dir`."""
    return encoder.encode_images(DatasetImages(dataset, image_column), cache_key=fingerprint(dataset, image_column), desc="split")
