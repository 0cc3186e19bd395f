"""Run frozen towers once over a corpus and keep their pooled outputs, so that heads train fast on CPU.

The cache is a safetensors file named by a fingerprint of the dataset, the processor and the tower
weights: change any of them and it is recomputed; change nothing and nothing is recomputed.
"""

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def _tower_fingerprint(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted({**model.text_model.state_dict(), **{f"v.{k}": v for k, v in model.vision_model.state_dict().items()}}.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).to(torch.float32).numpy().tobytes()[:4096])
        h.update(str(float(tensor.float().sum())).encode())
    h.update(f"{model.config.text_pooling}/{model.config.vision_pooling}".encode())
    return h.hexdigest()[:16]


def _processor_fingerprint(processor) -> str:
    state = {"image": processor.image_processor.to_dict(), "tokenizer": type(processor.tokenizer).__name__,
             "vocab": len(processor.tokenizer), "max_len": processor.tokenizer.model_max_length}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


@torch.inference_mode()
def encode_tower_features(model, processor, dataset, batch_size: int = 64, desc: str = "towers") -> dict[str, torch.Tensor]:
    """Pooled tower outputs for every image and every caption of `dataset` (columns image, text: list[str]).

    Returns image [N, Dv], text [M, Dt] and text_offsets [N + 1] (captions of row i are
    text[text_offsets[i]:text_offsets[i + 1]]).
    """
    model.eval()
    device = next(model.parameters()).device
    # channels_last makes CPU convolutions (depthwise ones especially) about 2x faster
    model.vision_model.to(memory_format=torch.channels_last)
    images, texts, offsets = [], [], [0]
    for start in tqdm(range(0, len(dataset), batch_size), desc=f"caching {desc}", unit="batch"):
        rows = dataset[start : start + batch_size]
        pixels = processor.image_processor(images=[im.convert("RGB") for im in rows["image"]], return_tensors="pt")["pixel_values"]
        pixels = pixels.to(device).contiguous(memory_format=torch.channels_last)
        images.append(model.pool_image_tower(pixels).float().cpu())
        captions = [c for caps in rows["text"] for c in caps]
        for caps in rows["text"]:
            offsets.append(offsets[-1] + len(caps))
        tok = processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt").to(device)
        texts.append(model.pool_text_tower(**tok).float().cpu())
    model.vision_model.to(memory_format=torch.contiguous_format)
    return {"image": torch.cat(images), "text": torch.cat(texts), "text_offsets": torch.tensor(offsets)}


def cached_tower_features(model, processor, dataset, cache_dir: str | Path, batch_size: int = 64, desc: str = "towers"):
    """`encode_tower_features`, computed once per (dataset, processor, towers) and loaded from disk after."""
    key = hashlib.sha256(
        f"{dataset._fingerprint}/{len(dataset)}/{_processor_fingerprint(processor)}/{_tower_fingerprint(model)}".encode()
    ).hexdigest()[:20]
    path = Path(cache_dir) / f"tower_features_{desc}_{key}.safetensors"
    if path.exists():
        logger.info("tower features for %s: cache hit %s", desc, path)
        return load_file(path)
    features = encode_tower_features(model, processor, dataset, batch_size=batch_size, desc=desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(features, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    return features
