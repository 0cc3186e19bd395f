"""Embed images and texts with any Sparse CLIP model (or a dense model + SAE), batched, with progress bars.

An encoder returns two things per input, both as scipy CSR matrices (rows = inputs):
  * activations: the features interpretability metrics read (sparsity, Clarity, modality, labels):
    `get_*_features(...).pooler_output` for a model, the SAE codes for a dense model + SAE;
  * embeddings: what zero-shot and retrieval compare by cosine: the same activations for a model,
    the SAE reconstructions for a dense model + SAE (the paper's "zero-shot through reconstructions").
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from PIL import Image
from tqdm.auto import tqdm


def to_csr(matrix: torch.Tensor | np.ndarray) -> sp.csr_matrix:
    array = matrix.detach().float().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix, np.float32)
    return sp.csr_matrix(array, dtype=np.float32)


def sparse_rows(matrix: sp.spmatrix) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """CSR -> per-row (indices, values): the input format of the metric modules."""
    matrix = sp.csr_matrix(matrix)
    matrix.eliminate_zeros()
    splits = matrix.indptr[1:-1]
    return np.split(matrix.indices.astype(np.int32), splits), np.split(matrix.data.astype(np.float32), splits)


def as_rgb(image: Image.Image) -> Image.Image:
    """RGB on a white background (transparent emoji and clipart would otherwise turn black)."""
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def batches(items: Sequence, batch_size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def load_model_and_processor(model_dir: str | os.PathLike):
    """`AutoModel` + `AutoProcessor` of a Sparse CLIP folder (importing the package registers them)."""
    import modeling_sparse_clip  # noqa: F401
    from transformers import AutoModel, AutoProcessor

    return AutoModel.from_pretrained(str(model_dir)).eval(), AutoProcessor.from_pretrained(str(model_dir))


class ModelEncoder:
    """A Sparse CLIP model (any activation, dense ones included) + its processor."""

    def __init__(self, model, processor, name: str, batch_size: int = 64, device: str | None = None, progress: bool = True):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.name = name
        self.batch_size = batch_size
        self.progress = progress
        self.width = int(model.config.projection_dim)
        tokenizer = getattr(processor, "tokenizer", processor)
        limit = getattr(model.config.text_config, "max_position_embeddings", None)
        self.max_length = min(tokenizer.model_max_length, limit) if limit else tokenizer.model_max_length

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, name: str | None = None, **kwargs) -> "ModelEncoder":
        model, processor = load_model_and_processor(model_dir)
        return cls(model, processor, name or os.path.basename(os.path.normpath(str(model_dir))), **kwargs)

    def _per_batch(self, features: torch.Tensor) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(activations, embeddings) of one batch of tower features; for a model they are the same."""
        features = to_csr(features)
        return features, features

    def _collect(self, parts: list[tuple[sp.csr_matrix, sp.csr_matrix]]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        # Sparse per batch, so a 100K-word vocabulary at a 16K width never sits in memory densely.
        if not parts:
            empty = sp.csr_matrix((0, self.width), dtype=np.float32)
            return empty, empty
        activations = sp.vstack([a for a, _ in parts], format="csr")
        if all(a is e for a, e in parts):
            return activations, activations
        return activations, sp.vstack([e for _, e in parts], format="csr")

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image], desc: str = "") -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(activations, embeddings) of images, as CSR matrices."""
        parts = []
        for batch in tqdm(list(batches(images, self.batch_size)), desc=f"{self.name}: {desc} images", disable=not self.progress, leave=False):
            pixels = self.processor(images=[as_rgb(im) for im in batch], return_tensors="pt")["pixel_values"]
            parts.append(self._per_batch(self.model.get_image_features(pixel_values=pixels.to(self.device)).pooler_output))
        return self._collect(parts)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], desc: str = "") -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(activations, embeddings) of texts, as CSR matrices."""
        parts = []
        for batch in tqdm(list(batches(list(texts), self.batch_size)), desc=f"{self.name}: {desc} texts", disable=not self.progress, leave=False):
            tokens = self.processor(text=list(batch), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            parts.append(self._per_batch(self.model.get_text_features(**tokens).pooler_output))
        return self._collect(parts)


class SAEEncoder(ModelEncoder):
    """A dense model read through a post-hoc SAE: activations = SAE codes, embeddings = reconstructions."""

    def __init__(self, model, processor, sae, name: str, **kwargs):
        super().__init__(model, processor, name, **kwargs)
        if sae.config.input_dim != model.config.projection_dim:
            raise ValueError(
                f"The SAE reads {sae.config.input_dim}-d embeddings but the model's are {model.config.projection_dim}-d: "
                "train the SAE on this model (python -m benchmarks.train_sae_baseline --dense_model ...)."
            )
        self.sae = sae.to(self.device).eval()
        self.width = sae.config.width

    @classmethod
    def from_pretrained(cls, sae_dir: str | os.PathLike, dense_model: str | None = None, name: str | None = None, **kwargs) -> "SAEEncoder":
        from modeling_sparse_clip.sae import SparseAutoencoder

        sae = SparseAutoencoder.from_pretrained(sae_dir)
        dense_model = dense_model or sae.config.dense_model
        if not dense_model:
            raise ValueError(f"{sae_dir} does not name its dense model; pass it explicitly.")
        model, processor = load_model_and_processor(dense_model)
        return cls(model, processor, sae, name or os.path.basename(os.path.normpath(str(sae_dir))), **kwargs)

    @torch.no_grad()
    def _per_batch(self, features: torch.Tensor) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        reconstruction, codes = self.sae(features)
        return to_csr(codes), to_csr(reconstruction)
