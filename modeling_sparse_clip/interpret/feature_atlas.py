"""A feature atlas over an image set: what each feature looks at.

Per feature: the top-k images (row ids + activations), the activation density (how often it fires,
plain and magnitude-weighted) and the modality score of Papadimitriou et al. (2025),
E_img[a] / (E_img[a] + E_txt[a]) over paired image/caption data (0.5 = multimodal).

Activations are those of the L2-normalised embeddings (what similarity search sees). The atlas keeps
the image (and caption) activations themselves as `SparseEmbeddings`, so the same file serves
retrieval; it is one safetensors file (ids and captions in its metadata) and loads in milliseconds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from modeling_sparse_clip.caching import fingerprint, load_tensors
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings, normalize_rows

from .concept_labels import cached_file, interpret_cache

ATLAS_KIND = "atlas"
_CSR_PARTS = ("indptr", "indices", "values")


class DatasetImages:
    """A lazy `Sequence[PIL.Image]` over a `datasets.Dataset` image column (decodes on access)."""

    def __init__(self, dataset, column: str = "image"):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):  # the encoder reads a batch as a slice: decode it in one call
            return self.dataset[index][self.column]
        return self.dataset[int(index)][self.column]


@dataclass
class FeatureAtlas:
    """image_acts / text_acts: [num_images, num_features] normalised activations (text optional).
    top_images: int32 [F, k] row indices (-1 = fewer images fire), top_acts: float32 [F, k].
    density: fraction of images where the feature fires; weighted_density: mean activation / max
    activation (magnitude-weighted frequency); modality: E_img/(E_img+E_txt), NaN without captions
    or when the feature never fires."""

    image_ids: list[str]
    image_acts: SparseEmbeddings
    top_images: np.ndarray
    top_acts: np.ndarray
    density: np.ndarray
    weighted_density: np.ndarray
    modality: np.ndarray
    text_acts: SparseEmbeddings | None = None
    captions: list[str] | None = None
    fingerprint: str = ""
    source: str = ""
    _index: object = field(default=None, repr=False, compare=False)

    @property
    def num_features(self) -> int:
        return self.image_acts.width

    @property
    def num_images(self) -> int:
        return len(self.image_acts)

    def check_feature(self, feature: int) -> None:
        if not 0 <= int(feature) < self.num_features:
            raise KeyError(f"Feature {feature} does not exist: this model has features 0..{self.num_features - 1}.")

    def top(self, feature: int, n: int = 8) -> list[tuple[int, float]]:
        """(row, activation) of the images that activate `feature` most."""
        self.check_feature(feature)
        rows, acts = self.top_images[feature, :n], self.top_acts[feature, :n]
        return [(int(r), float(a)) for r, a in zip(rows, acts) if r >= 0]

    def image_activations(self, row: int) -> np.ndarray:
        """One image's normalised activations as a dense float32 vector."""
        return self.image_acts[int(row)].to_dense()[0].float().numpy()

    def summary(self, feature: int) -> dict:
        self.check_feature(feature)
        modality = float(self.modality[feature])
        return {
            "feature": int(feature),
            "density": float(self.density[feature]),
            "weighted_density": float(self.weighted_density[feature]),
            "modality": None if np.isnan(modality) else modality,
            "images_firing": int(round(self.density[feature] * self.num_images)),
        }

    def image_index(self):
        """A `SparseIndex` over the image activations (built on first use) for exact retrieval."""
        if self._index is None:
            from modeling_sparse_clip.sparse_index import SparseIndex

            index = SparseIndex(self.num_features)
            index.add(self.image_acts)
            index.nbytes()  # seals the segments now: a first search would seal them, and two concurrent first searches would both do it
            self._index = index
        return self._index

    def modality_kind(self, feature: int) -> str:
        score = self.summary(feature)["modality"]
        if score is None:
            return "unknown (never fires on this set)"
        if score > 0.8:
            return "image-only"
        if score < 0.2:
            return "text-only"
        return "multimodal"

    # -- storage (one safetensors file: the arrays, ids/captions/source in its metadata) -----------
    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {
            "top_images": torch.from_numpy(self.top_images.astype(np.int32)),
            "top_acts": torch.from_numpy(self.top_acts.astype(np.float32)),
            "density": torch.from_numpy(self.density.astype(np.float32)),
            "weighted_density": torch.from_numpy(self.weighted_density.astype(np.float32)),
            "modality": torch.from_numpy(self.modality.astype(np.float32)),
        }
        for prefix, acts in (("image_acts", self.image_acts), ("text_acts", self.text_acts)):
            if acts is not None:
                tensors.update({f"{prefix}.{part}": getattr(acts, part) for part in _CSR_PARTS})
        return tensors

    def metadata(self) -> dict[str, str]:
        return {
            "model_fingerprint": self.fingerprint, "source": self.source, "width": str(self.num_features),
            "image_ids": json.dumps(self.image_ids), "captions": json.dumps(self.captions),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> "FeatureAtlas":
        width = int(metadata["width"])

        def acts(prefix: str) -> SparseEmbeddings | None:
            if f"{prefix}.indptr" not in tensors:
                return None
            return SparseEmbeddings(*(tensors[f"{prefix}.{part}"] for part in _CSR_PARTS), width)

        return cls(
            image_ids=json.loads(metadata["image_ids"]),
            image_acts=acts("image_acts"),
            top_images=tensors["top_images"].numpy(),
            top_acts=tensors["top_acts"].numpy(),
            density=tensors["density"].numpy(),
            weighted_density=tensors["weighted_density"].numpy(),
            modality=tensors["modality"].numpy(),
            text_acts=acts("text_acts"),
            captions=json.loads(metadata["captions"]),
            fingerprint=metadata.get("model_fingerprint", ""),
            source=metadata.get("source", ""),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureAtlas":
        return cls.from_tensors(*load_tensors(path))


def _column_sums(acts: SparseEmbeddings) -> torch.Tensor:
    return torch.zeros(acts.width, dtype=torch.float64).index_add_(0, acts.indices.long(), acts.values.double())


def atlas_statistics(image_acts: SparseEmbeddings, text_acts: SparseEmbeddings | None, top_k: int):
    """Top images, densities and modality scores from normalised activations."""
    num_images, num_features = image_acts.shape
    rows = torch.repeat_interleave(torch.arange(num_images), image_acts.row_nnz()).numpy()
    cols = image_acts.indices.numpy().astype(np.int64)
    values = image_acts.values.float().numpy()
    # entries grouped by feature, strongest first, ties by image row (a stable sort of each column)
    order = np.lexsort((rows, -values, cols))
    rows, cols, values = rows[order], cols[order], values[order]
    fires = np.bincount(cols, minlength=num_features)
    starts = np.concatenate([[0], np.cumsum(fires)[:-1]])
    rank = np.arange(len(cols)) - starts[cols]
    keep = rank < top_k
    top_images = np.full((num_features, top_k), -1, np.int32)
    top_acts = np.zeros((num_features, top_k), np.float32)
    top_images[cols[keep], rank[keep]] = rows[keep]
    top_acts[cols[keep], rank[keep]] = values[keep]
    max_act = top_acts[:, 0] if top_k else np.zeros(num_features, np.float32)
    density = fires.astype(np.float32) / max(num_images, 1)
    mean_image = (_column_sums(image_acts) / max(num_images, 1)).float().numpy()
    weighted_density = np.divide(mean_image, max_act, out=np.zeros_like(mean_image), where=max_act > 0)
    modality = np.full(num_features, np.nan, np.float32)
    if text_acts is not None:
        mean_text = (_column_sums(text_acts) / max(len(text_acts), 1)).float().numpy()
        total = mean_image + mean_text
        np.divide(mean_image, total, out=modality, where=total > 0)
    return top_images, top_acts, density, weighted_density, modality


def images_key(image_ids: Sequence[str], source: str = "") -> str:
    """What names an image set in the caches: its ids and where they come from."""
    return fingerprint(source, [str(i) for i in image_ids])


def build_feature_atlas(
    encoder: SparseCLIPEncoder,
    images: Sequence,
    image_ids: Sequence[str],
    captions: Sequence[str] | None = None,
    top_k: int = 16,
    source: str = "",
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 512,
) -> FeatureAtlas:
    """Encode `images` (and their paired `captions`, for the modality score) and summarise.

    The tower outputs are cached by the encoder under the ids (and `source`), `chunk` images at a
    time: checkpoints that share a frozen image tower only re-project. `progress(done, total)` is
    called after each chunk of images."""
    image_ids = [str(i) for i in image_ids]
    if len(images) != len(image_ids):
        raise ValueError(f"{len(images)} images but {len(image_ids)} ids: give one id per image.")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images: the modality score needs pairs.")
    parts = []
    for start in range(0, len(images), chunk):
        stop = min(start + chunk, len(images))
        parts.append(encoder.encode_images(images[start:stop], cache_key=images_key(image_ids[start:stop], source), desc="atlas"))
        if progress is not None:
            progress(stop, len(images))
    image_acts = normalize_rows(SparseEmbeddings.concat(parts) if parts else encoder.encode_images([]))
    text_acts = None
    if captions is not None:
        captions = [str(c) for c in captions]
        text_acts = normalize_rows(encoder.encode_texts(captions, cache_key=fingerprint(captions), desc="atlas captions"))
    stats = atlas_statistics(image_acts, text_acts, top_k)
    return FeatureAtlas(image_ids, image_acts, *stats, text_acts=text_acts, captions=captions, fingerprint=encoder.fingerprint(), source=source)


def load_or_build_feature_atlas(
    encoder: SparseCLIPEncoder,
    images: Sequence,
    image_ids: Sequence[str],
    captions: Sequence[str] | None = None,
    model_dir=None,
    cache_dir=None,
    top_k: int = 16,
    source: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> FeatureAtlas:
    """The atlas from the caches (`cached_file`: the model's `space_cache/`, then `interpret_dir(model_dir,
    cache_dir)`) when the model, the images (ids, source), the captions and `top_k` match; else built and cached."""
    key = atlas_key(encoder, image_ids, captions, top_k, source)
    path = cached_file(ATLAS_KIND, key, model_dir, cache_dir)
    if path is not None:
        return FeatureAtlas.load(path)
    atlas = build_feature_atlas(encoder, images, image_ids, captions, top_k=top_k, source=source, progress=progress)
    interpret_cache(model_dir, cache_dir).save(ATLAS_KIND, key, atlas.tensors(), atlas.metadata())
    return atlas


def atlas_key(encoder: SparseCLIPEncoder, image_ids: Sequence[str], captions: Sequence[str] | None = None, top_k: int = 16, source: str = "") -> str:
    """What names an atlas in the caches: the model, the images (ids, source), the captions and `top_k`."""
    return fingerprint(encoder.fingerprint(), images_key(image_ids, source), None if captions is None else [str(c) for c in captions], top_k)
