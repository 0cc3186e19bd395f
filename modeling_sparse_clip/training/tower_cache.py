"""Run frozen towers once over a corpus and keep their pooled outputs, so that heads train fast on CPU.

The towers run through THE encoder (`SparseCLIPEncoder`) and the result is stored in THE cache
(`caching.TensorCache`), keyed by both towers (weights, pooling, preprocessing) and the dataset:
change any of them and it is recomputed; change nothing and nothing is recomputed.
"""

from __future__ import annotations

import os

import torch
from tqdm.auto import tqdm

from ..caching import TensorCache, describe, fingerprint
from ..encoding import SparseCLIPEncoder

ROWS_PER_BATCH = 64


def _encoder(model, processor, progress: bool) -> SparseCLIPEncoder:
    # channels_last makes CPU convolutions (depthwise ones especially) about 2x faster
    return SparseCLIPEncoder(model, processor, name="towers", batch_size=ROWS_PER_BATCH, channels_last=True, progress=progress)


def _encode(encoder: SparseCLIPEncoder, dataset, batch_size: int, desc: str) -> dict[str, torch.Tensor]:
    images, texts, offsets = [], [], [0]
    for start in tqdm(range(0, len(dataset), batch_size), desc=f"caching {desc}", unit="batch", disable=not encoder.progress):
        rows = dataset[start : start + batch_size]
        captions = [c for caps in rows["text"] for c in caps]
        for caps in rows["text"]:
            offsets.append(offsets[-1] + len(caps))
        images.append(encoder.pool_images(rows["image"], batch_size=batch_size))
        # all captions of these rows in one tokenizer call (one padding length), as the cache always did
        texts.append(encoder.pool_texts(captions, batch_size=len(captions)))
    return {"image": torch.cat(images), "text": torch.cat(texts), "text_offsets": torch.tensor(offsets)}


def encode_tower_features(model, processor, dataset, batch_size: int = ROWS_PER_BATCH, desc: str = "towers",
                          progress: bool = True) -> dict[str, torch.Tensor]:
    """Pooled tower outputs for every image and every caption of `dataset` (columns image, text: list[str]).

    Returns image [N, Dv], text [M, Dt] and text_offsets [N + 1] (captions of row i are
    text[text_offsets[i]:text_offsets[i + 1]]).
    """
    return _encode(_encoder(model, processor, progress), dataset, batch_size, desc)


def cached_tower_features(model, processor, dataset, cache_dir: str | os.PathLike, batch_size: int = ROWS_PER_BATCH,
                          desc: str = "towers", progress: bool = True) -> dict[str, torch.Tensor]:
    """`encode_tower_features`, computed once per (towers, preprocessing, dataset) and loaded from disk after."""
    encoder = _encoder(model, processor, progress)
    key = fingerprint(encoder.fingerprint("image"), encoder.fingerprint("text"), dataset, batch_size)
    return TensorCache(cache_dir).get_or_compute(
        "tower_features", key, lambda: _encode(encoder, dataset, batch_size, desc), describe(rows=len(dataset), desc=desc)
    )


__all__ = ["cached_tower_features", "encode_tower_features"]
