"""Training with Trainer: telemetry, the cap, checkpoints with code, evolution folders, cached towers,
resume after a kill, NaN stop, the sparse gather choice, recipes and log-space flags, torchrun with 2 gloo
processes."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_sparse_clip import SparseCLIPModel
from tests.isolation import free_port

REPO = Path(__file__).resolve().parents[1]


def _flags(towers, data, out, **extra):
    flags = {
        "vision_tower": towers / "vision", "text_tower": towers / "text", "processor_name_or_path": towers / "processor",
        "projection_dim": 256, "dataset": data, "output_dir": out, "per_device_train_batch_size": 8,
        "max_steps": 8, "learning_rate": 5e-3, "logging_steps": 1, "save_steps": 4, "seed": 0,
        "use_cpu": True, "report_to": "none", "dataloader_num_workers": 0, "max_text_length": 32,
        "logit_scale_init_value": math.log(10.0), "logit_scale_max": math.log(12.0), "disable_tqdm": True, "save_total_limit": 3,
    }
    flags.update(extra)
    out_flags = []
    for k, v in flags.items():
        out_flags += [f"--{k}", str(v)]
    return out_flags


def _train(flags, callbacks=()):
    from modeling_sparse_clip.training import parse_args, train

    return train(*parse_args(flags), callbacks=callbacks)


def test_trainer_run_logs_telemetry_saves_code_and_respects_cap(tiny_towers_dir, emoji_dataset_dir, tmp_path):
    out = tmp_path / "run"
    _train(_flags(tiny_towers_dir, emoji_dataset_dir, out, evolution_fractions="0.25,0.5,1.0"))
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [e for e in state["log_history"] if "loss" in e]
    assert len(logs) == 8
    for entry in logs:
        for key in ("l0_image_mean", "l0_image_median", "l0_text_mean", "l0_image_pct_width", "active_features_pct", "dead_features", "logit_scale"):
            assert key in entry, key
        assert entry["logit_scale"] <= 12.0 + 1e-3
        assert 0 < entry["l0_image_mean"] <= 256
    assert all(math.isfinite(e["loss"]) for e in logs)  # learning itself: tests/test_model.py (falling loss)
    checkpoint = out / "checkpoint-4"
    names = set(os.listdir(checkpoint))
    assert {"model.safetensors", "config.json", "modeling_sparse_clip.py", "configuration_sparse_clip.py",
            "processor_config.json", "checkpoint_complete", "trainer_state.json"} <= names, names
    model = SparseCLIPModel.from_pretrained(checkpoint)
    assert model.logit_scale.item() <= math.log(12.0) + 1e-6
    assert sorted(os.listdir(out / "evolution")) == ["progress_025", "progress_050", "progress_100"]
    final = load_file(out / "model.safetensors")
    evolved = load_file(out / "evolution" / "progress_100" / "model.safetensors")
    torch.testing.assert_close(final["visual_projection.weight"], evolved["visual_projection.weight"])
    assert (out / "training_config.json").exists()


def test_cached_tower_features_train_the_same_model(tiny_towers_dir, emoji_dataset_dir, tmp_path):
    """Heads trained on cached tower outputs == heads trained through frozen towers (same batches)."""
    common = dict(vision_trainable="none", text_trainable="none", max_steps=4, save_steps=100)
    _train(_flags(tiny_towers_dir, emoji_dataset_dir, tmp_path / "raw", **common))
    cache = tmp_path / "cache"
    _train(_flags(tiny_towers_dir, emoji_dataset_dir, tmp_path / "cached", cache_tower_features=True, data_cache_dir=cache, **common))
    files = list((cache / "tower_features").glob("*.safetensors"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime
    _train(_flags(tiny_towers_dir, emoji_dataset_dir, tmp_path / "cached2", cache_tower_features=True, data_cache_dir=cache, **common))
    assert files[0].stat().st_mtime == mtime  # second run reused the cache
    raw, cached = load_file(tmp_path / "raw" / "model.safetensors"), load_file(tmp_path / "cached" / "model.safetensors")
    for key in ("visual_projection.weight", "text_projection.weight", "logit_scale"):
        torch.testing.assert_close(raw[key], cached[key], rtol=1e-4, atol=1e-5)
    frozen = [k for k in raw if k.startswith("vision_model.")]
    torch.testing.assert_close(raw[frozen[0]], cached[frozen[0]], rtol=0, atol=0)


def test_cache_needs_frozen_towers(tiny_towers_dir, emoji_dataset_dir, tmp_path):
    with pytest.raises(ValueError, match="needs frozen towers"):
        _train(_flags(tiny_towers_dir, emoji_dataset_dir, tmp_path / "x", cache_tower_features=True, data_cache_dir=tmp_path))


def test_resume_after_kill_matches_uninterrupted_run(tiny_towers_dir, emoji_dataset_dir, tmp_path):
    flags_full = _flags(tiny_towers_dir, emoji_dataset_dir, tmp_path / "full")
    _train(flags_full)
    # a run killed hard (os._exit, like SIGKILL: nothing is flushed) right after step 6, i.e. after checkpoint-4
    killed_dir = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from transformers import TrainerCallback
        from modeling_sparse_clip.training import parse_args, train
        class Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 6:
                    os._exit(137)
        train(*parse_args({_flags(tiny_towers_dir, emoji_dataset_dir, killed_dir)!r}), callbacks=[Kill()])
        """
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 137, res.stderr[-2000:]
    assert not (killed_dir / "model.safetensors").exists()
    _train(_flags(tiny_towers_dir, emoji_dataset_dir, killed_dir, resume_from_checkpoint="latest"))
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(killed_dir / "model.safetensors")
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(full[key], resumed[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


def test_nan_loss_stops_naming_the_step_and_keeps_last_checkpoint(tiny_towers_dir, emoji_dataset_dir, tmp_path):
    from transformers import TrainerCallback

    from modeling_sparse_clip.training import NonFiniteLossError

    class Corrupt(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step == 5:
                with torch.no_grad():
                    model.visual_projection.weight.fill_(float("nan"))

    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match=r"at step 6.*Last good checkpoint: .*checkpoint-4"):
        _train(_flags(tiny_towers_dir, emoji_dataset_dir, out), callbacks=[Corrupt()])
    good = load_file(out / "checkpoint-4" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in good.values())
    assert not (out / "checkpoint-8").exists() and not (out / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sparse_gather", [False, True])
def test_torchrun_two_gloo_processes(tiny_towers_dir, emoji_dataset_dir, tmp_path, sparse_gather):
    """The training command under torchrun, with the dense gather and with `--sparse_gather` (non-zeros only)."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "modeling_sparse_clip.cli.train", *_flags(tiny_towers_dir, emoji_dataset_dir, out, per_device_train_batch_size=4,
                                                       max_steps=3, save_steps=100, ddp_backend="gloo", sparse_gather=sparse_gather)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert all(math.isfinite(e["loss"]) for e in state["log_history"] if "loss" in e)
    SparseCLIPModel.from_pretrained(out)


def test_sparse_gather_flag_makes_the_trainer_pass_the_sparse_gather(tiny_towers_dir, emoji_dataset_dir, tmp_path):
    """The gather is the trainer's choice: `--sparse_gather` -> every forward gets the sparse gather (exact
    gradients for relu/topk), otherwise no gather_fn (the model's dense default)."""
    from transformers import TrainerCallback

    from modeling_sparse_clip import sparse_gather
    from modeling_sparse_clip.training import sparse_gather_fn

    assert sparse_gather_fn("relu") is sparse_gather.sparse_all_gather_with_sparse_grad
    assert sparse_gather_fn("topk") is sparse_gather.sparse_all_gather_with_sparse_grad
    assert sparse_gather_fn("none") is sparse_gather.sparse_all_gather_with_grad

    def gathers_seen(**extra):
        seen = []

        class Spy(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kw):
                model.register_forward_pre_hook(lambda module, a, kwargs: seen.append(kwargs.get("gather_fn")), with_kwargs=True)

        _train(_flags(tiny_towers_dir, emoji_dataset_dir, tmp_path / str(len(extra)), max_steps=2, save_steps=100, **extra), callbacks=[Spy()])
        return seen

    assert gathers_seen(sparse_gather=True) == [sparse_gather.sparse_all_gather_with_sparse_grad] * 2
    assert gathers_seen() == [None, None]


def test_recipes_by_name_or_path_from_any_directory(tmp_path, monkeypatch):
    from modeling_sparse_clip.recipes import available_recipes, recipe_path
    from modeling_sparse_clip.training import parse_args

    monkeypatch.chdir(tmp_path)  # the shipped recipes do not depend on the working directory
    assert {"embedded_sparse", "embedded_dense", "vlm_embedded", "paper_vit_b32"} <= set(available_recipes())
    assert recipe_path("embedded_sparse") == recipe_path("embedded_sparse.json")
    model_args, data_args, training_args = parse_args(["embedded_sparse", "--output_dir", "out"])
    # log-space values: exactly the logs of a linear cap 8, the init at the cap (benchmarks/openclipart_gap.py)
    assert model_args.logit_scale_init_value == math.log(8.0) and model_args.logit_scale_max == math.log(8.0)
    assert (model_args.projection_dim, model_args.activation, data_args.max_per_source) == (8192, "relu", 3000)
    # a file that exists is used as is, flags after it override it
    mine = json.loads(recipe_path("embedded_dense").read_text())
    (tmp_path / "mine.json").write_text(json.dumps({**mine, "projection_dim": 256}))
    model_args, _, training_args = parse_args(["mine.json", "--learning_rate", "0.01", "--output_dir", "out"])
    assert (model_args.projection_dim, model_args.activation, training_args.learning_rate) == (256, "none", 0.01)
    with pytest.raises(FileNotFoundError, match="embedded_sparse"):
        parse_args(["no_such_recipe", "--output_dir", "out"])


def test_logit_scale_flags_are_log_space_and_a_linear_value_is_refused(capsys):
    from modeling_sparse_clip.cli.train import main
    from modeling_sparse_clip.training import parse_args

    base = ["--vision_tower", "clip-vit-b-32", "--text_tower", "clip-text-b", "--output_dir", "out", "--use_cpu", "true"]
    with pytest.raises(ValueError, match=r"^--logit_scale_max 100 looks like a linear scale; pass its log \(ln 100 = 4\.605\)$"):
        parse_args([*base, "--logit_scale_max", "100"])
    with pytest.raises(ValueError, match=r"--logit_scale_init_value 14.2857 looks like a linear scale; pass its log \(ln 14.2857 = 2\.659\)"):
        parse_args([*base, "--logit_scale_init_value", "14.2857"])
    with pytest.raises(ValueError, match="--logit_scale_cap .* is now --logit_scale_max, in log space"):
        parse_args([*base, "--logit_scale_cap", "100"])
    model_args = parse_args([*base, "--logit_scale_max", "3.912023005428146"])[0]
    assert model_args.logit_scale_max == math.log(50.0)

    with pytest.raises(SystemExit) as stop:
        main([*base, "--logit_scale_max", "100"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --logit_scale_max 100 looks like a linear scale; pass its log (ln 100 = 4.605) (run with --debug for the traceback)"


def test_tower_cache_runs_each_distinct_caption_once_and_matches_per_caption_encoding(tiny_towers_dir, emoji_dataset_dir, monkeypatch):
    """The training-pair cache encodes each distinct caption once, in batches of similar length, and
    gives the same features as encoding every caption in order (up to float rounding of other padding)."""
    import datasets
    from transformers import AutoProcessor

    from modeling_sparse_clip.encoding import SparseCLIPEncoder
    from modeling_sparse_clip.training.tower_cache import encode_tower_features

    rows = datasets.load_from_disk(emoji_dataset_dir).select(range(12))
    repeated = rows.map(lambda r, i: {"text": r["text"] + ["an emoji"] if i % 2 else r["text"]}, with_indices=True)
    model = SparseCLIPModel.from_towers(str(tiny_towers_dir / "vision"), str(tiny_towers_dir / "text"), projection_dim=64).eval()
    processor = AutoProcessor.from_pretrained(tiny_towers_dir / "processor")
    seen = []
    original = SparseCLIPEncoder.pool_texts
    monkeypatch.setattr(SparseCLIPEncoder, "pool_texts", lambda self, texts, **kw: seen.extend(texts) or original(self, texts, **kw))
    features = encode_tower_features(model, processor, repeated, batch_size=4, progress=False)
    captions = [c for caps in repeated["text"] for c in caps]
    assert len(seen) == len(set(captions)) < len(captions)  # "an emoji" ran once, not 6 times
    assert features["text"].shape[0] == len(captions) and features["text_offsets"][-1] == len(captions)
    monkeypatch.setattr(SparseCLIPEncoder, "pool_texts", original)
    one_by_one = SparseCLIPEncoder(model, processor, progress=False).pool_texts(captions, batch_size=1)
    torch.testing.assert_close(features["text"], one_by_one, rtol=1e-5, atol=1e-5)
    again = encode_tower_features(model, processor, repeated, batch_size=4, progress=False)
    assert torch.equal(again["text"], features["text"]) and torch.equal(again["image"], features["image"])  # deterministic
