"""The ablation grid runner end to end on tiny towers and a real emoji image-text dataset."""

import json
import math

import pytest


def _recipe(tmp_path, towers, data) -> str:
    """A tiny training recipe in the same form as the shipped embedded_sparse recipe."""
    recipe = {
        "vision_tower": str(towers / "vision"), "text_tower": str(towers / "text"), "processor_name_or_path": str(towers / "processor"),
        "image_size": 32, "max_text_length": 32, "projection_dim": 64, "activation": "relu",
        "logit_scale_init_value": math.log(10.0), "logit_scale_max": math.log(100.0), "vision_trainable": "none", "text_trainable": "none",
        "cache_tower_features": True, "dataset": data, "data_cache_dir": str(tmp_path / "data_cache"),
        "per_device_train_batch_size": 16, "learning_rate": 1e-3, "warmup_steps": 0, "seed": 0, "use_cpu": True,
        "dataloader_num_workers": 0, "report_to": ["none"],
    }
    path = tmp_path / "tiny_recipe.json"
    path.write_text(json.dumps(recipe))
    return str(path)


def _args(tmp_path, towers, data, **extra):
    from benchmarks.ablations import AblationArguments

    values = dict(
        base_config=_recipe(tmp_path, towers, data), widths=[16, 64], study_width=64, num_train_epochs=2, logging_steps=1,
        learning_rate=3e-2, l1_coefficient=1e-2, cap_fractions=[0.5], fixed_caps=[5.0], suite="none", retrieval_datasets=[data],
        output_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"), feature_cache_dir=str(tmp_path / "features"), progress=False,
    )
    values.update(extra)
    return AblationArguments(**values)


