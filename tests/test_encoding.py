"""The one encoder: equal to the model's own `get_*_features` on real emoji images and the real CLIP
BPE, independent of batching, cached tower outputs identical to live ones and keyed by what they depend on."""

import pytest
import torch
from PIL import Image

from conftest import render_emoji_pairs, tiny_clip_configs
from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
from modeling_sparse_clip.encoding import SparseCLIPEncoder, as_rgb


def _tiny_model(activation="relu", projection_dim=512, seed=0):
    text, vision = tiny_clip_configs(vocab=49408)
    text.max_position_embeddings = 32
    text.bos_token_id, text.eos_token_id, text.pad_token_id = 49406, 49407, 49407
    torch.manual_seed(seed)
    model = SparseCLIPModel(SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                             projection_dim=projection_dim, activation=activation)).eval()
    if activation == "relu":  # bias-free: make half the features negative for every input, so ReLU zeroes them
        with torch.no_grad():
            model.visual_projection.weight[::2] = -model.visual_projection.weight[::2].abs()
            model.text_projection.weight[::2] = -model.text_projection.weight[::2].abs()
    return model


@pytest.fixture(scope="module")
def processor():
    from modeling_sparse_clip.conversion.clip_processing import build_clip_processor

    return build_clip_processor(image_size=32, context_length=32)


@pytest.fixture(scope="module")
def pairs():
    return render_emoji_pairs(7)


def test_encode_images_equals_get_image_features(processor, pairs):
    model = _tiny_model()
    images = [p[0] for p in pairs]
    emb = SparseCLIPEncoder(model, processor, batch_size=3, progress=False).encode_images(images)
    with torch.no_grad():
        direct = model.get_image_features(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"]).pooler_output
    assert emb.shape == (7, 512)
    assert torch.equal(emb.to_dense() != 0, direct != 0)
    torch.testing.assert_close(emb.to_dense(), direct, rtol=1e-5, atol=1e-6)
    assert 0 < emb.density() < 0.6
    again = SparseCLIPEncoder(model, processor, batch_size=7, progress=False).encode_images(images)
    torch.testing.assert_close(again.to_dense(), emb.to_dense(), rtol=1e-5, atol=1e-6)


def test_encode_texts_equals_get_text_features(processor, pairs):
    model = _tiny_model()
    texts = [p[1] for p in pairs]
    encoder = SparseCLIPEncoder(model, processor, batch_size=2, progress=False)
    assert encoder.max_length == 32  # the tokenizer's length, capped by the tower's position limit
    emb = encoder.encode_texts(texts)
    with torch.no_grad():
        tokens = processor(text=texts, padding=True, return_tensors="pt")
        direct = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    torch.testing.assert_close(emb.to_dense(), direct, rtol=1e-5, atol=1e-6)
    assert emb.nnz == int((direct != 0).sum())
    torch.testing.assert_close(torch.from_numpy(encoder.encode_text(texts[3])), direct[3], rtol=1e-5, atol=1e-6)


def test_a_dense_model_gives_fully_dense_embeddings(processor, pairs):
    model = _tiny_model(activation="none", projection_dim=64)
    emb = SparseCLIPEncoder(model, processor, progress=False).encode_images([p[0] for p in pairs[:3]])
    assert emb.density() == 1.0


def test_transparent_images_are_flattened_onto_white(processor):
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    assert as_rgb(rgba).getpixel((5, 5)) == (255, 255, 255)
    model = _tiny_model()
    encoder = SparseCLIPEncoder(model, processor, progress=False)
    white = Image.new("RGB", (32, 32), "white")
    assert torch.equal(encoder.encode_images([rgba]).to_dense(), encoder.encode_images([white]).to_dense())


def test_cached_tower_outputs_equal_live_ones_and_follow_the_weights(processor, pairs, tmp_path):
    images = [p[0] for p in pairs]
    texts = [p[1] for p in pairs]
    model = _tiny_model()
    live = SparseCLIPEncoder(model, processor, batch_size=4, progress=False)
    cached = SparseCLIPEncoder(model, processor, batch_size=4, progress=False, cache_dir=tmp_path)
    first = cached.encode_images(images, cache_key="emoji-7")
    files = sorted(tmp_path.glob("pooled_image_*.safetensors"))
    assert len(files) == 1
    assert cached.encode_images(images, cache_key="emoji-7").equal(first)  # loaded, same bits
    assert first.equal(live.encode_images(images))
    assert cached.encode_texts(texts, cache_key="emoji-7").equal(live.encode_texts(texts))

    # A new head on the same towers re-uses the tower cache (no new file) ...
    other_head = _tiny_model(seed=1)
    other_head.vision_model.load_state_dict(model.vision_model.state_dict())
    SparseCLIPEncoder(other_head, processor, batch_size=4, progress=False, cache_dir=tmp_path).encode_images(images, cache_key="emoji-7")
    assert sorted(tmp_path.glob("pooled_image_*.safetensors")) == files
    # ... other tower weights or other preprocessing do not.
    with torch.no_grad():
        next(other_head.vision_model.parameters()).add_(0.5)
    SparseCLIPEncoder(other_head, processor, batch_size=4, progress=False, cache_dir=tmp_path).encode_images(images, cache_key="emoji-7")
    assert len(list(tmp_path.glob("pooled_image_*.safetensors"))) == 2
    assert SparseCLIPEncoder(model, processor, progress=False).fingerprint("image") != SparseCLIPEncoder(
        model, processor, progress=False, channels_last=True).fingerprint("image")
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave nothing behind


def test_the_text_fingerprint_does_not_change_when_the_tokenizer_is_used(processor):
    from modeling_sparse_clip.conversion.clip_processing import build_clip_processor

    fresh = build_clip_processor(image_size=32, context_length=32)
    model = _tiny_model()
    before = SparseCLIPEncoder(model, fresh, progress=False).fingerprint("text")
    SparseCLIPEncoder(model, fresh, progress=False).encode_texts(["a cat", "a much longer caption about a dog"])
    assert SparseCLIPEncoder(model, fresh, progress=False).fingerprint("text") == before
