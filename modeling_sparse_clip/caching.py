"""The one cache: a fingerprint of what produced a result, and atomic safetensors files keyed by it.

    key = fingerprint(model.vision_model, processor.image_processor, dataset)
    tensors = cache.get_or_compute("pooled_image", key, lambda: {"pooled": run_tower()})

Change the weights, the preprocessing or the data and the key changes (the result is recomputed);
change nothing and it loads. The fingerprint and a description ride in the file's metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .atomic import atomic_file
from .constants import FEATURE_CACHE_DIR

logger = logging.getLogger(__name__)


def _update(digest, part: Any) -> None:
    """Feed one part into the hash, by what it is (weights, preprocessing, data, plain values)."""
    if isinstance(part, torch.nn.Module):
        part = part.state_dict()
    if isinstance(part, torch.Tensor):
        array = part.detach().cpu().contiguous()
        digest.update(f"tensor{tuple(array.shape)}{array.dtype}".encode())
        digest.update(array.reshape(-1).view(torch.uint8).numpy().tobytes() if array.numel() else b"")  # 0-d too
    elif isinstance(part, np.ndarray):
        digest.update(f"array{part.shape}{part.dtype}".encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, dict):
        for key in sorted(part, key=str):
            digest.update(str(key).encode() + b"=")
            _update(digest, part[key])
    elif isinstance(part, (list, tuple)):
        digest.update(f"seq{len(part)}".encode())
        for item in part:
            _update(digest, item)
            digest.update(b"\0")
    elif hasattr(part, "_fingerprint") and hasattr(part, "__len__"):  # a datasets.Dataset
        digest.update(f"dataset:{part._fingerprint}:{len(part)}".encode())
    elif hasattr(part, "backend_tokenizer"):  # a fast tokenizer: its whole vocabulary and settings
        # without the padding/truncation state a call leaves behind (the caller hashes its own lengths)
        state = json.loads(part.backend_tokenizer.to_str())
        state["padding"] = state["truncation"] = None
        digest.update(json.dumps(state, sort_keys=True).encode())
        digest.update(f"|{part.model_max_length}|{part.padding_side}".encode())
    elif hasattr(part, "to_json_string"):  # image processors, configs
        digest.update(part.to_json_string().encode())
    elif hasattr(part, "image_processor") and hasattr(part, "tokenizer"):  # a processor
        _update(digest, part.image_processor)
        _update(digest, part.tokenizer)
    elif isinstance(part, (str, bytes, int, float, bool)) or part is None:
        digest.update(repr(part).encode())
    else:
        raise TypeError(f"fingerprint() does not know how to hash a {type(part).__name__}")


def fingerprint(*parts: Any, length: int = 20) -> str:
    """A hex digest of weights (modules, state dicts, tensors), preprocessing (processors, tokenizers,
    image processors), data (`datasets.Dataset`, lists of strings) and plain values, in order."""
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
        digest.update(b"\x1e")
    return digest.hexdigest()[:length]


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file written atomically (a killed run never leaves half a cache)."""
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return Path(path)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file and its string metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata() or {})


class TensorCache:
    """Safetensors files `<root>/<kind>_<key>.safetensors`; `root=None` turns caching off."""

    def __init__(self, root: str | os.PathLike | None = FEATURE_CACHE_DIR):
        self.root = Path(root) if root is not None else None

    def path(self, kind: str, key: str) -> Path | None:
        return None if self.root is None else self.root / f"{kind}_{key}.safetensors"

    def load(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(kind, key)
        if path is None or not path.exists():
            return None
        logger.info("cache hit: %s", path)
        return load_tensors(path)[0]

    def save(self, kind: str, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        path = self.path(kind, key)
        if path is None:
            return
        try:
            save_tensors(path, tensors, {"fingerprint": key, "kind": kind, **(metadata or {})})
        except OSError as error:  # a read-only cache only costs recomputation
            logger.warning("could not write the cache %s: %s", path, error)

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], dict[str, torch.Tensor]], metadata: dict[str, str] | None = None):
        cached = self.load(kind, key)
        if cached is not None:
            return cached
        tensors = compute()
        self.save(kind, key, tensors, metadata)
        return tensors


def describe(**fields: Any) -> dict[str, str]:
    """Metadata values as strings (safetensors metadata is str -> str)."""
    return {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in fields.items()}