@pytest.mark.slow
def test_grid_trains_evaluates_plots_and_resumes(tiny_towers_dir, emoji_dataset_dir, tmp_path, monkeypatch):
    from PIL import Image

    import benchmarks.ablations as ablations
    from benchmarks.ablations import run_grid
    from modeling_sparse_clip.evaluation.runner import BenchmarkArguments, run

    args = _args(tmp_path, tiny_towers_dir, emoji_dataset_dir)
    report = run_grid(args)
    runs, studies = report["runs"], report["studies"]
    out = tmp_path / "results"

    # Files: three real PNGs, the table and the JSON (the same report that run_grid returned).
    for name in ("fig2a.png", "fig2b.png", "fig2c.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 500
    assert json.loads((out / "ablations.json").read_text())["runs"].keys() == runs.keys()
    table = (out / "ablations.md").read_text()

    # 2a: a run without relu keeps every dim active (in training and on the eval set); relu does not.
    assert studies["width"] == ["width16_relu", "width16_none", "width64_relu", "width64_none"]
    for width in (16, 64):
        dense, sparse = runs[f"width{width}_none"], runs[f"width{width}_relu"]
        assert dense["summary"]["image_l0"] == width and dense["summary"]["text_l0"] == width
        assert all(h["l0_image_mean"] == width for h in dense["history"])
        assert 0 < sparse["summary"]["image_l0"] < width
        assert dense["width"] == sparse["width"] == width

    # 2b: TopK's k is the relu run's final training L0, and its L0 is exactly k from the first logged step.
    relu_name, l1_name, topk_name = studies["inducer"]
    assert relu_name == "width64_relu"  # shared with the width study, not retrained
    k = runs[topk_name]["topk_k"]
    assert k == max(1, round(runs[relu_name]["history"][-1]["l0_image_mean"]))
    assert runs[topk_name]["history"][0]["step"] == 1
    assert all(h["l0_image_mean"] == k for h in runs[topk_name]["history"])
    assert runs[topk_name]["summary"]["image_l0"] == k
    assert runs[l1_name]["l1_coefficient"] == pytest.approx(1e-2)

    # 2c: the relative cap is a fraction of the scale the free run reached, and no run ends above its cap.
    free, relative, fixed = (runs[n] for n in studies["cap"])
    assert free["name"] == relu_name and free["logit_scale_cap"] == pytest.approx(100.0)
    assert relative["logit_scale_cap"] == pytest.approx(round(0.5 * free["logit_scale_reached"], 2))
    assert relative["logit_scale_init"] == pytest.approx(min(10.0, relative["logit_scale_cap"]))
    assert fixed["logit_scale_init"] == fixed["logit_scale_cap"] == pytest.approx(5.0)
    for record in (free, relative, fixed):
        assert record["logit_scale_reached"] <= record["logit_scale_cap"] * (1 + 1e-5)
        assert all(h["logit_scale"] <= record["logit_scale_cap"] * (1 + 1e-4) for h in record["history"])

    # The numbers in the table are the runs' numbers.
    for record in runs.values():
        assert f"| {record['name']} | {record['width']} |" in table
        assert f"{100 * record['summary']['retrieval_R@1']:.1f}" in table

    # The shared-tower evaluation equals the evaluation runner on the saved model folder.
    reference = run(BenchmarkArguments(models=[f"m={runs['width64_relu']['model_dir']}"], suite="none", retrieval_datasets=[emoji_dataset_dir],
                                       interpretability=False, progress=False, output_dir=str(tmp_path / "bench")))
    (set_name, expected), = reference["models"]["m"].items()
    got = runs["width64_relu"]["eval"][set_name]
    for key in ("image_to_text_R@1", "text_to_image_R@1", "image_l0_mean", "text_l0_mean"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key

    # Resumable: a second call retrains nothing and writes the same records.
    def no_training(*a, **k):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(ablations, "train", no_training)
    again = run_grid(args)
    assert again["runs"] == runs


def test_width_study_alone_and_changed_flags_retrain(tiny_towers_dir, emoji_dataset_dir, tmp_path):
    from benchmarks.ablations import run_grid

    args = _args(tmp_path, tiny_towers_dir, emoji_dataset_dir, studies=["width"], widths=[16], num_train_epochs=1)
    first = run_grid(args)
    assert list(first["runs"]) == ["width16_relu", "width16_none"]
    assert first["runs"]["width16_none"]["summary"]["image_l0"] == 16
    assert (tmp_path / "results" / "fig2a.png").exists() and not (tmp_path / "results" / "fig2b.png").exists()
    # Different flags under the same run name: the record no longer matches, so the run trains again.
    args.num_train_epochs = 2
    second = run_grid(args)
    assert second["runs"]["width16_relu"]["steps"] == 2 * first["runs"]["width16_relu"]["steps"]


def test_bad_arguments_say_what_to_do(tmp_path):
    from benchmarks.ablations import AblationArguments, _parse_overrides, run_grid

    with pytest.raises(ValueError, match="Unknown studies"):
        run_grid(AblationArguments(studies=["depth"], output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _parse_overrides(["--learning_rate", "1e-3"])
    assert _parse_overrides(["learning_rate=5e-4", "--seed=3"]) == {"learning_rate": "5e-4", "seed": "3"}


def test_shared_tower_evaluation_equals_the_harness(tiny_towers_dir, emoji_dataset_dir, tmp_path):
    """The grid's evaluation (towers once, each run's heads on top) gives the runner's numbers, for relu and topk."""
    from transformers import AutoModel, AutoProcessor

    from benchmarks.ablations import AblationArguments, Evaluator
    from modeling_sparse_clip import SparseCLIPModel
    from modeling_sparse_clip.evaluation.runner import BenchmarkArguments, run

    cache = tmp_path / "features"
    evaluator = Evaluator(AblationArguments(suite="none", retrieval_datasets=[emoji_dataset_dir], feature_cache_dir=str(cache), progress=False))
    for activation, k in (("relu", None), ("topk", 5)):
        processor = AutoProcessor.from_pretrained(tiny_towers_dir / "processor")  # each run of the grid has its own
        model = SparseCLIPModel.from_towers(vision=AutoModel.from_pretrained(tiny_towers_dir / "vision"),
                                            text=AutoModel.from_pretrained(tiny_towers_dir / "text"),
                                            projection_dim=48, activation=activation, topk_k=k)
        folder = tmp_path / activation
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        got = evaluator(model.eval(), processor, activation)
        expected = run(BenchmarkArguments(models=[f"m={folder}"], suite="none", retrieval_datasets=[emoji_dataset_dir],
                                          interpretability=False, progress=False, output_dir=str(tmp_path / "bench")))["models"]["m"]
        assert got.keys() == expected.keys()
        for set_name in got:
            for key in ("image_to_text_R@1", "text_to_image_R@5", "image_l0_mean", "text_l0_mean", "image_active_features_percent"):
                assert got[set_name][key] == pytest.approx(expected[set_name][key], abs=1e-6), key
    # One tower pass per input (the set's images, its captions) served both models: the heads differ, the towers do not.
    assert sorted(p.name.split("_")[1] for p in cache.glob("pooled_*.safetensors")) == ["image", "text"]
    if k:
        assert got[set_name]["image_l0_mean"] == k
