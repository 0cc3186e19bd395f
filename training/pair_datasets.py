"""Image-caption pairs for the Trainer: raw (processor in the collator) or cached tower features."""

import torch
from torch.utils.data import Dataset


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
    """Pairs of pooled tower outputs from `training.tower_cache` (frozen towers)."""

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
        images = [row["image"].convert("RGB") for row in rows]
        texts = [row["text"] if isinstance(row["text"], str) else row["text"][0] for row in rows]
        return dict(
            self.processor(images=images, text=texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        )
