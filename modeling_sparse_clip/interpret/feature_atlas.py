"""A feature atlas over an image set: what each feature looks at.

Per feature: the top-k images (row ids + activations), the activation density (how often it fires,
plain and magnitude-weighted) and the modality score of Papadimitriou et al. (2025),
E_img[a] / (E_img[a] + E_txt[a]) over paired image/caption data (0.5 = multimodal).

Activations are those of the L2-normalised embeddings (what similarity search sees). The atlas keeps
the image (and caption) activations themselves as CSR matrices, so the same file serves retrieval;
it is written once as one safetensors file plus a small JSON of ids, and loads in milliseconds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import save_file

from .concept_labels import interpret_dir
from .encoding import FeatureEncoder, hash_strings, l2_normalize_rows, load_safetensors_with_metadata


class DatasetImages:
    """A lazy `Sequence[PIL.Image]` over a `datasets.Dataset` image column (decodes on access)."""

    def __init__(self, dataset, column: str = "image"):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[int(index)][self.column]


def _csr_arrays(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    matrix = sp.csr_matrix(matrix)
    matrix.sort_indices()
    return {
        f"{prefix}.data": matrix.data.astype(np.float16),
        f"{prefix}.indices": matrix.indices.astype(np.int32),
        f"{prefix}.indptr": matrix.indptr.astype(np.int64),
        f"{prefix}.shape": np.asarray(matrix.shape, np.int64),
    }


def _csr_from(arrays: dict[str, np.ndarray], prefix: str) -> sp.csr_matrix | None:
    if f"{prefix}.data" not in arrays:
        return None
    shape = tuple(int(s) for s in arrays[f"{prefix}.shape"])
    return sp.csr_matrix(
        (arrays[f"{prefix}.data"].astype(np.float32), arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"]), shape=shape
    )


@dataclass
class FeatureAtlas:
    """image_acts / text_acts: CSR [num_images, num_features] normalised activations (text optional).
    top_images: int32 [F, k] row indices (-1 = fewer images fire), top_acts: float32 [F, k].
    density: fraction of images where the feature fires; weighted_density: mean activation / max
    activation (magnitude-weighted frequency); modality: E_img/(E_img+E_txt), NaN without captions
    or when the feature never fires."""

    image_ids: list[str]
    image_acts: sp.csr_matrix
    top_images: np.ndarray
    top_acts: np.ndarray
    density: np.ndarray
    weighted_density: np.ndarray
    modality: np.ndarray
    text_acts: sp.csr_matrix | None = None
    captions: list[str] | None = None
    fingerprint: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return int(self.image_acts.shape[1])

    @property
    def num_images(self) -> int:
        return int(self.image_acts.shape[0])

    def check_feature(self, feature: int) -> None:
        if not 0 <= int(feature) < self.num_features:
            raise KeyError(f"Feature {feature} does not exist: this model has features 0..{self.num_features - 1}.")

    def top(self, feature: int, n: int = 8) -> list[tuple[int, float]]:
        """(row, activation) of the images that activate `feature` most."""
        self.check_feature(feature)
        rows, acts = self.top_images[feature, :n], self.top_acts[feature, :n]
        return [(int(r), float(a)) for r, a in zip(rows, acts) if r >= 0]

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
        if self.extra.get("_index") is None:
            import torch

            from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings
            from modeling_sparse_clip.sparse_index import SparseIndex

            index = SparseIndex(self.num_features)
            index.add(SparseEmbeddings.from_scipy(self.image_acts, dtype=torch.float32))
            self.extra["_index"] = index
        return self.extra["_index"]

    def modality_kind(self, feature: int) -> str:
        score = self.summary(feature)["modality"]
        if score is None:
            return "unknown (never fires on this set)"
        if score > 0.8:
            return "image-only"
        if score < 0.2:
            return "text-only"
        return "multimodal"

    # -- storage --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            **_csr_arrays("image_acts", self.image_acts),
            "top_images": self.top_images.astype(np.int32),
            "top_acts": self.top_acts.astype(np.float32),
            "density": self.density.astype(np.float32),
            "weighted_density": self.weighted_density.astype(np.float32),
            "modality": self.modality.astype(np.float32),
        }
        if self.text_acts is not None:
            arrays.update(_csr_arrays("text_acts", self.text_acts))
        tmp = path.with_suffix(".tmp")
        save_file(arrays, str(tmp), metadata={"fingerprint": self.fingerprint, "ids_hash": hash_strings(self.image_ids)})
        os.replace(tmp, path)
        extra = {k: v for k, v in self.extra.items() if not k.startswith("_")}
        sidecar = {"image_ids": self.image_ids, "captions": self.captions, "source": self.source, "extra": extra}
        path.with_suffix(".json").write_text(json.dumps(sidecar))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureAtlas":
        path = Path(path)
        arrays, metadata = load_safetensors_with_metadata(path)
        sidecar = json.loads(path.with_suffix(".json").read_text())
        return cls(
            image_ids=sidecar["image_ids"],
            image_acts=_csr_from(arrays, "image_acts"),
            top_images=arrays["top_images"],
            top_acts=arrays["top_acts"],
            density=arrays["density"],
            weighted_density=arrays["weighted_density"],
            modality=arrays["modality"],
            text_acts=_csr_from(arrays, "text_acts"),
            captions=sidecar.get("captions"),
            fingerprint=metadata.get("fingerprint", ""),
            source=sidecar.get("source", ""),
            extra=sidecar.get("extra") or {},
        )

    @staticmethod
    def cache_matches(path: Path, fingerprint: str, image_ids: Sequence[str]) -> bool:
        from safetensors import safe_open

        if not path.exists() or not path.with_suffix(".json").exists():
            return False
        with safe_open(str(path), "np") as f:
            metadata = f.metadata() or {}
        return metadata.get("fingerprint") == fingerprint and metadata.get("ids_hash") == hash_strings(list(image_ids))


def atlas_statistics(image_acts: sp.csr_matrix, text_acts: sp.csr_matrix | None, top_k: int):
    """Top images, densities and modality scores from normalised activation matrices."""
    num_images, num_features = image_acts.shape
    columns = sp.csc_matrix(image_acts)
    top_images = np.full((num_features, top_k), -1, np.int32)
    top_acts = np.zeros((num_features, top_k), np.float32)
    max_act = np.zeros(num_features, np.float32)
    for feature in range(num_features):
        start, end = columns.indptr[feature], columns.indptr[feature + 1]
        if start == end:
            continue
        values, rows = columns.data[start:end], columns.indices[start:end]
        keep = np.argsort(-values, kind="stable")[:top_k]
        top_images[feature, : len(keep)] = rows[keep]
        top_acts[feature, : len(keep)] = values[keep]
        max_act[feature] = values[keep[0]]
    fires = np.diff(columns.indptr).astype(np.float32)
    density = fires / max(num_images, 1)
    mean_image = np.asarray(image_acts.mean(axis=0)).ravel().astype(np.float32)
    weighted_density = np.divide(mean_image, max_act, out=np.zeros_like(mean_image), where=max_act > 0)
    modality = np.full(num_features, np.nan, np.float32)
    if text_acts is not None:
        mean_text = np.asarray(text_acts.mean(axis=0)).ravel().astype(np.float32)
        total = mean_image + mean_text
        np.divide(mean_image, total, out=modality, where=total > 0)
    return top_images, top_acts, density, weighted_density, modality


def build_feature_atlas(
    encoder: FeatureEncoder,
    images: Sequence,
    image_ids: Sequence[str],
    captions: Sequence[str] | None = None,
    top_k: int = 16,
    source: str = "",
    progress: bool = True,
) -> FeatureAtlas:
    """Encode `images` (and their paired `captions`, for the modality score) and summarise."""
    image_ids = [str(i) for i in image_ids]
    if len(images) != len(image_ids):
        raise ValueError(f"{len(images)} images but {len(image_ids)} ids: give one id per image.")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images: the modality score needs pairs.")
    ids_key = hash_strings(image_ids)
    image_acts = l2_normalize_rows(encoder.encode_images(images, progress=progress, cache_key=ids_key))
    text_acts = None
    if captions is not None:
        captions = [str(c) for c in captions]
        text_acts = l2_normalize_rows(encoder.encode_texts(captions, progress=progress, cache_key=hash_strings(captions)))
    stats = atlas_statistics(image_acts, text_acts, top_k)
    return FeatureAtlas(image_ids, image_acts, *stats, text_acts=text_acts, captions=list(captions) if captions else None,
                        fingerprint=encoder.fingerprint(), source=source)


def load_or_build_feature_atlas(
    encoder: FeatureEncoder,
    images: Sequence,
    image_ids: Sequence[str],
    captions: Sequence[str] | None = None,
    name: str = "atlas",
    model_dir=None,
    cache_dir=None,
    top_k: int = 16,
    source: str = "",
    progress: bool = True,
) -> FeatureAtlas:
    """The atlas from `<model_dir>/interpret/<name>_<ids hash>.safetensors` when weights and ids match; else built and saved."""
    path = interpret_dir(encoder, model_dir, cache_dir) / f"{name}_{hash_strings([str(i) for i in image_ids])}.safetensors"
    if FeatureAtlas.cache_matches(path, encoder.fingerprint(), [str(i) for i in image_ids]):
        atlas = FeatureAtlas.load(path)
        if atlas.top_images.shape[1] >= top_k and (captions is None or atlas.text_acts is not None):
            return atlas
    atlas = build_feature_atlas(encoder, images, image_ids, captions, top_k=top_k, source=source, progress=progress)
    try:
        atlas.save(path)
    except OSError:
        pass
    return atlas
