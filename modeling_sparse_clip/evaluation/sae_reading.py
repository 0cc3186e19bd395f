"""A dense model read through a post-hoc SAE (the paper's baseline): what the tasks see of it.

The one encoder embeds; the SAE then turns its outputs into codes (the features the interpretability
tasks read: sparsity, Clarity, modality, labels) and reconstructions (the embeddings zero-shot and
retrieval compare: the paper's "zero-shot through reconstructions"). For a Sparse CLIP model both
are simply the encoder's output (`read_images` / `read_texts` below handle either).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from ..encoding import SparseCLIPEncoder
from ..sae import SparseAutoencoder
from ..sparse_embeddings import SparseEmbeddings


class SAEReading:
    """`encoder` (a dense Sparse CLIP model, activation `none`) followed by `sae`."""

    def __init__(self, encoder: SparseCLIPEncoder, sae: SparseAutoencoder, name: str | None = None):
        if sae.config.input_dim != encoder.width:
            raise ValueError(
                f"The SAE reads {sae.config.input_dim}-d embeddings but the model's are {encoder.width}-d: "
                "train the SAE on this model (sparse-clip-train-sae --dense_model ...)."
            )
        self.encoder = encoder
        self.sae = sae.to(encoder.device).eval()
        self.name = name or encoder.name

    @classmethod
    def from_pretrained(cls, sae_dir: str | os.PathLike, dense_model: str | None = None, name: str | None = None, **encoder_kwargs) -> "SAEReading":
        """The SAE in `sae_dir` on the dense model it names (or `dense_model`); `encoder_kwargs` go to the encoder."""
        sae = SparseAutoencoder.from_pretrained(sae_dir)
        dense_model = dense_model or sae.config.dense_model
        if not dense_model:
            raise ValueError(f"{sae_dir} does not name its dense model; pass it explicitly.")
        name = name or os.path.basename(os.path.normpath(str(sae_dir)))
        return cls(SparseCLIPEncoder.from_pretrained(dense_model, name=name, **encoder_kwargs), sae, name)

    @property
    def width(self) -> int:
        return int(self.sae.config.width)

    @torch.no_grad()
    def read(self, embeddings: SparseEmbeddings) -> tuple[SparseEmbeddings, SparseEmbeddings]:
        """(codes, reconstructions) of the encoder's outputs, in the encoder's batches."""
        codes, reconstructions = [], []
        for start in range(0, len(embeddings), self.encoder.batch_size):
            batch = embeddings[start : start + self.encoder.batch_size].to_dense().to(self.encoder.device)
            reconstruction, code = self.sae(batch)
            codes.append(SparseEmbeddings.from_dense(code.float()))
            reconstructions.append(SparseEmbeddings.from_dense(reconstruction.float()))
        if not codes:
            return (SparseEmbeddings.from_dense(torch.zeros(0, self.width)),
                    SparseEmbeddings.from_dense(torch.zeros(0, self.sae.config.input_dim)))
        return SparseEmbeddings.concat(codes), SparseEmbeddings.concat(reconstructions)


def read_images(reader: SparseCLIPEncoder | SAEReading, images: Sequence, cache_key: str | None = None,
                desc: str = "") -> tuple[SparseEmbeddings, SparseEmbeddings]:
    """(activations, embeddings) of images: the model's output twice, or an SAE's codes and reconstructions."""
    if isinstance(reader, SAEReading):
        return reader.read(reader.encoder.encode_images(images, cache_key=cache_key, desc=desc))
    activations = reader.encode_images(images, cache_key=cache_key, desc=desc)
    return activations, activations


def read_texts(reader: SparseCLIPEncoder | SAEReading, texts: Sequence[str], cache_key: str | None = None,
               desc: str = "") -> tuple[SparseEmbeddings, SparseEmbeddings]:
    """(activations, embeddings) of texts, as `read_images`."""
    if isinstance(reader, SAEReading):
        return reader.read(reader.encoder.encode_texts(texts, cache_key=cache_key, desc=desc))
    activations = reader.encode_texts(texts, cache_key=cache_key, desc=desc)
    return activations, activations
