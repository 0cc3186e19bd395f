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


TEXT_BATCH = 256
# What the cached text features are computed by (part of the cache key): unique captions, sorted by length.
TEXT_SCHEME = "unique-captions-by-length-v1"


def _encode_captions(encoder: SparseCLIPEncoder, captions: list[str], desc: str) -> torch.Tensor:
    """Pooled text-tower outputs of `captions`, each distinct caption once, in batches of similar length.

    Why: a corpus repeats captions (Fashion-MNIST, digits: a handful of templates per class; 31.6K
    captions, 12.1K distinct at the 3,000 cap) and most are short (7 tokens on average, padded to ~30
    in mixed batches), so this runs the text tower on ~10x fewer tokens. Deterministic: the batches
    depend only on the set of captions.
    """
    unique = list(dict.fromkeys(captions))
    lengths = [len(ids) for ids in encoder.processor.tokenizer(unique, truncation=True, max_length=encoder.max_length)["input_ids"]]
    order = sorted(range(len(unique)), key=lambda i: (lengths[i], unique[i]))
    pooled = torch.zeros(len(unique), encoder.model.text_embed_dim)
    starts = range(0, len(order), TEXT_BATCH)
    for start in tqdm(starts, desc=f"caching {desc} captions", unit="batch", disable=not encoder.progress):
        rows = order[start : start + TEXT_BATCH]
        pooled[rows] = encoder.pool_texts([unique[i] for i in rows], batch_size=len(rows))
    position = {caption: i for i, caption in enumerate(unique)}
    return pooled[[position[c] for c in captions]] if captions else pooled


def _encode(encoder: SparseCLIPEncoder, dataset, batch_size: int, desc: str) -> dict[str, torch.Tensor]:
    images, captions, offsets = [], [], [0]
    for start in tqdm(range(0, len(dataset), batch_size), desc=f"caching {desc} images", unit="batch", disable=not encoder.progress):
        rows = dataset[start : start + batch_size]
        for caps in rows["text"]:
            captions.extend(caps)
            offsets.append(offsets[-1] + len(caps))
        images.append(encoder.pool_images(rows["image"], batch_size=batch_size))
    return {"image": torch.cat(images), "text": _encode_captions(encoder, captions, desc), "text_offsets": torch.tensor(offsets)}


def encode_tower_features(model, processor, dataset, batch_size: int = ROWS_PER_BATCH, desc: str = "towers",
                          progress: bool = True) -> dict[str, torch.Tensor]:
    """Pooled tower outputs for every image and every caption of `dataset` (columns image, text: list[str]).

    Returns image [N, Dv], text [M, Dt] and text_offsets [N + 1] (captions of row i are
    text[text_offsets[i]:text_offsets[i + 1]]). Images run in dataset order, `batch_size` at a time;
    each distinct caption runs once, in batches of similar length (`_encode_captions`).
    """
    return _encode(_encoder(model, processor, progress), dataset, batch_size, desc)


def cached_tower_features(model, processor, dataset, cache_dir: str | os.PathLike, batch_size: int = ROWS_PER_BATCH,
                          desc: str = "towers", progress: bool = True) -> dict[str, torch.Tensor]:
    """`encode_tower_features`, computed once per (towers, preprocessing, dataset) and loaded from disk after."""
    encoder = _encoder(model, processor, progress)
    key = fingerprint(encoder.fingerprint("image"), encoder.fingerprint("text"), dataset, batch_size, TEXT_SCHEME, TEXT_BATCH)
    return TensorCache(cache_dir).get_or_compute(
        "tower_features", key, lambda: _encode(encoder, dataset, batch_size, desc), describe(rows=len(dataset), desc=desc)
    )


__all__ = ["cached_tower_features", "encode_tower_features"]
