"""Sparse CLIP image activations of a corpus split, computed once and cached on disk as CSR.

The image encoder is frozen, so the VLM never needs pixels: each split is encoded once (progress bar)
and stored as a `SparseEmbeddings` safetensors file named by the Sparse CLIP weights' fingerprint and
the split's datasets fingerprint. Change either and it is recomputed; change nothing and it loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from modeling_sparse_clip.interpret import DatasetImages, FeatureEncoder
from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings

logger = logging.getLogger(__name__)

DEFAULT_FEATURE_CACHE = Path(".cache/vlm")


def split_fingerprint(dataset) -> str:
    """A stable key of a `datasets.Dataset` (its fingerprint and length)."""
    return f"{getattr(dataset, '_fingerprint', 'unknown')}-{len(dataset)}"


def image_processing_key(encoder: FeatureEncoder) -> str:
    """A hash of the image preprocessing: the same tower at another resolution gives other outputs."""
    state = json.dumps(encoder.processor.image_processor.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(state.encode()).hexdigest()[:12]


def cached_image_activations(
    encoder: FeatureEncoder,
    dataset,
    cache_dir: str | os.PathLike = DEFAULT_FEATURE_CACHE,
    image_column: str = "image",
    batch_size: int = 64,
    progress: bool = True,
) -> SparseEmbeddings:
    """Un-normalised Sparse CLIP activations (`get_image_features(...).pooler_output`) of every image of `dataset`."""
    key = f"{encoder.fingerprint()}_{split_fingerprint(dataset)}-{image_processing_key(encoder)}"
    path = Path(cache_dir) / f"image_activations_{key}.safetensors"
    if path.exists():
        logger.info("image activations: cache hit %s", path)
        return SparseEmbeddings.load(path)
    # cache_key: the tower outputs are also kept by FeatureEncoder (keyed by the tower weights), so a new
    # head on the same frozen tower (a retrained Sparse CLIP) re-uses them and only projects.
    activations = encoder.encode_images(DatasetImages(dataset, image_column), batch_size=batch_size, progress=progress,
                                        cache_key=f"{split_fingerprint(dataset)}-{image_processing_key(encoder)}")
    embeddings = SparseEmbeddings.from_scipy(activations, dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    embeddings.save(tmp, metadata={"sparse_clip_fingerprint": encoder.fingerprint(), "split": split_fingerprint(dataset)})
    tmp.replace(path)  # atomic: a killed run never leaves half a cache
    return embeddings
