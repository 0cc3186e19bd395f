"""Training pairs for the Trainer: the image-caption rows, raw (processor in the collator) or as cached
pooled tower outputs (frozen towers run once, see `tower_cache`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..images import to_rgb


def pick_caption(n_captions: int, index: int, epoch: int) -> int:
    """Which of a row's captions to use this epoch: varies across epochs, reproducible across resumes."""
    return (index * 1_000_003 + epoch * 7_919) % n_captions


def _as_list(text) -> list[str]:
    return [text] if isinstance(text, str) else list(text)


class PairDataset(Dataset):
    """Rows of a `datasets.Dataset` with `image` and `text` (str or list[str]) -> one (image, caption) pair."""

    def __init__(self, dataset, image_column: str = "image", text_column: str = "text"):
        self.dataset, self.image_column, self.text_column = dataset, image_column, text_column
        self.epoch = 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        row = self.dataset[index]
        captions = _as_list(row[self.text_column])
        return {"image": row[self.image_column], "text": captions[pick_caption(len(captions), index, self.epoch)]}


class CachedPairDataset(Dataset):
    """Pairs of pooled tower outputs from `tower_cache.cached_tower_features` (frozen towers)."""

    def __init__(self, features: dict[str, torch.Tensor]):
        self.image, self.text, self.offsets = features["image"], features["text"], features["text_offsets"]
        self.epoch = 0

    def __len__(self):
        return self.image.shape[0]

    def __getitem__(self, index):
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return {
            "image_tower_embeds": self.image[index],
            "text_tower_embeds": self.text[start + pick_caption(end - start, index, self.epoch)],
        }


class ImageTextCollator:
    """Runs the processor on a batch of {"image": PIL, "text": str | list[str]} rows."""

    def __init__(self, processor, max_length: int | None = None):
        self.processor, self.max_length = processor, max_length

    def __call__(self, rows):
        images = [to_rgb(row["image"]) for row in rows]  # the one image path (modeling_sparse_clip.images)
        texts = [row["text"] if isinstance(row["text"], str) else row["text"][0] for row in rows]
        return dict(
            self.processor(images=images, text=texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        )


def load_pairs(data_args):
    """The training image-text rows (`DataArguments`) as a `datasets.Dataset` (IterableDataset when streaming)."""
    if data_args.dataset == "embedded":
        from modeling_sparse_clip.data import build_corpus

        dataset = build_corpus(cache_dir=data_args.data_cache_dir, max_per_source=data_args.max_per_source)["train"]
    else:
        from modeling_sparse_clip.data import load_image_text_dataset

        dataset = load_image_text_dataset(
            data_args.dataset, image_column=data_args.image_column, text_column=data_args.text_column, streaming=data_args.streaming
        )
    if data_args.max_train_samples and hasattr(dataset, "select"):
        dataset = dataset.shuffle(seed=0).select(range(min(data_args.max_train_samples, len(dataset))))
    return dataset


def build_train_dataset(model, processor, model_args, data_args, training_args):
    """(train dataset, collator or None): cached tower outputs with `--cache_tower_features`, else raw pairs."""
    pairs = load_pairs(data_args)
    if model_args.cache_tower_features:
        if any(p.requires_grad for t in (model.vision_model, model.text_model) for p in t.parameters()):
            raise ValueError("--cache_tower_features needs frozen towers: add --vision_trainable none --text_trainable none.")
        from .tower_cache import cached_tower_features

        with training_args.main_process_first(desc="tower feature cache"):
            features = cached_tower_features(model, processor, pairs, Path(data_args.data_cache_dir) / "tower_features")
        return CachedPairDataset(features), None
    if not hasattr(pairs, "__len__"):  # streaming: the collator picks the first caption
        return pairs, ImageTextCollator(processor, model_args.max_text_length)
    # both the embedded corpus and load_image_text_dataset name the columns image / text
    return PairDataset(pairs), ImageTextCollator(processor, model_args.max_text_length)


__all__ = ["CachedPairDataset", "ImageTextCollator", "PairDataset", "build_train_dataset", "load_pairs", "pick_caption"]
