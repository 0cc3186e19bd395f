"""Training examples of the VLM: (cached sparse activations of an image, prompt, caption as the answer)."""

from __future__ import annotations

import random
from typing import Sequence

import torch

from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings

from .caption_tokenizer import IGNORE_INDEX, encode_example

CAPTION_CHOICES = ("first", "random")


class SparseCaptionDataset(torch.utils.data.Dataset):
    """Row i: the dense activations of image i, and its prompt + caption tokens.

    caption_choice: `first` trains on each image's primary caption (the emoji / icon / class name), so
    greedy answers are names; `random` draws one of its captions per visit (more text, vaguer answers).
    """

    def __init__(self, activations: SparseEmbeddings, captions: Sequence[Sequence[str]], tokenizer, prompt_ids: Sequence[int],
                 max_answer_tokens: int = 24, caption_choice: str = "first", seed: int = 0):
        if len(activations) != len(captions):
            raise ValueError(f"{len(activations)} activation rows but {len(captions)} caption lists: they must describe the same images.")
        if caption_choice not in CAPTION_CHOICES:
            raise ValueError(f"caption_choice={caption_choice!r} is unknown; use one of {CAPTION_CHOICES}.")
        keep = [i for i, caps in enumerate(captions) if caps and caps[0].strip()]
        self.rows = keep
        self.activations = activations
        self.captions = [list(c) for c in captions]
        self.tokenizer, self.prompt_ids = tokenizer, list(prompt_ids)
        self.max_answer_tokens, self.caption_choice = max_answer_tokens, caption_choice
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def dense_row(self, i: int) -> torch.Tensor:
        indices, values = self.activations.row(i)
        row = torch.zeros(self.activations.width, dtype=torch.float32)
        row[indices.long()] = values.float()
        return row

    def __getitem__(self, index: int) -> dict:
        i = self.rows[index]
        captions = self.captions[i]
        caption = captions[0] if self.caption_choice == "first" else self.rng.choice(captions)
        example = encode_example(self.tokenizer, self.prompt_ids, caption, self.max_answer_tokens)
        return {"image_features": self.dense_row(i), **example}


class CaptionCollator:
    """Right-pads input_ids (pad id, attention 0) and labels (-100); stacks the activations."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[row, :n] = torch.tensor(e["input_ids"])
            labels[row, :n] = torch.tensor(e["labels"])
            attention_mask[row, :n] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "image_features": torch.stack([e["image_features"] for e in examples]),
        }
