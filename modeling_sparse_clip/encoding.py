"""The one encoder: images and texts -> `SparseEmbeddings` through the model's own towers and heads.

    encoder = SparseCLIPEncoder.from_pretrained("outputs/embedded/sparse")
    image_acts = encoder.encode_images(pil_images)      # post-activation, un-normalised, CSR
    text_acts = encoder.encode_texts(["a cat", "a dog"])

Everything that embeds (evaluation, interpretability, the Space, ablations, the VLM, the training
tower cache) runs the towers here: `model.pool_*_tower` (the tower + the model's pooling) then
`model.project_*` (wide projection + activation), batch by batch, so results do not depend on who
asks. Tokenisation comes from the processor (padding, truncation at the tokenizer's length, capped
by the tower's position limit); images are flattened onto white (transparent emoji and clipart would
otherwise turn black). Pooled tower outputs can be cached (`cache_dir`), keyed by the tower weights,
the pooling, the preprocessing and a key for the inputs (e.g. a dataset fingerprint): heads trained on
the same frozen tower then only re-project.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .caching import TensorCache, fingerprint
from .images import to_rgb
from .sparse_embeddings import SparseEmbeddings

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# The one image path (first frame, EXIF orientation, 16-bit scaled, transparency on white), as in training.
as_rgb = to_rgb


def load_model_and_processor(model_name_or_path: str | os.PathLike, device: str | torch.device | None = None):
    """`AutoModel` + `AutoProcessor` of a Sparse CLIP folder or Hub id, in eval mode."""
    import modeling_sparse_clip  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(str(model_name_or_path)).eval()
    if device is not None:
        model.to(device)
    return model, AutoProcessor.from_pretrained(str(model_name_or_path))


def _batches(n: int, batch_size: int) -> range:
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1.")
    return range(0, n, batch_size)


class SparseCLIPEncoder:
    """A Sparse CLIP model (any activation: relu, topk, none) + its processor, run in batches.

    `name` labels progress bars and results; `cache_dir=None` turns the tower cache off;
    `channels_last` runs convolutional image towers in channels-last memory format (about 2x faster
    on CPU; outputs differ from the default format by ~1e-5).
    """

    def __init__(
        self,
        model,
        processor,
        name: str = "model",
        batch_size: int = 64,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        channels_last: bool = False,
    ):
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.name = name
        self.batch_size = batch_size
        self.progress = progress
        self.channels_last = channels_last
        self.cache = TensorCache(cache_dir)
        tokenizer = processor.tokenizer
        limit = getattr(model.config.text_config, "max_position_embeddings", None)
        self.max_length = min(tokenizer.model_max_length, limit) if limit else tokenizer.model_max_length
        self._fingerprints: dict[str, str] = {}

    @classmethod
    def from_pretrained(cls, model_name_or_path: str | os.PathLike, name: str | None = None, **kwargs) -> "SparseCLIPEncoder":
        model, processor = load_model_and_processor(model_name_or_path)
        return cls(model, processor, name=name or os.path.basename(os.path.normpath(str(model_name_or_path))), **kwargs)

    # -- identity ---------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        """Number of features (the projection width)."""
        return int(self.model.config.projection_dim)

    def fingerprint(self, part: str = "model") -> str:
        """Hash of what the outputs depend on: `model` (all weights, head settings, processor), or
        `image` / `text` (that tower, its pooling and its preprocessing: what the tower cache is keyed by)."""
        if part not in self._fingerprints:
            cfg = self.model.config
            if part == "model":
                head = (cfg.activation, cfg.topk_k, cfg.text_pooling, cfg.vision_pooling)
                value = fingerprint(self.model, head, self.processor)
            elif part == "image":
                value = fingerprint(self.model.vision_model, cfg.vision_pooling, self.processor.image_processor, self.channels_last)
            elif part == "text":
                value = fingerprint(self.model.text_model, cfg.text_pooling, self.processor.tokenizer, self.max_length)
            else:
                raise ValueError(f"unknown fingerprint part {part!r}: model, image or text")
            self._fingerprints[part] = value
        return self._fingerprints[part]

    # -- preprocessing ----------------------------------------------------------------------------
    def image_inputs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.processor.image_processor(images=[as_rgb(im) for im in images], return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device)
        return pixels.contiguous(memory_format=torch.channels_last) if self.channels_last and pixels.dim() == 4 else pixels

    def text_inputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tokens = self.processor.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in tokens.items() if k in TEXT_INPUTS}

    # -- towers (pooled outputs: what the projections read) ----------------------------------------
    # inference_mode (no autograd bookkeeping at all) is a few % faster than no_grad; the clone outside
    # it makes a normal tensor, so a head can train on the result (inference tensors refuse backward).
    def _pool_image_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.image_inputs(images)
        with torch.inference_mode():
            pooled = self.model.pool_image_tower(pixels).float().cpu()
        return pooled.clone()

    def _pool_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.text_inputs(texts)
        with torch.inference_mode():
            pooled = self.model.pool_text_tower(**tokens).float().cpu()
        return pooled.clone()

    def _pooled(self, modality: str, items: Sequence, cache_key: str | None, desc: str, batch_size: int | None) -> torch.Tensor:
        run = self._pool_image_batch if modality == "image" else self._pool_text_batch
        size = batch_size or self.batch_size
        convert = self.channels_last and modality == "image"

        def compute() -> dict[str, torch.Tensor]:
            starts = _batches(len(items), size)
            if convert:
                self.model.vision_model.to(memory_format=torch.channels_last)
            try:
                parts = [run(items[s : s + size]) for s in tqdm(
                    starts, desc=f"{self.name}: {desc} {modality}s", unit="batch", leave=False, disable=not self.progress or len(starts) < 2
                )]
            finally:
                if convert:
                    self.model.vision_model.to(memory_format=torch.contiguous_format)
            width = self.model.vision_embed_dim if modality == "image" else self.model.text_embed_dim
            return {"pooled": torch.cat(parts) if parts else torch.zeros(0, width)}

        if cache_key is None:
            return compute()["pooled"]
        key = fingerprint(self.fingerprint(modality), cache_key, len(items), size)
        return self.cache.get_or_compute(f"pooled_{modality}", key, compute, {"items": str(len(items))})["pooled"]

    def pool_images(self, images: Sequence[Image.Image], cache_key: str | None = None, desc: str = "", batch_size: int | None = None) -> torch.Tensor:
        """Pooled vision-tower outputs (float32, len(images) x tower width). `cache_key` (say, a dataset
        fingerprint) names the inputs: with it the result is cached; `batch_size` overrides the encoder's."""
        return self._pooled("image", images, cache_key, desc, batch_size)

    def pool_texts(self, texts: Sequence[str], cache_key: str | None = None, desc: str = "", batch_size: int | None = None) -> torch.Tensor:
        """Pooled text-tower outputs (float32, len(texts) x tower width); arguments as `pool_images`."""
        return self._pooled("text", list(texts), cache_key, desc, batch_size)

    # -- heads --------------------------------------------------------------------------------------
    @torch.no_grad()
    def _project(self, head: Callable[[torch.Tensor], torch.Tensor], pooled: torch.Tensor) -> SparseEmbeddings:
        # batch by batch, the same rows as the towers ran, so cached and live results are identical
        dtype = next(self.model.parameters()).dtype
        parts = [
            SparseEmbeddings.from_dense(head(pooled[s : s + self.batch_size].to(self.device, dtype)).float())
            for s in _batches(len(pooled), self.batch_size)
        ]
        return SparseEmbeddings.concat(parts) if parts else SparseEmbeddings.from_dense(torch.zeros(0, self.width))

    def project_images(self, pooled: torch.Tensor) -> SparseEmbeddings:
        """Wide projection + activation of pooled image-tower outputs."""
        return self._project(self.model.project_image, pooled)

    def project_texts(self, pooled: torch.Tensor) -> SparseEmbeddings:
        """Wide projection + activation of pooled text-tower outputs."""
        return self._project(self.model.project_text, pooled)

    # -- both ---------------------------------------------------------------------------------------
    def encode_images(self, images: Sequence[Image.Image], cache_key: str | None = None, desc: str = "") -> SparseEmbeddings:
        """Post-activation, un-normalised image features (`get_image_features(...).pooler_output`)."""
        return self.project_images(self.pool_images(images, cache_key, desc))

    def encode_texts(self, texts: Sequence[str], cache_key: str | None = None, desc: str = "") -> SparseEmbeddings:
        """Post-activation, un-normalised text features (`get_text_features(...).pooler_output`)."""
        return self.project_texts(self.pool_texts(texts, cache_key, desc))

    def encode_image(self, image: Image.Image) -> np.ndarray:
        """One image's features as a dense float32 vector."""
        return self.encode_images([image]).to_dense()[0].numpy()

    def encode_text(self, text: str) -> np.ndarray:
        """One text's features as a dense float32 vector."""
        return self.encode_texts([text]).to_dense()[0].numpy()


__all__ = ["SparseCLIPEncoder", "as_rgb", "load_model_and_processor"]
