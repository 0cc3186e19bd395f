"""Turn images and texts into sparse feature activations, batched, with a progress bar.

Every interpretability tool reads the same thing: the post-activation, un-normalised features
(`get_*_features(...).pooler_output`). This module is the one place that runs the towers.

Tower outputs are cached on disk by a hash of the tower weights: checkpoints that share a frozen
tower (the concept-evolution checkpoints of a heads-only run) then pay for the tower only once and
each checkpoint only applies its own projection.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from PIL import Image
from tqdm.auto import tqdm

DEFAULT_CACHE_DIR = Path(os.environ.get("SPARSE_CLIP_INTERPRET_CACHE", ".cache/interpret"))


def load_model_and_processor(model_name_or_path: str | os.PathLike, device: str | None = None):
    """`AutoModel` + `AutoProcessor` for a Sparse CLIP folder or Hub id, in eval mode."""
    import modeling_sparse_clip  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(str(model_name_or_path)).eval()
    processor = AutoProcessor.from_pretrained(str(model_name_or_path))
    if device:
        model.to(device)
    return model, processor


def _hash_tensors(tensors, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for tensor in tensors:
        array = tensor.detach().float().cpu().contiguous().numpy()
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def hash_strings(strings: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for s in strings:
        digest.update(s.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def to_csr(dense: torch.Tensor | np.ndarray) -> sp.csr_matrix:
    array = dense.detach().float().cpu().numpy() if isinstance(dense, torch.Tensor) else np.asarray(dense, np.float32)
    return sp.csr_matrix(array, dtype=np.float32)


class FeatureEncoder:
    """Runs a SparseCLIPModel's towers; returns activations as `scipy.sparse.csr_matrix` (rows x features)."""

    def __init__(self, model, processor, cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR, device: str | None = None):
        self.model = model.eval()
        self.processor = processor
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model.to(self.device)
        self._tower_hashes: dict[str, str] = {}
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(cls, model_name_or_path, cache_dir=DEFAULT_CACHE_DIR, device: str | None = None) -> "FeatureEncoder":
        model, processor = load_model_and_processor(model_name_or_path, device)
        encoder = cls(model, processor, cache_dir=cache_dir, device=device)
        encoder.source = str(model_name_or_path)
        return encoder

    # -- identity -------------------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        return int(self.model.config.projection_dim)

    def fingerprint(self) -> str:
        """A hash of every weight and of the config's head settings: the key of all caches."""
        if self._fingerprint is None:
            cfg = self.model.config
            extra = f"{cfg.activation}|{cfg.topk_k}|{cfg.text_pooling}|{cfg.vision_pooling}"
            self._fingerprint = _hash_tensors(self.model.state_dict().values(), extra)
        return self._fingerprint

    def _tower_hash(self, modality: str) -> str:
        if modality not in self._tower_hashes:
            cfg = self.model.config
            tower = self.model.text_model if modality == "text" else self.model.vision_model
            pooling = cfg.text_pooling if modality == "text" else cfg.vision_pooling
            # the same tower with other preprocessing (image size, tokenizer length) gives other outputs
            sub = self.processor.tokenizer if modality == "text" else self.processor.image_processor
            preprocessing = sub.to_json_string() if hasattr(sub, "to_json_string") else f"{type(sub).__name__}|{len(sub)}|{sub.model_max_length}"
            self._tower_hashes[modality] = _hash_tensors(tower.state_dict().values(), f"{modality}|{pooling}|{preprocessing}")
        return self._tower_hashes[modality]

    # -- towers ---------------------------------------------------------------------------------
    def _pooled(self, modality: str, inputs: dict) -> torch.Tensor:
        """The tower's pooled output = the input of the projection (captured by a hook, so the
        pooling code stays the model's own)."""
        projection = self.model.text_projection if modality == "text" else self.model.visual_projection
        captured = {}
        handle = projection.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0]))
        try:
            if modality == "text":
                self.model.get_text_features(**inputs)
            else:
                self.model.get_image_features(**inputs)
        finally:
            handle.remove()
        return captured["x"]

    @torch.no_grad()
    def project(self, modality: str, pooled: torch.Tensor) -> torch.Tensor:
        """Projection + sparsity activation of pooled tower outputs (dense tensor)."""
        from modeling_sparse_clip import sparsify

        projection = self.model.text_projection if modality == "text" else self.model.visual_projection
        pooled = pooled.to(self.device, projection.weight.dtype)
        cfg = self.model.config
        return sparsify(projection(pooled), cfg.activation, cfg.topk_k)

    def _text_inputs(self, texts: Sequence[str]) -> dict:
        inputs = self.processor.tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _image_inputs(self, images: Sequence[Image.Image]) -> dict:
        rgb = [im.convert("RGB") for im in images]
        inputs = self.processor.image_processor(images=rgb, return_tensors="pt")
        return {"pixel_values": inputs["pixel_values"].to(self.device)}

    @torch.no_grad()
    def pooled_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True, cache_key: str | None = None) -> np.ndarray:
        """Pooled text-tower outputs (float32, rows x tower width). Sorted by length so batches pad little."""
        return self._cached(
            "text", cache_key, lambda: self._run_texts(texts, batch_size, progress)
        )

    @torch.no_grad()
    def pooled_images(self, images: Sequence[Image.Image], batch_size: int = 64, progress: bool = True, cache_key: str | None = None) -> np.ndarray:
        return self._cached("image", cache_key, lambda: self._run_images(images, batch_size, progress))

    def _cached(self, modality: str, cache_key: str | None, compute) -> np.ndarray:
        path = None
        if cache_key and self.cache_dir:
            path = self.cache_dir / f"pooled_{modality}_{self._tower_hash(modality)}_{cache_key}.npy"
            if path.exists():
                return np.load(path).astype(np.float32)
        pooled = compute()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, pooled.astype(np.float16))
                os.replace(tmp, path)
            except OSError:
                pass  # a read-only cache only costs recomputation
        return pooled

    def _run_texts(self, texts, batch_size, progress) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.model.text_embed_dim), np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="text tower", unit="batch", disable=not progress or len(starts) < 2):
            idx = order[start : start + batch_size]
            out[idx] = self._pooled("text", self._text_inputs([texts[i] for i in idx])).float().cpu().numpy()
        return out

    def _run_images(self, images, batch_size, progress) -> np.ndarray:
        out = np.zeros((len(images), self.model.vision_embed_dim), np.float32)
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="image tower", unit="batch", disable=not progress or len(starts) < 2):
            batch = [images[i] for i in range(start, min(start + batch_size, len(images)))]
            out[start : start + len(batch)] = self._pooled("image", self._image_inputs(batch)).float().cpu().numpy()
        return out

    # -- activations ----------------------------------------------------------------------------
    def _activations(self, modality: str, pooled: np.ndarray, batch_size: int = 4096) -> sp.csr_matrix:
        blocks = [
            to_csr(self.project(modality, torch.from_numpy(pooled[i : i + batch_size])))
            for i in range(0, len(pooled), batch_size)
        ]
        return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, self.num_features), dtype=np.float32)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True, cache_key: str | None = None) -> sp.csr_matrix:
        """Un-normalised text activations (CSR, len(texts) x num_features)."""
        return self._activations("text", self.pooled_texts(texts, batch_size, progress, cache_key))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64, progress: bool = True, cache_key: str | None = None) -> sp.csr_matrix:
        """Un-normalised image activations (CSR, len(images) x num_features)."""
        return self._activations("image", self.pooled_images(images, batch_size, progress, cache_key))

    def encode_text(self, text: str) -> np.ndarray:
        return self.encode_texts([text], progress=False).toarray()[0]

    def encode_image(self, image: Image.Image) -> np.ndarray:
        return self.encode_images([image], progress=False).toarray()[0]


def l2_normalize_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ matrix, dtype=np.float32)


def l2_normalize(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def load_safetensors_with_metadata(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays of a safetensors file and its string metadata (our caches keep their fingerprint there)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), "np") as f:
        metadata = f.metadata() or {}
    return load_file(str(path)), metadata
