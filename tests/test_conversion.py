"""Conversion parity against the real source libraries (OpenCLIP, transformers) on small random
models, real images and real captions; tokenizer/processor parity; loud failures on bad checkpoints.
Full-size OpenCLIP architectures are in test_conversion_open_clip.py (slow)."""

import json
import math
import os
import re
from pathlib import Path

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
from modeling_sparse_clip.conversion.verify import preprocessing_probe_images, ranking_agreement, real_images_and_captions
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
TRICKY_CAPTIONS = json.loads((Path(__file__).parent / "fixtures" / "tricky_captions.json").read_text(encoding="utf-8"))["captions"]


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
    """Cleaning (ftfy, HTML unescaped twice, whitespace) and special tokens as open_clip.tokenize, on the committed
    tricky captions, in memory and as the saved folder loads (AutoTokenizer / AutoProcessor with trust_remote_code)."""
    from transformers import AutoProcessor, AutoTokenizer

    _, captions = real_images_and_captions()
    texts = captions + CAPTIONS_FOR_TOKENS + TRICKY_CAPTIONS
    reference = open_clip.tokenize(texts, context_length=77)
    build_clip_processor(image_size=32).save_pretrained(tmp_path)  # as the converters save it
    loaded = [AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True), AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True).tokenizer]
    for tok in (build_clip_tokenizer(77), *loaded):
        assert type(tok).__name__ == "OpenCLIPTokenizer"
        enc = tok(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        # Up to and including the first end-of-text: identical ids; after it: padding (0 in OpenCLIP).
        bad = [t for t, a, b in zip(texts, enc.input_ids * enc.attention_mask, reference) if not torch.equal(a, b)]
        assert not bad, bad
        assert torch.equal(enc.attention_mask.sum(1), (reference != 0).sum(1))
        single = open_clip.tokenize(["Tom &amp; Jerry"])[0]
        assert tok("Tom &amp; Jerry").input_ids == single[single != 0].tolist()  # one string: the same cleaning
    tok = loaded[0]
    assert len(tok) == 49408 and tok.eos_token_id == 49407 and tok.bos_token_id == 49406
    # Loaders without trust_remote_code still work: they get the standard class (close to, not identical with, OpenCLIP).
    assert type(AutoTokenizer.from_pretrained(tmp_path)).__name__ == "CLIPTokenizer"
    assert type(AutoProcessor.from_pretrained(tmp_path).image_processor).__name__.startswith("CLIPImageProcessor")


def test_tricky_captions_break_a_plain_clip_tokenizer():
    """The fixture is not vacuous: transformers' standard CLIPTokenizer on the same BPE gets many of them wrong."""
    from transformers import CLIPTokenizer

    from modeling_sparse_clip.conversion.clip_processing import clip_bpe_vocab_and_merges

    vocab, merges = clip_bpe_vocab_and_merges()
    openai_names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {openai_names.get(k, k): v for k, v in vocab.items()}
    plain = CLIPTokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>", model_max_length=77)
    enc = plain(TRICKY_CAPTIONS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    differ = ((enc.input_ids * enc.attention_mask) != open_clip.tokenize(TRICKY_CAPTIONS)).any(dim=1)
    assert differ.sum() >= 10, differ


def test_image_processor_matches_open_clip_preprocess_on_real_photos(tmp_path):
    """scikit-learn's photos at 640x427, 1024x768, portrait, tiny, 227x224, grey and RGBA: OpenCLIP's pixels exactly."""
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from transformers import AutoProcessor, CLIPImageProcessor

    cfg = {"size": 224}
    build_clip_processor(**cfg).save_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(processor.image_processor).__name__ == "OpenCLIPImageProcessor"
    reference_transform = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    images = preprocessing_probe_images()
    images["emoji 136x128"] = real_images_and_captions()[0][2]
    standard = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    standard_off = 0
    for name, image in images.items():
        reference = reference_transform(image)
        ours = processor(images=image, return_tensors="pt").pixel_values[0]
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0, msg=name)
        standard_off += (standard(images=image, return_tensors="pt").pixel_values[0] - reference).abs().max().item() > 1e-3
    batch = processor(images=list(images.values())[:3], return_tensors="pt").pixel_values
    torch.testing.assert_close(batch, torch.stack([reference_transform(im) for im in list(images.values())[:3]]), atol=1e-6, rtol=0)
    assert standard_off >= 6  # transformers' own backends do not get there (crop rounding, alpha, tensor resize)
    assert _crop_offsets_disagree(images["china 640x427"].size, cfg)


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
    assert "SparseCLIP (activation=none) vs OpenCLIP's own model" in printed and "logits vs OpenCLIP forward" in printed
    assert "captions with other token ids 0.000e+00" in printed and "pixels flower RGBA (alpha ramp) 0.000e+00" in printed
    for f in ("config.json", "model.safetensors", "modeling_sparse_clip.py", "configuration_sparse_clip.py", "processing_open_clip.py", "tokenizer.json", "processor_config.json"):
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


def test_wide_dense_open_clip_stays_dense(tmp_path):
    """A projection wider than both towers says nothing about a ReLU: a dense OpenCLIP converts dense, exactly."""
    cfg = {**TINY_CFG, "embed_dim": 1024}  # wider than both towers (64, 32)
    model = _tiny_open_clip(cfg, seed=1)
    _, converted, _ = _convert_folder(tmp_path, model, cfg)
    assert converted.config.activation == "none" and converted.config.projection_dim == 1024
    _, _, pixels, ids = open_clip_inputs(PREPROCESS_32)
    with torch.no_grad():
        logits_ref, _ = model.get_logits(pixels, ids)
    _, _, logits = _sparse_outputs(converted, pixels, ids)
    torch.testing.assert_close(logits, logits_ref, atol=1e-4, rtol=0)


def test_declared_paper_format_converts_to_relu(tmp_path):
    """The paper's format (OpenCLIP weights + a ReLU after the projection) is recognised from what its config says."""
    cfg = {**TINY_CFG, "embed_dim": 1024}
    model = _tiny_open_clip(cfg, seed=1)
    folder = write_open_clip_folder(model, cfg, str(tmp_path / "src"), PREPROCESS_32)
    config_path = os.path.join(folder, "open_clip_config.json")
    config = json.load(open(config_path))
    json.dump({**config, "sparse_clip_activation": "relu"}, open(config_path, "w"))
    converted, _ = convert_open_clip(read_open_clip_source(folder), ConversionOptions(logit_scale_max=math.log(50)))
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
    json.dump({**config, "sparse_clip_activation": "gelu"}, open(config_path, "w"))
    with pytest.raises(ValueError, match="sparse_clip_activation='gelu'"):
        read_open_clip_source(folder)


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
    if layout == "openai_state_dict":  # the export's own metadata says OpenAI: QuickGELU
        source = read_open_clip_source(path)
        assert "OpenAI export" in source.quick_gelu_source
        # --verify's reference: OpenCLIP's own reader of OpenAI state dicts (build_model_from_openai_state_dict)
        open_clip_cli(["--checkpoint", path, "--output_dir", str(tmp_path / "out"), "--verify", "--verify_tolerance", "1e-5"])
    else:  # nothing in the file says GELU or QuickGELU: refused, then stated
        with pytest.raises(ValueError, match="cannot tell GELU from QuickGELU.*--model_name"):
            read_open_clip_source(path)
        source = read_open_clip_source(path, quick_gelu=True)
    assert source.kind == "inferred" and source.quick_gelu
    assert source.model_cfg["vision_cfg"]["layers"] == 2 and source.model_cfg["text_cfg"]["layers"] == 3
    converted, _ = convert_open_clip(source, ConversionOptions())
    assert converted.config.vision_config.hidden_act == "quick_gelu"
    _, _, pixels, ids = open_clip_inputs(PREPROCESS_32)
    image_ref, text_ref = open_clip_features(model.eval(), pixels, ids)
    image, text, _ = _sparse_outputs(converted, pixels, ids)
    torch.testing.assert_close(image, image_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, text_ref, atol=1e-5, rtol=0)


def test_gelu_checkpoint_is_never_taken_for_quickgelu(tmp_path, capsys):
    """A GELU state dict without a name is refused (not guessed); stated, or read from the run's params.txt, it
    converts to the TRUE model, and --verify compares with OpenCLIP's own model of that activation."""
    cfg = {**OPENAI_TINY_CFG, "quick_gelu": False}
    model = _tiny_open_clip(cfg, seed=6)
    run = tmp_path / "logs" / "run1"
    (run / "checkpoints").mkdir(parents=True)
    path = str(run / "checkpoints" / "epoch_1.pt")
    torch.save({"epoch": 1, "name": "run1", "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    with pytest.raises(SystemExit) as stop:
        open_clip_main(["--checkpoint", path, "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.count("\n") == 1 and "--model_name" in err and "--quick_gelu" in err, err
    _, _, pixels, ids = open_clip_inputs(PREPROCESS_32)
    image_ref, text_ref = open_clip_features(model, pixels, ids)
    open_clip_cli(["--checkpoint", path, "--quick_gelu", "false", "--output_dir", str(tmp_path / "out"), "--verify", "--verify_tolerance", "1e-5"])
    assert "GELU, from --quick_gelu false" in capsys.readouterr().out
    image, text, _ = _sparse_outputs(SparseCLIPModel.from_pretrained(tmp_path / "out"), pixels, ids)
    torch.testing.assert_close(image, image_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(text, text_ref, atol=1e-5, rtol=0)
    # open_clip_train writes logs/<run>/params.txt beside checkpoints/: its model + force_quick_gelu are the truth.
    (run / "params.txt").write_text("batch_size: 256\nforce_quick_gelu: True\nmodel: ViT-B-32\n")
    source = read_open_clip_source(path)
    assert source.kind == "name" and source.model_name == "ViT-B-32" and source.quick_gelu


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
    source = read_open_clip_source(path, quick_gelu=True)
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
def _tiny_transformers_clip(folder, with_processor=True, projection_dim=24, **config_kwargs):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(4)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=49408, eos_token_id=49407, bos_token_id=49406, pad_token_id=49407),
        vision_config=dict(hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=projection_dim,
        **config_kwargs,
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


@pytest.mark.parametrize("declare", [False, True])
def test_wide_dense_clipmodel_stays_dense(tmp_path, capsys, declare):
    """projection_dim 128 > towers (48, 32): still a dense CLIPModel, so a dense SparseCLIP equal to CLIPModel.forward
    (it used to get a ReLU, logits off by 5-8, and --verify passed by applying the ReLU to its reference too).
    A config that says `sparse_clip_activation: relu` is the paper's format and gets the ReLU."""
    extra = {"sparse_clip_activation": "relu"} if declare else {}
    source = _tiny_transformers_clip(str(tmp_path / "clip"), projection_dim=128, **extra)
    out = tmp_path / "out"
    clip_cli(["--source", str(tmp_path / "clip"), "--output_dir", str(out), "--verify", "--verify_tolerance", "1e-5"])
    printed = capsys.readouterr().out
    converted = SparseCLIPModel.from_pretrained(out).eval()
    assert converted.config.activation == ("relu" if declare else "none")
    assert ("relu(CLIPModel) logits" if declare else "logits vs CLIPModel forward") in printed
    from transformers import AutoProcessor

    images, captions = real_images_and_captions()
    inputs = AutoProcessor.from_pretrained(out, trust_remote_code=True)(images=images, text=captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref, ours = source(**inputs), converted(**inputs)
    if declare:
        with torch.no_grad():
            image_features = source.get_image_features(pixel_values=inputs.pixel_values).pooler_output
        assert (ours.image_activations == 0).any()
        torch.testing.assert_close(ours.image_activations, F.relu(image_features), atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(ours.logits_per_image, ref.logits_per_image, atol=1e-5, rtol=0)
        # Asked for explicitly, the ReLU is there, and the converter says the model differs from the source.
        converted, _ = convert_clip(str(tmp_path / "clip"), ConversionOptions(activation="relu"))
        assert converted.config.activation == "relu" and "will NOT reproduce it" in capsys.readouterr().out


def test_transformers_clip_signed_rotation_head_is_an_exact_re_encoding(tmp_path):
    source = _tiny_transformers_clip(str(tmp_path / "clip"), with_processor=False)
    width = 8192
    converted, processor = convert_clip(str(tmp_path / "clip"), ConversionOptions(signed_rotation_head=width, logit_scale_max=math.log(50)))
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
    print("tiny CLIPModel --signed_rotation_head", width, agreement)
    assert agreement["spearman_image_to_text"] > 0.6 and agreement["spearman_text_to_image"] > 0.6
    with pytest.raises(ValueError, match="at least twice"):
        convert_clip(str(tmp_path / "clip"), ConversionOptions(signed_rotation_head=30))


def test_cli_signed_rotation_head_verify_prints_its_drift(tmp_path, capsys):
    """--verify measures what the head does to the dense model (rankings, cosine shift, L0 = 50%) and checks that
    it is an exact linear re-encoding; --sparsify is the deprecated name of the same flag."""
    model = _tiny_open_clip(TINY_CFG, seed=5)
    folder = write_open_clip_folder(model, TINY_CFG, str(tmp_path / "src"), PREPROCESS_32)
    open_clip_cli(["--checkpoint", folder, "--output_dir", str(tmp_path / "out"), "--signed_rotation_head", "4096", "--verify"])
    printed = capsys.readouterr().out
    assert "activation=relu, projection_dim=4096" in printed and "NOT the dense model: drift" in printed
    for key in ("re-encoding error (relative)", "top1_image_to_text", "top1_text_to_image", "cosine shift mean", "L0 image (fraction active)", "L0 text (fraction active)"):
        assert key in printed, key
    l0 = float(printed.split("L0 image (fraction active)")[1].split()[0])
    assert l0 == pytest.approx(0.5, abs=0.03)  # starts half dense: not sparse yet
    assert float(printed.split("cosine shift mean")[1].split()[0]) > 0.1  # cosines are shifted up, not kept
    assert SparseCLIPModel.from_pretrained(tmp_path / "out").config.projection_dim == 4096
    with pytest.warns(FutureWarning, match="--sparsify is deprecated"):
        options = ConversionOptions(sparsify=4096)
    assert options.signed_rotation_head == 4096 and options.sparsify is None


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
def _bad_inputs(tmp_path):
    """(command, argv, start of the one error line) for every kind of bad input the converters meet."""
    from safetensors.torch import save_file

    model = _tiny_open_clip(TINY_CFG)
    folder = write_open_clip_folder(model, TINY_CFG, str(tmp_path / "ok"), PREPROCESS_32)
    bare = str(tmp_path / "bare.pt")
    torch.save(model.state_dict(), bare)
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "open_clip_config.json").write_text("{nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.safetensors").write_bytes(b"\0" * 100)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "fn": randomise}, tmp_path / "code.pt")
    truncated = write_open_clip_folder(model, TINY_CFG, str(tmp_path / "truncated"), PREPROCESS_32)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("transformer.resblocks.1.")}, os.path.join(truncated, "open_clip_model.safetensors"))
    _tiny_transformers_clip(str(tmp_path / "clip"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 8}))
    t = str(tmp_path)
    return [
        (open_clip_main, ["--checkpoint", f"{t}/missing.pt"], f"--checkpoint '{t}/missing.pt' does not exist (no such file or folder)"),
        (open_clip_main, ["--checkpoint", bare], f"{bare}: the weights cannot tell GELU from QuickGELU"),
        (open_clip_main, ["--checkpoint", f"{t}/badjson"], f"{t}/badjson/open_clip_config.json is not valid JSON"),
        (open_clip_main, ["--checkpoint", f"{t}/empty"], f"{t}/empty has no open_clip_config.json"),
        (open_clip_main, ["--checkpoint", f"{t}/corrupt.safetensors", "--quick_gelu", "false"], f"'{t}/corrupt.safetensors' is not a readable safetensors file"),
        (open_clip_main, ["--checkpoint", f"{t}/code.pt"], f"Could not read '{t}/code.pt' with torch.load(weights_only=True): it pickles code or objects"),
        (open_clip_main, ["--checkpoint", truncated], f"OpenCLIP checkpoint {truncated}/open_clip_model.safetensors: the checkpoint does not match the expected architecture. 12 missing key(s)"),
        (open_clip_main, ["--checkpoint", bare, "--model_name", "ViT-B-32"], f"OpenCLIP checkpoint {bare}: the checkpoint does not match the expected architecture. 240 missing key(s)"),
        (open_clip_main, ["--checkpoint", bare, "--model_name", "ViT-B-99"], "--model_name 'ViT-B-99' is not a built-in OpenCLIP architecture"),
        (open_clip_main, ["--checkpoint", bare, "--pretrained_tag", "openai"], "--pretrained_tag needs --model_name"),
        (open_clip_main, ["--checkpoint", folder, "--signed_rotation_head", "30"], "--signed_rotation_head 30: the width must be even and at least twice"),
        (open_clip_main, ["--checkpoint", folder, "--signed_rotation_head", "many"], "argument --signed_rotation_head/--signed-rotation-head: invalid int value: 'many' (see --help)"),
        (open_clip_main, ["--checkpoint", folder, "--activation", "gelu"], "--activation must be auto, relu or none"),
        (open_clip_main, ["--checkpoint", folder, "--logit_scale_max", "100"], "--logit_scale_max 100 looks like a linear scale; pass its log (ln 100 = 4.605)"),
        (open_clip_main, ["--checkpoint", folder, "--verify", "--verify_tolerance", "1e-12"], "verify: max abs differences above 1e-12"),
        (clip_main, ["--source", f"{t}/no-clip"], f"--source '{t}/no-clip' does not exist (no such folder)"),
        (clip_main, ["--source", bare], f"--source '{bare}' is a file; give the CLIPModel FOLDER"),
        (clip_main, ["--source", f"{t}/empty"], f"{t}/empty has no config.json, so it is not a saved transformers CLIPModel"),
        (clip_main, ["--source", f"{t}/bert"], f"{t}/bert holds a BertConfig (model_type='bert'), not a CLIPModel"),
        (clip_main, ["--source", "no-such-org/no-such-model"], "--source 'no-such-org/no-such-model' is not a local folder (no such path) and could not be downloaded from the Hub"),
        (clip_main, ["--source", f"{t}/clip", "--verify", "--verify_tolerance", "1e-12"], "verify (logits): max abs differences above"),
        (clip_main, ["--source", f"{t}/clip"], "the following arguments are required: --output_dir/--output-dir (see --help)"),
    ]


def test_bad_input_ends_in_one_error_line(tmp_path, capsys):
    """Every bad input: exit 1 and ONE stderr line (no usage block, no traceback) that names the problem; nothing
    is left under --output_dir, and an existing output folder survives a failed --verify untouched."""
    with pytest.raises(ValueError, match=r"--logit_scale_max 100 looks like a linear scale; pass its log \(ln 100 = 4\.605\)"):
        ConversionOptions(logit_scale_max=100)
    assert ConversionOptions(logit_scale_max=math.log(100)).logit_scale_max == pytest.approx(4.605, abs=1e-3)
    out = tmp_path / "out"
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "marker").write_text("an earlier, complete conversion")
    messages, cases = [], _bad_inputs(tmp_path)
    capsys.readouterr()  # the sources' own save progress bars
    for main, argv, expected in cases:
        target = tmp_path / "kept" if "--verify" in argv else out
        extra = [] if "--output_dir" in expected else ["--output_dir", str(target)]
        with pytest.raises(SystemExit) as stop:
            main([*argv, *extra])
        err = capsys.readouterr().err
        progress = re.compile(r"\d+%\|.*\|")  # tqdm bars of the saves/loads before the failure are not messages
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not progress.search(line)]
        assert stop.value.code == 1 and len(lines) == 1, err
        assert lines[0].startswith(f"error: {expected}"), lines[0]
        assert lines[0].endswith(("(run with --debug for the traceback)", "(see --help)"))
        messages.append(lines[0])
        assert not out.exists() and [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    assert (tmp_path / "kept" / "marker").is_file() and not (tmp_path / "kept" / "config.json").exists()
    print("\n".join(messages))
