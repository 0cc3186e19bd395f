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


def render_emoji_pairs(n: int = 48):
    """(image, caption) pairs: real Noto Color Emoji glyphs with their CLDR names (`emoji` package)."""
    import emoji
    from PIL import Image, ImageDraw, ImageFont

    from modeling_sparse_clip.constants import EMOJI_FONT, EMOJI_FONT_SIZE

    if not EMOJI_FONT.exists():
        pytest.skip("Noto Color Emoji not installed: apt-get install fonts-noto-color-emoji (or `make sources`)")
    font = ImageFont.truetype(str(EMOJI_FONT), EMOJI_FONT_SIZE)
    singles = [ch for ch, data in emoji.EMOJI_DATA.items() if len(ch) == 1 and data.get("status") == emoji.STATUS["fully_qualified"]]
    pairs = []
    for ch in singles[:n]:
        image = Image.new("RGB", (136, 128), "white")
        ImageDraw.Draw(image).text((0, 0), ch, font=font, embedded_color=True)
        pairs.append((image, emoji.EMOJI_DATA[ch]["en"].strip(":").replace("_", " ")))
    return pairs


@pytest.fixture(scope="session")
def emoji_dataset_dir(tmp_path_factory):
    """A small real image-text dataset saved with `save_to_disk` (columns image, text)."""
    import datasets

    pairs = render_emoji_pairs(48)
    folder = tmp_path_factory.mktemp("emoji_ds")
    ds = datasets.Dataset.from_dict(
        {"image": [p[0] for p in pairs], "text": [[p[1], f"an emoji of {p[1]}"] for p in pairs]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Sequence(datasets.Value("string"))}),
    )
    ds.save_to_disk(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_towers_dir(tmp_path_factory):
    """Tiny random CLIP towers saved as folders + a real CLIP processor (BPE tokenizer), for fast training tests."""
    import torch
    from transformers import CLIPTextModel, CLIPVisionModel

    from modeling_sparse_clip.conversion.clip_processing import build_clip_processor

    folder = tmp_path_factory.mktemp("towers")
    text, vision = tiny_clip_configs(vocab=49408)
    text.max_position_embeddings = 32
    text.bos_token_id, text.eos_token_id, text.pad_token_id = 49406, 49407, 49407
    torch.manual_seed(0)
    CLIPTextModel(text).save_pretrained(folder / "text")
    CLIPVisionModel(vision).save_pretrained(folder / "vision")
    build_clip_processor(image_size=32, context_length=32).save_pretrained(folder / "processor")
    return folder


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED_MODEL = os.path.join(REPO_ROOT, "outputs", "embedded", "sparse")
CI_EMBEDDED_MODEL = os.path.join(REPO_ROOT, ".cache", "test_models", "embedded_sparse")


def trained_embedded_model() -> str:
    """A trained embedded Sparse CLIP for the semantic tests: the main job's model when `make main` has
    run, otherwise the same recipe (same seed, so the same model) trained here once (a few minutes on
    2 cores; later runs reuse it)."""
    if os.path.exists(os.path.join(EMBEDDED_MODEL, "model.safetensors")):
        return EMBEDDED_MODEL
    if not os.path.exists(os.path.join(CI_EMBEDDED_MODEL, "model.safetensors")):
        from modeling_sparse_clip.training import parse_args, train

        train(*parse_args(["embedded_sparse", "--output_dir", CI_EMBEDDED_MODEL, "--evolution_fractions", "", "--report_to", "none",
                           "--data_cache_dir", os.path.join(REPO_ROOT, ".cache", "data")]))
    return CI_EMBEDDED_MODEL


@pytest.fixture(scope="session")
def embedded_model_dir():
    return trained_embedded_model()


@pytest.fixture(scope="module")
def one_torch_thread():
    """These tests run many tiny ops; on a shared 2-core machine, 2 intra-op threads make them ~40x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
