"""SparseCLIPModel: outputs, loss, activations, the cap, attention/checkpointing parity, towers, config errors."""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
from tests.conftest import tiny_clip_configs
from tests.isolation import hide_modules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(config, **overrides):
    torch.manual_seed(0)
    for k, v in overrides.items():
        setattr(config, k, v)
    return SparseCLIPModel(config).eval()


def reference_infonce(img, txt, scale):
    """Independent symmetric InfoNCE: -log softmax of the matching pair, both directions, averaged."""
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    sims = scale * img @ txt.T
    n = sims.shape[0]
    i2t = -torch.stack([sims[i, i] - torch.logsumexp(sims[i], 0) for i in range(n)]).mean()
    t2i = -torch.stack([sims[i, i] - torch.logsumexp(sims[:, i], 0) for i in range(n)]).mean()
    return (i2t + t2i) / 2


def test_save_load_round_trip(tiny_config, tiny_batch, tmp_path):
    model = _model(tiny_config)
    with torch.no_grad():
        before = model(**tiny_batch)
    model.save_pretrained(tmp_path)
    assert {"model.safetensors", "config.json", "modeling_sparse_clip.py", "configuration_sparse_clip.py"} <= set(os.listdir(tmp_path))
    loaded = SparseCLIPModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = loaded(**tiny_batch)
    torch.testing.assert_close(before.logits_per_image, after.logits_per_image, rtol=0, atol=0)
    torch.testing.assert_close(before.image_activations, after.image_activations, rtol=0, atol=0)


