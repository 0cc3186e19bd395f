"""Full-size OpenCLIP architectures (random weights: no pretrained checkpoint can be downloaded here)
converted to SparseCLIP and compared with OpenCLIP itself on real images and captions. Slow: each
builds, saves, converts and runs a ~150M-parameter model on 2 CPU cores."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from modeling_sparse_clip.conversion.assemble import ConversionOptions, save_converted
from modeling_sparse_clip.conversion.open_clip import (
    _crop_offsets_disagree,
    convert_open_clip,
    open_clip_reference,
    read_open_clip_source,
    verify_open_clip,
)
from modeling_sparse_clip.conversion.verify import rotation_head_drift
from tests.conversion_helpers import open_clip_features, open_clip_inputs, randomise

open_clip = pytest.importorskip("open_clip")
pytestmark = pytest.mark.slow


def _save(model, path: str, fmt: str) -> str:
    state_dict = model.state_dict()
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    elif fmt == "training_checkpoint":  # what OpenCLIP's trainer writes under DDP
        torch.save({"epoch": 1, "name": "run", "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, path)
    else:
        torch.save(state_dict, path)
    return path


@pytest.mark.parametrize(
    "name, fmt",
    [("ViT-B-32", "training_checkpoint"), ("ViT-B-16", "safetensors"), ("ViT-B-32-quickgelu", "bin")],
)
def test_open_clip_architecture_dense_parity(tmp_path, name, fmt):
    from transformers import AutoProcessor

    from modeling_sparse_clip import SparseCLIPModel

    torch.manual_seed(0)
    source_model = randomise(open_clip.create_model(name, pretrained=None), seed=0)
    path = _save(source_model, str(tmp_path / {"safetensors": "ckpt.safetensors", "bin": "ckpt.bin"}.get(fmt, "ckpt.pt")), fmt)
    source = read_open_clip_source(path, model_name=name)
    model, processor = convert_open_clip(source)
    assert model.config.activation == "none"
    assert model.config.vision_config.hidden_act == ("quick_gelu" if "quickgelu" in name else "gelu")
    save_converted(model, processor, str(tmp_path / "out"))
    del model

    # --verify's path: OpenCLIP reloading the checkpoint file vs the saved SparseCLIP folder.
    diffs = verify_open_clip(open_clip_reference(source, name), source, str(tmp_path / "out"), tolerance=1e-4)
    print(name, diffs)

    # Independently: the in-memory source model vs the reloaded conversion, OpenCLIP's own inputs.
    images, captions, pixels, ids = open_clip_inputs({"size": 224})
    converted = SparseCLIPModel.from_pretrained(tmp_path / "out").eval()
    image_ref, text_ref = open_clip_features(source_model, pixels, ids)
    with torch.no_grad():
        logits_ref, _ = source_model.get_logits(pixels, ids)
        out = converted(input_ids=ids, pixel_values=pixels, attention_mask=(ids != 0).long())
    torch.testing.assert_close(out.image_activations, image_ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.text_activations, text_ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.image_embeds, F.normalize(image_ref, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits_per_image, logits_ref, atol=1e-4, rtol=0)

    # The saved processor as the Hub code loads it: OpenCLIP's pixels and token ids exactly.
    processor = AutoProcessor.from_pretrained(tmp_path / "out", trust_remote_code=True)
    inputs = processor(images=images, text=captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert torch.equal(inputs.input_ids * inputs.attention_mask, ids)
    torch.testing.assert_close(inputs.pixel_values, pixels, atol=1e-6, rtol=0)
    assert any(_crop_offsets_disagree(im.size, source.preprocess_cfg) for im in images)  # the photos need the rounding


@pytest.mark.parametrize("width", [16384])  # 1,024 measured once for the README (160 s more here)
def test_signed_rotation_head_vit_b_32_drift(tmp_path, width):
    """A ReLU head [QP; -QP] from a dense ViT-B-32: exact linear re-encoding, measured drift (NOT the dense model)."""
    torch.manual_seed(1)
    source_model = randomise(open_clip.create_model("ViT-B-32", pretrained=None), seed=1)
    path = _save(source_model, str(tmp_path / "ckpt.safetensors"), "safetensors")
    source = read_open_clip_source(path, model_name="ViT-B-32")
    model, _ = convert_open_clip(source, ConversionOptions(signed_rotation_head=width, logit_scale_max=math.log(50)))
    assert model.config.activation == "relu" and model.config.projection_dim == width

    _, _, pixels, ids = open_clip_inputs({"size": 224})
    z_img, z_txt = open_clip_features(source_model, pixels, ids)
    with torch.no_grad():
        dense_logits, _ = source_model.get_logits(pixels, ids)
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=(ids != 0).long())
    # Exact: the signed halves recover the dense inner products.
    half = width // 2
    d_img = out.image_activations[:, :half] - out.image_activations[:, half:]
    d_txt = out.text_activations[:, :half] - out.text_activations[:, half:]
    torch.testing.assert_close(d_img @ d_txt.T, z_img @ z_txt.T, atol=1e-3, rtol=1e-4)
    drift = rotation_head_drift(model, pixels, ids, (ids != 0).long(), z_img, z_txt, dense_logits)
    print(f"ViT-B-32 --signed_rotation_head {width}", drift)
    assert drift["re-encoding error (relative)"] < 1e-4
    assert drift["L0 image (fraction active)"] == pytest.approx(0.5, abs=0.02)
    assert drift["cosine shift mean"] > 0.1  # the model as run is not the dense model
    if width == 16384:
        assert drift["spearman_image_to_text"] > 0.75 and drift["spearman_text_to_image"] > 0.75
