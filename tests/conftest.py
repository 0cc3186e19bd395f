"""Shared fixtures: tiny tower configs and a real CLIP BPE tokenizer (no network needed)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_clip_configs(hidden: int = 32, vocab: int = 99):
    from transformers import CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(
        hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=vocab, max_position_embeddings=16, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8,
    )
    return text, vision


@pytest.fixture
def tiny_config():
    from modeling_sparse_clip import SparseCLIPConfig

    text, vision = tiny_clip_configs()
    return SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=256)


@pytest.fixture
def tiny_batch():
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(3, 99, (6, 12), generator=g),
        "attention_mask": torch.ones(6, 12, dtype=torch.long),
        "pixel_values": torch.randn(6, 3, 32, 32, generator=g),
    }
