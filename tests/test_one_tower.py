"""One-tower models: SparseCLIPVisionModelWithProjection / SparseCLIPTextModelWithProjection load only their
tower from a full SparseCLIP folder and give the full model's activations."""

import os

import pytest
import torch
from transformers import AutoModelForTextEncoding

from modeling_sparse_clip import SparseCLIPModel, SparseCLIPTextModelWithProjection, SparseCLIPVisionModelWithProjection


@pytest.fixture
def saved_full_model(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = SparseCLIPModel(tiny_config).eval()
    model.save_pretrained(tmp_path / "full")
    return model, tmp_path / "full"


def test_vision_model_loads_its_tower_only_and_matches_the_full_model(saved_full_model, tiny_batch):
    full, folder = saved_full_model
    vision, info = SparseCLIPVisionModelWithProjection.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # the text weights in the file are skipped, not reported
    vision = SparseCLIPVisionModelWithProjection.from_pretrained(folder).eval()  # strict by default: no error
    assert not hasattr(vision, "text_model") and not hasattr(vision, "logit_scale")
    assert all(k.startswith(("vision_model.", "visual_projection.")) for k in vision.state_dict())
    with torch.no_grad():
        expected = full(**tiny_batch)
        got = vision(pixel_values=tiny_batch["pixel_values"])
        as_tuple = vision(pixel_values=tiny_batch["pixel_values"], return_dict=False)
    torch.testing.assert_close(got.image_activations, expected.image_activations, rtol=0, atol=0)
    torch.testing.assert_close(got.image_embeds, expected.image_embeds, rtol=0, atol=0)
    assert got.image_l0 == expected.image_l0
    torch.testing.assert_close(as_tuple[0], got.image_embeds)


def test_text_model_loads_its_tower_only_and_matches_the_full_model(saved_full_model, tiny_batch):
    full, folder = saved_full_model
    text = SparseCLIPTextModelWithProjection.from_pretrained(folder).eval()
    assert not hasattr(text, "vision_model")
    auto = AutoModelForTextEncoding.from_pretrained(folder).eval()  # the Auto class of a text encoder
    assert type(auto) is SparseCLIPTextModelWithProjection
    inputs = {k: tiny_batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        expected = full(**tiny_batch)
        for model in (text, auto):
            got = model(**inputs)
            torch.testing.assert_close(got.text_activations, expected.text_activations, rtol=0, atol=0)
            torch.testing.assert_close(got.text_embeds, expected.text_embeds, rtol=0, atol=0)


def test_one_tower_loading_stays_strict_for_its_own_weights(saved_full_model):
    from safetensors.torch import load_file, save_file

    _, folder = saved_full_model
    state = load_file(folder / "model.safetensors")
    state.pop("visual_projection.weight")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="visual_projection.weight"):
        SparseCLIPVisionModelWithProjection.from_pretrained(folder)
    SparseCLIPTextModelWithProjection.from_pretrained(folder)  # its own weights are all there


def test_saved_one_tower_folder_round_trips_with_its_code(saved_full_model, tiny_batch, tmp_path):
    _, folder = saved_full_model
    vision = SparseCLIPVisionModelWithProjection.from_pretrained(folder).eval()
    vision.save_pretrained(tmp_path / "vision")
    assert {"modeling_sparse_clip.py", "configuration_sparse_clip.py"} <= set(os.listdir(tmp_path / "vision"))
    again = SparseCLIPVisionModelWithProjection.from_pretrained(tmp_path / "vision").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values=tiny_batch["pixel_values"]).image_activations,
                                   vision(pixel_values=tiny_batch["pixel_values"]).image_activations, rtol=0, atol=0)