def test_trust_remote_code_without_the_package(tiny_config, tiny_batch, tmp_path):
    model = _model(tiny_config)
    model.save_pretrained(tmp_path / "model")
    torch.save(dict(tiny_batch), tmp_path / "batch.pt")
    with torch.no_grad():
        torch.save(model(**tiny_batch).logits_per_image, tmp_path / "expected.pt")
    script = hide_modules("modeling_sparse_clip", "conversion", "training", repo=REPO) + textwrap.dedent(
        f"""
        try:
            import modeling_sparse_clip
            raise SystemExit("package unexpectedly importable")
        except ImportError:
            pass
        import torch
        from transformers import AutoModel
        m = AutoModel.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
        assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
        with torch.no_grad():
            got = m(**torch.load({str(tmp_path / 'batch.pt')!r})).logits_per_image
        torch.testing.assert_close(got, torch.load({str(tmp_path / 'expected.pt')!r}), rtol=0, atol=1e-6)
        print("REMOTE-OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "REMOTE-OK" in res.stdout, res.stderr[-3000:]


def test_loss_matches_reference_infonce_and_l1_term(tiny_config, tiny_batch):
    model = _model(tiny_config)
    out = model(**tiny_batch, return_loss=True)
    expected = reference_infonce(out.image_activations, out.text_activations, out.logit_scale)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)

    model.config.l1_coefficient = 0.01
    out_l1 = model(**tiny_batch, return_loss=True)
    mean_l1 = (out_l1.image_activations.abs().sum(-1).mean() + out_l1.text_activations.abs().sum(-1).mean()) / 2
    torch.testing.assert_close(out_l1.loss - out.loss, 0.01 * mean_l1, rtol=1e-5, atol=1e-6)


def test_activations(tiny_config, tiny_batch):
    relu = _model(tiny_config)
    out = relu(**tiny_batch)
    assert (out.image_activations >= 0).all() and (out.text_activations >= 0).all()
    assert 0 < out.image_l0 < 256  # sparse but alive at init
    assert out.image_l0 == (out.image_activations != 0).sum(-1).float().mean()

    topk = _model(tiny_config, activation="topk", topk_k=7)
    out = topk(**tiny_batch)
    assert ((out.image_activations != 0).sum(-1) == 7).all() and ((out.text_activations != 0).sum(-1) == 7).all()

    dense = _model(tiny_config, activation="none")
    feats = dense.get_image_features(pixel_values=tiny_batch["pixel_values"]).pooler_output
    pooled = dense.vision_model(pixel_values=tiny_batch["pixel_values"]).pooler_output
    torch.testing.assert_close(feats, pooled @ dense.visual_projection.weight.T)


def test_logit_scale_never_exceeds_cap(tiny_config, tiny_batch):
    """A hand-written loop: the documented one-liner `model.clamp_logit_scale_()` after `optimizer.step()`."""
    model = _model(tiny_config, logit_scale_max=math.log(20.0))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.5)
    above = []
    for _ in range(10):  # a loss that only wants a larger scale
        opt.zero_grad()
        (-model(**tiny_batch).logit_scale.log() - model.logit_scale).backward()
        opt.step()
        above.append(model.logit_scale.item() > math.log(20.0))
        assert model.effective_logit_scale().item() <= 20.0 + 1e-4  # the forward never uses more than the cap
        model.clamp_logit_scale_()
        assert model.logit_scale.item() <= math.log(20.0) + 1e-6
    assert any(above)  # the step alone overshoots: the clamp is what holds the parameter
    assert model.logit_scale.item() == pytest.approx(math.log(20.0), abs=1e-6)  # it reached the cap and stayed


def _cap_run(tiny_config, tmp_path, trainer_class, callbacks=()):
    """10 Trainer steps on identical image/text features (the loss always wants a larger scale), recording
    the logit-scale parameter after every optimiser step, before the next forward."""
    from transformers import TrainerCallback, TrainingArguments

    cap = math.log(12.0)
    model = _model(tiny_config, logit_scale_init_value=math.log(10.0), logit_scale_max=cap)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.visual_projection.weight.copy_(model.text_projection.weight)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(16, model.text_embed_dim, generator=g)
    rows = [{"image_tower_embeds": f, "text_tower_embeds": f} for f in features]
    seen = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen.append(model.logit_scale.item())

    def collate(batch):
        return {**{k: torch.stack([r[k] for r in batch]) for k in batch[0]}, "return_loss": True}

    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=10, per_device_train_batch_size=8, learning_rate=0.1, warmup_steps=0,
        lr_scheduler_type="constant", weight_decay=0.0, save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0, logging_strategy="no",
    )
    trainer_class(model=model.train(), args=args, train_dataset=rows, data_collator=collate, callbacks=[*callbacks, Record()]).train()
    return cap, seen


def test_trainer_clamps_logit_scale_after_every_step(tiny_config, tmp_path):
    """SparseCLIPTrainer clamps after every optimiser step; a plain Trainer does so with LogitScaleCapCallback
    and, without it, lets the parameter run above the cap (so the test can tell)."""
    from transformers import Trainer

    from modeling_sparse_clip.training import LogitScaleCapCallback, SparseCLIPTrainer

    for trainer_class, callbacks in ((SparseCLIPTrainer, ()), (Trainer, (LogitScaleCapCallback(),))):
        cap, seen = _cap_run(tiny_config, tmp_path / trainer_class.__name__, trainer_class, callbacks)
        assert len(seen) == 10 and all(v <= cap + 1e-6 for v in seen), seen
        assert seen[-1] == pytest.approx(cap, abs=1e-6)  # it got there and stayed
    cap, seen = _cap_run(tiny_config, tmp_path / "plain", Trainer)
    assert seen[-1] > cap + 0.1


def test_eager_vs_sdpa_and_gradient_checkpointing(tiny_config, tiny_batch):
    def run(model):
        model.train()
        model.zero_grad()
        out = model(**tiny_batch, return_loss=True)
        out.loss.backward()
        return out.logits_per_image.detach(), model.text_projection.weight.grad.clone(), model.visual_projection.weight.grad.clone()

    torch.manual_seed(0)
    base = SparseCLIPModel(tiny_config)
    state = base.state_dict()
    ref = run(base)
    for attn, ckpt in (("eager", False), ("sdpa", True), ("eager", True)):
        model = SparseCLIPModel.from_pretrained if False else None
        torch.manual_seed(0)
        cfg = SparseCLIPConfig.from_dict(tiny_config.to_dict())
        cfg._attn_implementation = attn
        model = SparseCLIPModel(cfg)
        model.load_state_dict(state)
        assert model.text_model.config._attn_implementation == attn
        if ckpt:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        got = run(model)
        for a, b in zip(ref, got):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _train_steps(model, make_batch, steps=8):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch = make_batch()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_clip_towers_train(tiny_config, tiny_batch):
    losses = _train_steps(_model(tiny_config), lambda: tiny_batch)
    assert losses[-1] < losses[0] - 0.1, losses


def test_bert_and_timm_towers_train():
    from transformers import BertConfig, TimmWrapperConfig

    config = SparseCLIPConfig(
        text_config=BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=99).to_dict(),
        vision_config=TimmWrapperConfig(architecture="test_resnet").to_dict(),
        expansion_factor=8,
        vision_embed_dim=96,
        text_pooling="mean",
    )
    assert config.projection_dim == 8 * 32
    model = _model(config)
    g = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(3, 99, (6, 10), generator=g),
        "attention_mask": torch.ones(6, 10, dtype=torch.long),
        "token_type_ids": torch.zeros(6, 10, dtype=torch.long),
        "pixel_values": torch.randn(6, 3, 32, 32, generator=g),
    }
    losses = _train_steps(model, lambda: batch)
    assert losses[-1] < losses[0] - 0.1, losses
    # mean pooling honours the attention mask: padding must not change a sentence's features
    model.eval()
    ids = batch["input_ids"][:1]
    short = model.get_text_features(input_ids=ids[:, :5], attention_mask=torch.ones(1, 5, dtype=torch.long)).pooler_output
    padded = model.get_text_features(
        input_ids=torch.cat([ids[:, :5], torch.zeros(1, 5, dtype=torch.long)], 1),
        attention_mask=torch.tensor([[1] * 5 + [0] * 5]),
    ).pooler_output
    torch.testing.assert_close(short, padded, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"activation": "gelu"}, "activation='gelu' is unknown"),
        ({"projection_dim": 0}, "projection_dim must be a positive integer"),
        ({"projection_dim": -5}, "projection_dim must be a positive integer"),
        ({"activation": "topk", "topk_k": 300, "projection_dim": 256}, "topk_k <= projection_dim"),
        ({"activation": "topk", "projection_dim": 256}, "needs 0 < topk_k"),
        ({"logit_scale_max": math.log(10.0)}, "below logit_scale_init_value"),
        ({"text_pooling": "max"}, "text_pooling='max' is unknown"),
    ],
)
def test_bad_config_fails_at_config_time(bad, message):
    with pytest.raises(ValueError, match=message):
        SparseCLIPConfig(**bad)


def test_strict_loading_names_offending_keys(tiny_config, tmp_path):
    model = _model(tiny_config)
    model.save_pretrained(tmp_path)
    wider = SparseCLIPConfig.from_pretrained(tmp_path)
    wider.projection_dim = 512
    with pytest.raises(ValueError, match=r"visual_projection.weight: checkpoint \(256, 32\) vs model \(512, 32\)"):
        SparseCLIPModel.from_pretrained(tmp_path, config=wider)
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "model.safetensors")
    state.pop("text_projection.weight")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"(?s)missing keys.*text_projection.weight.*unexpected keys.*extra.weight"):
        SparseCLIPModel.from_pretrained(tmp_path)


def test_from_towers_keeps_pretrained_tower_weights(tmp_path):
    from transformers import CLIPTextModel, CLIPVisionModel

    text_cfg, vision_cfg = tiny_clip_configs()
    torch.manual_seed(3)
    text, vision = CLIPTextModel(text_cfg), CLIPVisionModel(vision_cfg)
    text.save_pretrained(tmp_path / "text")
    vision.save_pretrained(tmp_path / "vision")
    model = SparseCLIPModel.from_towers(vision=str(tmp_path / "vision"), text=str(tmp_path / "text"), expansion_factor=4)
    assert model.projection_dim == 128
    torch.testing.assert_close(model.text_model.embeddings.token_embedding.weight, text.embeddings.token_embedding.weight)
    ids = torch.randint(3, 99, (2, 8))
    torch.testing.assert_close(model.text_model(input_ids=ids).pooler_output, text(input_ids=ids).pooler_output)


@pytest.mark.parametrize("cap", [math.log(50.0), math.log(40.0), math.log(100.0)])
def test_logit_scale_cap_is_exact_and_gradient_flows_at_it(tiny_config, tiny_batch, cap):
    """fp32(ln 50) = 3.9120230675 is above the float64 cap 3.9120230054: the clamp must round down in the
    parameter's dtype, and a parameter at (or above) the cap must still get the gradient of a loss that
    wants a lower scale."""
    model = _model(tiny_config, logit_scale_init_value=math.log(10.0), logit_scale_max=cap)
    with torch.no_grad():
        model.logit_scale.fill_(cap + 0.5)  # a step overshot the cap
    assert model.effective_logit_scale().item() <= math.exp(cap)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() <= cap
    assert model.logit_scale.item() == pytest.approx(cap, abs=1e-6)
    assert model.effective_logit_scale().item() <= math.exp(cap)
    for start in (cap, cap + 0.5):  # at the cap, and above it before the clamp
        with torch.no_grad():
            model.logit_scale.fill_(start)
        model.zero_grad()
        # ReLU embeddings are non-negative, so every logit is >= 0 and this loss wants a lower scale
        model(**tiny_batch).logits_per_image.sum().backward()
        assert model.logit_scale.grad is not None and model.logit_scale.grad.item() > 0, start
    opt = torch.optim.SGD([model.logit_scale], lr=1e-3)
    model.clamp_logit_scale_()
    model.zero_grad()
    model(**tiny_batch).logits_per_image.sum().backward()
    before = model.logit_scale.item()
    opt.step()
    assert model.logit_scale.item() < before  # the loss lowered it


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])  # fp16(ln 50) = 3.9121 rounds above the cap
def test_logit_scale_cap_in_half_precision(tiny_config, dtype):
    model = _model(tiny_config, logit_scale_max=math.log(50.0)).to(dtype)
    with torch.no_grad():
        model.logit_scale.fill_(5.0)
    assert model.effective_logit_scale().double().item() <= 50.0
    model.clamp_logit_scale_()
    assert model.logit_scale.double().item() <= math.log(50.0)
    assert model.effective_logit_scale().double().item() <= 50.0


def test_forward_and_features_take_clip_kwargs(tiny_config, tiny_batch):
    """return_dict, output_hidden_states and interpolate_pos_encoding work as on CLIPModel; a misspelt
    keyword is an error, not silently dropped."""
    model = _model(tiny_config)
    pixels, ids = tiny_batch["pixel_values"], tiny_batch["input_ids"]
    with torch.no_grad():
        out = model(**tiny_batch)
        with pytest.raises(TypeError, match="output_hidden_state"):
            model(**tiny_batch, output_hidden_state=True)
        with pytest.raises(TypeError, match="interpolate_pos"):
            model.get_text_features(input_ids=ids, interpolate_pos=True)
        as_tuple = model(**tiny_batch, return_dict=False)
        assert isinstance(as_tuple, tuple)
        torch.testing.assert_close(as_tuple[0], out.logits_per_image)
        features = model.get_image_features(pixel_values=pixels, return_dict=False)
        assert isinstance(features, tuple)
        torch.testing.assert_close(features[1], out.image_activations)
        hidden = model(**tiny_batch, output_hidden_states=True)
        assert len(hidden.vision_model_output.hidden_states) == len(hidden.text_model_output.hidden_states) == 3
        # 48 px images on a 32 px tower: only with interpolate_pos_encoding, which reaches the vision tower
        big = torch.nn.functional.interpolate(pixels, size=48, mode="bilinear")
        with pytest.raises(Exception):
            model(input_ids=ids, pixel_values=big)
        interpolated = model(input_ids=ids, pixel_values=big, interpolate_pos_encoding=True)
        pooled = model.vision_model(pixel_values=big, interpolate_pos_encoding=True).pooler_output
        torch.testing.assert_close(interpolated.image_activations, model.project_image(pooled))


def test_strict_loading_honours_the_loading_info_contract(tiny_config, tmp_path):
    """Loud by default; `output_loading_info=True` hands the problems to the caller as transformers does;
    `strict=True` refuses even then."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    _model(tiny_config).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("text_projection.weight")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for load in (SparseCLIPModel.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(ValueError, match="text_projection.weight"):
            load(tmp_path)
    model, info = SparseCLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, SparseCLIPModel)
    assert "text_projection.weight" in info["missing_keys"] and "extra.weight" in info["unexpected_keys"]
    with pytest.raises(ValueError, match="extra.weight"):
        SparseCLIPModel.from_pretrained(tmp_path, output_loading_info=True, strict=True)


