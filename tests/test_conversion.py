"""Conversion parity against the real source libraries (OpenCLIP, transformers) on small random
models, real images and real captions; tokenizer/processor parity; loud failures on bad checkpoints.
Full-size OpenCLIP architectures are in test_conversion_open_clip.py (slow)."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from modeling_sparse_clip import SparseCLIPModel
from modeling_sparse_clip.cli.convert_clip import main as clip_main
from modeling_sparse_clip.cli.convert_clip import run as clip_cli
from modeling_sparse_clip.cli.convert_open_clip import main as open_clip_main
from modeling_sparse_clip.cli.convert_open_clip import run as open_clip_cli
from modeling_sparse_clip.conversion.assemble import ConversionOptions
from modeling_sparse_clip.conversion.checkpoint_io import CheckpointKeyError
from modeling_sparse_clip.conversion.clip_processing import build_clip_processor, build_clip_tokenizer, build_image_processor
from modeling_sparse_clip.conversion.open_clip import _crop_offsets_disagree, convert_open_clip, read_open_clip_source
from modeling_sparse_clip.conversion.transformers_clip import convert_clip
from modeling_sparse_clip.conversion.verify import ranking_agreement, real_images_and_captions
from tests.conversion_helpers import open_clip_features, open_clip_inputs, randomise, write_open_clip_folder

open_clip = pytest.importorskip("open_clip")

TINY_CFG = {
    "embed_dim": 48,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}
# OpenAI/MetaCLIP-shaped (head width 64, so the architecture can be read off the shapes).
OPENAI_TINY_CFG = {
    "embed_dim": 48,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 3},
}
PREPROCESS_32 = {"size": 32}
CAPTIONS_FOR_TOKENS = [
    "a photo of a cat",
    "An astronaut, riding a horse!",
    "Wow!!! a rocket... launching?!",
    "grinning face with big eyes \N{GRINNING FACE}",
    "Café naïve façade — don't stop, it's 3.14",
    "  multiple   spaces\tand\nnewlines  ",
    "a very long caption " + "with many words " * 40,
]


def _tiny_open_clip(cfg, seed=0, **kw):
    torch.manual_seed(seed)
    return randomise(open_clip.model.CLIP(**cfg, **kw), seed)


def _convert_folder(tmp_path, model, cfg, **options):
    folder = write_open_clip_folder(model, cfg, str(tmp_path / "src"), PREPROCESS_32)
    source = read_open_clip_source(folder)
    converted, processor = convert_open_clip(source, ConversionOptions(**options))
    return source, converted, processor


@torch.no_grad()
def _sparse_outputs(model, pixels, ids):
    mask = torch.ones_like(ids)
    out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    return out.image_activations, out.text_activations, out.logits_per_image


# ---------------------------------------------------------------------------------------------
# Tokenizer and image processor
# ---------------------------------------------------------------------------------------------
def test_tokenizer_ids_match_open_clip_tokenize(tmp_path):
    _, captions = real_images_and_captions()
    texts = captions + CAPTIONS_FOR_TOKENS
    reference = open_clip.tokenize(texts, context_length=77)
    tokenizer = build_clip_tokenizer(77)
    tokenizer.save_pretrained(tmp_path)  # and the saved file, as users load it
    from transformers import AutoTokenizer

    for tok in (tokenizer, AutoTokenizer.from_pretrained(tmp_path)):
        enc = tok(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        # Up to and including the first <|endoftext|>: identical ids; after it: padding (0 in OpenCLIP).
        assert torch.equal(enc.input_ids * enc.attention_mask, reference)
        assert torch.equal(enc.attention_mask.sum(1), (reference != 0).sum(1))
    assert len(tokenizer) == 49408 and tokenizer.eos_token_id == 49407 and tokenizer.bos_token_id == 49406


def test_image_processor_matches_open_clip_preprocess(tmp_path):
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from torchvision.transforms import functional as TF
    from transformers import CLIPProcessor

    images, _ = real_images_and_captions()
    cfg = {"size": 224}
    build_clip_processor(**cfg).save_pretrained(tmp_path)
    processor = CLIPProcessor.from_pretrained(tmp_path, backend="pil")
    ours = processor(images=images, return_tensors="pt").pixel_values
    reference_transform = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    shifted = 0
    for image, pixels in zip(images, ours):
        reference = reference_transform(image)
        if not _crop_offsets_disagree(image.size, cfg):
            assert torch.equal(pixels, reference), image.size
            continue
        # The one known difference: transformers floors the crop offset, torchvision rounds it.
        shifted += 1
        assert (pixels - reference).abs().max() > 0.1
        resized = TF.resize(image, 224, interpolation=TF.InterpolationMode.BICUBIC)
        w, h = resized.size
        floor_crop = TF.crop(resized, (h - 224) // 2, (w - 224) // 2, 224, 224)
        normalised = TF.normalize(TF.to_tensor(floor_crop), reference_transform.transforms[-1].mean, reference_transform.transforms[-1].std)
        assert torch.equal(pixels, normalised)
    assert shifted == 2  # the two 640x427 photographs (margin 111 px); the emoji are exact

    # The default (torchvision) backend resizes tensors: at most one uint8 level from OpenCLIP.
    fast = CLIPProcessor.from_pretrained(tmp_path)(images=images[2:], return_tensors="pt").pixel_values
    one_level = 1 / 255 / min(reference_transform.transforms[-1].std)
    assert (fast - torch.stack([reference_transform(im) for im in images[2:]])).abs().max() <= one_level + 1e-6


def test_image_processor_squash_bilinear_custom_stats():
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = {"size": 64, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear", "resize_mode": "squash"}
    images, _ = real_images_and_captions()
    reference = torch.stack([image_transform_v2(PreprocessCfg(**cfg), is_train=False)(im) for im in images])
    ours = build_image_processor(**cfg)(images=images, return_tensors="pt").pixel_values
    assert torch.equal(ours, reference)
    with pytest.raises(ValueError, match="longest"):
        build_image_processor(size=64, resize_mode="longest")


# ---------------------------------------------------------------------------------------------
# OpenCLIP sources (tiny real OpenCLIP architectures)
# ---------------------------------------------------------------------------------------------
def test_open_clip_folder_dense_parity_and_cli_verify(tmp_path, capsys):
    model = _tiny_open_clip(TINY_CFG)
    folder = write_open_clip_folder(model, TINY_CFG, str(tmp_path / "src"), PREPROCESS_32)
    out = tmp_path / "out"
    open_clip_cli(["--checkpoint", folder, "--output_dir", str(out), "--verify", "--verify_tolerance", "1e-5"])
    printed = capsys.readouterr().out
    assert "SparseCLIP (none) vs OpenCLIP" in printed and "token ids differing (before pad) 0" in printed
    for f in ("config.json", "model.safetensors", "modeling_sparse_clip.py", "configuration_sparse_clip.py", "tokenizer.json", "processor_config.json"):
        assert (out / f).is_file(), f

    # Independently of --verify: the saved model through AutoModel (Hub code) vs OpenCLIP itself.
    from transformers import AutoModel

    converted = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    assert converted.config.activation == "none" and converted.config.projection_dim == 48
    _, _, pixels, ids = open_clip_inputs(PREPROCESS_32)
    image_ref, text_ref = open_clip_features(model, pixels, ids)
    image, text, logits = _sparse_outputs(converted, pixels, ids)
    torch.testing.assert_close(image, image_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, text_ref, atol=1e-5, rtol=0)
    with torch.no_grad():
        logits_ref, _ = model.get_logits(pixels, ids)
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=0)


def test_paper_format_wide_projection_converts_to_relu(tmp_path):
    cfg = {**TINY_CFG, "embed_dim": 1024}  # wider than both towers (64, 32): the paper's format
    model = _tiny_open_clip(cfg, seed=1)
    _, converted, _ = _convert_folder(tmp_path, model, cfg, logit_scale_max=math.log(50))
    assert converted.config.activation == "relu" and converted.config.projection_dim == 1024
    assert converted.config.logit_scale_cap == pytest.approx(50.0)
    _, _, pixels, ids = open_clip_inputs(PREPROCESS_32)
    image_ref, text_ref = (F.relu(x) for x in open_clip_features(model, pixels, ids))
    image, text, logits = _sparse_outputs(converted, pixels, ids)
    assert (image == 0).any() and (text == 0).any()
    torch.testing.assert_close(image, image_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, text_ref, atol=1e-5, rtol=0)
    scale = model.logit_scale.exp().item()
    logits_ref = scale * F.normalize(image_ref, dim=-1) @ F.normalize(text_ref, dim=-1).T
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=0)


def test_logit_bias_is_carried_in_config(tmp_path):
    cfg = {**TINY_CFG, "init_logit_bias": -5.0}
    model = _tiny_open_clip(cfg, seed=2)
    with torch.no_grad():
        model.logit_bias.fill_(-4.25)
    source, converted, _ = _convert_folder(tmp_path, model, cfg)
    assert converted.config.logit_bias == pytest.approx(-4.25)
    _, _, pixels, ids = open_clip_inputs(PREPROCESS_32)
    with torch.no_grad():
        logits_ref, _ = model.get_logits(pixels, ids)
    _, _, logits = _sparse_outputs(converted, pixels, ids)
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=0)  # the model adds config.logit_bias itself


@pytest.mark.parametrize("layout", ["metaclip_training_checkpoint", "openai_state_dict", "custom_text"])
def test_openai_and_metaclip_layouts_inferred_from_shapes(tmp_path, layout):
    torch.manual_seed(3)
    cls = open_clip.model.CustomTextCLIP if layout == "custom_text" else open_clip.model.CLIP
    model = randomise(cls(**OPENAI_TINY_CFG), seed=3)
    state_dict = dict(model.state_dict())
    path = str(tmp_path / "ckpt.pt")
    if layout == "metaclip_training_checkpoint":  # MetaCLIP/OpenCLIP trainers: DDP prefixes + wrapper
        torch.save({"epoch": 32, "name": "b32", "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, path)
    elif layout == "openai_state_dict":  # OpenAI's exported state dict: fp16 weights + metadata entries
        state_dict = {k: v.half() for k, v in state_dict.items()}
        state_dict.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
        torch.save(state_dict, path)
        model = model.half().float()  # the reference sees the same fp16-rounded weights
    else:
        torch.save(state_dict, path)
    source = read_open_clip_source(path)
    assert source.kind == "inferred" and source.quick_gelu  # OpenAI/MetaCLIP were trained with QuickGELU
    assert source.model_cfg["vision_cfg"]["layers"] == 2 and source.model_cfg["text_cfg"]["layers"] == 3
    converted, _ = convert_open_clip(source, ConversionOptions())
    assert converted.config.vision_config.hidden_act == "quick_gelu"
    _, _, pixels, ids = open_clip_inputs(PREPROCESS_32)
    image_ref, text_ref = open_clip_features(model.eval(), pixels, ids)
    image, text, _ = _sparse_outputs(converted, pixels, ids)
    torch.testing.assert_close(image, image_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, text_ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Bad checkpoints fail loudly, naming the keys
# ---------------------------------------------------------------------------------------------
def test_truncated_checkpoint_names_the_missing_keys(tmp_path):
    model = _tiny_open_clip(TINY_CFG)
    state_dict = {k: v for k, v in model.state_dict().items() if not k.startswith("transformer.resblocks.1.")}
    path = str(tmp_path / "truncated.safetensors")
    from safetensors.torch import save_file

    save_file(state_dict, path)
    folder = write_open_clip_folder(model, TINY_CFG, str(tmp_path / "src"))
    os.replace(path, os.path.join(folder, "open_clip_model.safetensors"))
    source = read_open_clip_source(folder)
    with pytest.raises(CheckpointKeyError) as err:
        convert_open_clip(source, ConversionOptions())
    message = str(err.value)
    assert "12 missing key(s)" in message and "transformer.resblocks.1.attn.in_proj_weight" in message
    assert "unexpected" not in message


def test_extra_key_is_named(tmp_path):
    model = _tiny_open_clip(OPENAI_TINY_CFG)
    state_dict = {f"module.{k}": v for k, v in model.state_dict().items()}
    state_dict["module.visual.head.weight"] = torch.zeros(3, 3)
    path = str(tmp_path / "extra.pt")
    torch.save({"state_dict": state_dict}, path)
    source = read_open_clip_source(path)
    with pytest.raises(CheckpointKeyError, match=r"1 unexpected key\(s\)[\s\S]*visual\.head\.weight"):
        convert_open_clip(source, ConversionOptions())


def test_shape_mismatch_with_named_architecture_is_reported(tmp_path):
    model = _tiny_open_clip(TINY_CFG)
    path = str(tmp_path / "tiny.pt")
    torch.save(model.state_dict(), path)
    source = read_open_clip_source(path, model_name="ViT-B-32")
    with pytest.raises(CheckpointKeyError, match="missing key"):  # 12 layers expected, 2 present
        convert_open_clip(source, ConversionOptions())


def test_unsupported_architecture_and_unsafe_pickle_are_refused(tmp_path):
    cfg = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "ls_init_value": 1e-5}}
    model = _tiny_open_clip(cfg)
    with pytest.raises(ValueError, match="ls_init_value"):
        _convert_folder(tmp_path, model, cfg)
    path = str(tmp_path / "code.pt")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "fn": randomise}, path)  # a pickled function, not data
    with pytest.raises(ValueError, match="weights_only=True"):
        read_open_clip_source(path)


# ---------------------------------------------------------------------------------------------
# transformers CLIPModel sources
# ---------------------------------------------------------------------------------------------
def _tiny_transformers_clip(folder, with_processor=True):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(4)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=49408, eos_token_id=49407, bos_token_id=49406, pad_token_id=49407),
        vision_config=dict(hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=24,
    )
    model = randomise(CLIPModel(config), seed=4)
    model.save_pretrained(folder)
    if with_processor:
        build_clip_processor(image_size=32).save_pretrained(folder)
    return model


def test_transformers_clip_dense_parity(tmp_path, capsys):
    source = _tiny_transformers_clip(str(tmp_path / "clip"))
    out = tmp_path / "out"
    clip_cli(["--source", str(tmp_path / "clip"), "--output_dir", str(out), "--verify", "--verify_tolerance", "1e-5"])
    assert "vs transformers CLIPModel" in capsys.readouterr().out
    converted = SparseCLIPModel.from_pretrained(out).eval()
    from transformers import CLIPProcessor

    images, captions = real_images_and_captions()
    inputs = CLIPProcessor.from_pretrained(out)(images=images, text=captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = source(**inputs)
        ours = converted(**inputs)
        image_features = source.get_image_features(pixel_values=inputs.pixel_values).pooler_output
        text_features = source.get_text_features(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask).pooler_output
    torch.testing.assert_close(ours.image_activations, image_features, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.text_activations, text_features, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.image_embeds, ref.image_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.text_embeds, ref.text_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.logits_per_image, ref.logits_per_image, atol=1e-5, rtol=0)


def test_transformers_clip_sparsify_is_lossless_and_keeps_rankings(tmp_path):
    source = _tiny_transformers_clip(str(tmp_path / "clip"), with_processor=False)
    width = 8192
    converted, processor = convert_clip(str(tmp_path / "clip"), ConversionOptions(sparsify=width, logit_scale_max=math.log(50)))
    assert converted.config.activation == "relu" and converted.config.projection_dim == width
    images, captions = real_images_and_captions()
    inputs = processor(images=images, text=captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        dense = source(**inputs)
        wide = converted(**inputs)
        z_img = source.get_image_features(pixel_values=inputs.pixel_values).pooler_output
        z_txt = source.get_text_features(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask).pooler_output
    u_img, u_txt = wide.image_activations, wide.text_activations
    assert (u_img > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)  # starts half dense
    # 1. Lossless: (u+ - u-) is Q z with orthonormal Q, so it has the dense Gram matrix exactly.
    half = width // 2
    d_img, d_txt = u_img[:, :half] - u_img[:, half:], u_txt[:, :half] - u_txt[:, half:]
    torch.testing.assert_close(d_img @ d_txt.T, z_img @ z_txt.T, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(u_img.norm(dim=-1), z_img.norm(dim=-1), atol=1e-4, rtol=1e-4)
    # 2. cos(u, v) = g(cos(z, w)) + O(width^-1/2), g increasing (see modeling_sparse_clip/conversion/sparse_head.py).
    rho = F.normalize(z_img, dim=-1) @ F.normalize(z_txt, dim=-1).T
    g = (rho + (2 / math.pi) * (torch.sqrt(1 - rho**2) + rho * torch.asin(rho))) / 2
    assert (wide.image_embeds @ wide.text_embeds.T - g).abs().max().item() < 3 / math.sqrt(half)
    # 3. The zero-shot rankings measured on real images/captions.
    agreement = ranking_agreement(dense.logits_per_image, wide.logits_per_image)
    print("tiny CLIPModel --sparsify", width, agreement)
    assert agreement["spearman_image_to_text"] > 0.6 and agreement["spearman_text_to_image"] > 0.6
    with pytest.raises(ValueError, match="at least twice"):
        convert_clip(str(tmp_path / "clip"), ConversionOptions(sparsify=30))


def test_cli_sparsify_verify_prints_ranking_agreement(tmp_path, capsys):
    model = _tiny_open_clip(TINY_CFG, seed=5)
    folder = write_open_clip_folder(model, TINY_CFG, str(tmp_path / "src"), PREPROCESS_32)
    open_clip_cli(["--checkpoint", folder, "--output_dir", str(tmp_path / "out"), "--sparsify", "4096", "--verify"])
    printed = capsys.readouterr().out
    assert "activation=relu, projection_dim=4096" in printed and "Zero-shot ranking agreement" in printed
    assert SparseCLIPModel.from_pretrained(tmp_path / "out").config.projection_dim == 4096


def test_convert_and_push_to_hub(tmp_path, monkeypatch, capsys):
    """`--push_to_hub` publishes the saved folder (code, processor, card) to the Hub in HF_ENDPOINT/HF_TOKEN."""
    import huggingface_hub.constants
    from huggingface_hub import HfApi

    from tests.fixtures.hub_server import HubServer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    _tiny_transformers_clip(str(tmp_path / "clip"))
    with HubServer(tmp_path / "hub") as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)  # as HF_ENDPOINT sets it
        monkeypatch.setenv("HF_TOKEN", hub.token)
        clip_cli(["--source", str(tmp_path / "clip"), "--output_dir", str(tmp_path / "out"), "--push_to_hub", "org/converted"])
        assert f"Pushed to {hub.endpoint}/org/converted" in capsys.readouterr().out
        files = set(HfApi(endpoint=hub.endpoint, token=hub.token).list_repo_files("org/converted"))
    assert {"model.safetensors", "config.json", "modeling_sparse_clip.py", "tokenizer.json", "README.md"} <= files


# ---------------------------------------------------------------------------------------------
# Command-line errors: one line, no traceback
# ---------------------------------------------------------------------------------------------
def test_bad_input_ends_in_one_error_line(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"--logit_scale_max 100 looks like a linear scale; pass its log \(ln 100 = 4\.605\)"):
        ConversionOptions(logit_scale_max=100)
    assert ConversionOptions(logit_scale_max=math.log(100)).logit_scale_max == pytest.approx(4.605, abs=1e-3)
    missing, out = str(tmp_path / "missing.pt"), str(tmp_path / "out")
    for main, argv, expected in (
        (open_clip_main, ["--checkpoint", missing, "--logit_scale_max", "100"], "--logit_scale_max 100 looks like a linear scale; pass its log (ln 100 = 4.605)"),
        (open_clip_main, ["--checkpoint", missing], f"No checkpoint file at {missing!r}"),
        (clip_main, ["--source", str(tmp_path / "no-clip")], "No CLIPModel folder at"),
    ):
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--output_dir", out])
        err = capsys.readouterr().err
        assert stop.value.code == 1 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1].startswith(f"error: {expected}"), err
    assert not (tmp_path / "out").exists()