def test_saved_files_are_readable_by_others(tiny_config, tmp_path):
    """safetensors writes through a private temp file (0600); saved weights and caches get 0o666 & ~umask."""
    from safetensors.torch import save_file

    from modeling_sparse_clip.atomic import atomic_dir, atomic_file

    old = os.umask(0o022)
    try:
        _model(tiny_config).save_pretrained(tmp_path / "model")
        with atomic_file(tmp_path / "cache.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, tmp)
        with atomic_dir(tmp_path / "folder") as tmp:
            tmp.mkdir()
            save_file({"x": torch.zeros(2)}, tmp / "w.safetensors")
        os.umask(0o027)
        with atomic_file(tmp_path / "group.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, tmp)
    finally:
        os.umask(old)
    mode = lambda p: os.stat(p).st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "model" / "model.safetensors") == 0o644
    assert mode(tmp_path / "cache.safetensors") == 0o644
    assert mode(tmp_path / "folder" / "w.safetensors") == 0o644 and mode(tmp_path / "folder") == 0o755
    assert mode(tmp_path / "group.safetensors") == 0o640  # the umask decides


def test_saved_config_names_every_auto_class_and_trainer_divides_accumulated_loss(tiny_config, tmp_path):
    import json

    from transformers import Trainer, TrainingArguments

    from modeling_sparse_clip.constants import AUTO_MAP

    model = _model(tiny_config)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == AUTO_MAP
    assert set(AUTO_MAP) >= {"AutoConfig", "AutoModel", "AutoModelForZeroShotImageClassification"}
    # the loss is a batch mean that takes no num_items_in_batch: Trainer must divide by the accumulation steps
    args = TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to="none")
    assert Trainer(model=model, args=args).model_accepts_loss_kwargs is False
