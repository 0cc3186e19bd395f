"""The generated model card: YAML metadata that parses, model-index from benchmark JSON, sparsity facts."""

import json
import math

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
from modeling_sparse_clip.model_card import BenchmarkFormatError, build_model_card, parse_benchmark, write_model_card
from tests.conftest import tiny_clip_configs

# The shape benchmarks/run.py writes: {"models": {model: {set: {metric: value}}}, "meta": {...}}, with
# counts, lists and interpretability numbers mixed in.
RUNNER_JSON = {
    "models": {
        "tiny-sparse": {
            "fashion_mnist": {"num_images": 500, "top1_accuracy": 0.612, "top5_accuracy": 0.934, "image_l0_mean": 41.5,
                              "image_l0_percent_of_width": 16.2, "text_l0_mean": 30.0, "width": 256, "clarity": 0.55,
                              "label_examples": [["shoe", 0.9]], "modality_histogram": [1, 2, 3]},
            "emoji_captions": {"text_to_image_R@1": 0.21, "image_to_text_R@1": 0.25},
        },
        "tiny-dense": {"fashion_mnist": {"top1_accuracy": 0.6, "image_l0_mean": 256.0}},
    },
    "meta": {"tau": 0.001},
}


def _front_matter(card_text: str) -> dict:
    assert card_text.startswith("---\n")
    return yaml.safe_load(card_text.split("---\n")[1])


@pytest.fixture
def saved_model(tmp_path):
    text, vision = tiny_clip_configs()
    config = SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=256, logit_scale_max=math.log(50.0))
    torch.manual_seed(0)
    model = SparseCLIPModel(config)
    folder = tmp_path / "tiny-sparse"
    model.save_pretrained(folder)
    return folder, model


def test_card_metadata_parses_and_holds_the_benchmark_model_index(saved_model, tmp_path):
    folder, model = saved_model
    bench = tmp_path / "results.json"
    bench.write_text(json.dumps(RUNNER_JSON))
    path = write_model_card(folder, repo_id="org/tiny-sparse", benchmark=bench, license="mit", datasets=["fashion_mnist"])
    text = path.read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "zero-shot-image-classification"
    assert meta["license"] == "mit" and meta["datasets"] == ["fashion_mnist"]
    assert {"sparse-clip", "clip", "interpretability"} <= set(meta["tags"])

    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "tiny-sparse"  # the folder/repo name picked its entry among two models
    got = {(r.dataset_name, r.metric_type): (r.task_type, r.metric_value) for r in results}
    assert got == {
        ("fashion_mnist", "top1_accuracy"): ("zero-shot-image-classification", 0.612),
        ("fashion_mnist", "top5_accuracy"): ("zero-shot-image-classification", 0.934),
        ("fashion_mnist", "clarity"): ("feature-interpretability", 0.55),
        ("emoji_captions", "text_to_image_R@1"): ("image-text-retrieval", 0.21),
        ("emoji_captions", "image_to_text_R@1"): ("image-text-retrieval", 0.25),
    }
    # The huggingface_hub parser reads the same thing back.
    card = ModelCard.load(path)
    assert len(card.data.eval_results) == 5 and card.data.model_name == "tiny-sparse"

    # Sparsity measurements sit with the architecture facts, as counts and shares of the width.
    assert "| measured image_l0_mean on fashion_mnist | 41.5 (16.2% of 256 dims) |" in text
    assert "| measured image_l0_percent_of_width on fashion_mnist | 16.2 |" in text
    assert "image_l0_mean" not in json.dumps(meta["model-index"])
    assert "| zero-shot-image-classification | fashion_mnist | - | top1_accuracy | 0.612 |" in text


def test_card_states_architecture_facts_and_both_ways_to_load(saved_model):
    folder, model = saved_model
    text = str(build_model_card(folder, repo_id="org/tiny-sparse", training_config={"learning_rate": 5e-4, "dataset": "emoji-pairs"}))
    n_params = sum(t.numel() for t in model.state_dict().values())
    assert f"| parameters | {n_params:,} |" in text
    assert "| embedding width | 256 (8x the narrower tower) |" in text
    assert "| activation | ReLU (the paper's method) |" in text
    assert "| logit-scale cap | 50 (stored as log 3.9120) |" in text  # linear value of the log-space cap
    assert f"| learned logit scale | {math.exp(model.config.logit_scale_init_value):.4g} |" in text
    assert "`clip_vision_model`, 2 layers, width 32, 32 px, 8 patch" in text
    assert 'AutoModel.from_pretrained("org/tiny-sparse", trust_remote_code=True)' in text
    assert 'SparseCLIPModel.from_pretrained("org/tiny-sparse")' in text
    assert "| measured L0 | not measured for this checkpoint |" in text
    assert "learning_rate: 0.0005" in text and _front_matter(text)["datasets"] == ["emoji-pairs"]
    assert "model-index" not in _front_matter(text)  # no benchmark, no invented results


def test_topk_model_and_training_config_file(tmp_path):
    text_cfg, vision_cfg = tiny_clip_configs()
    config = SparseCLIPConfig(text_config=text_cfg.to_dict(), vision_config=vision_cfg.to_dict(), projection_dim=128, activation="topk", topk_k=9)
    folder = tmp_path / "topk"
    SparseCLIPModel(config).save_pretrained(folder)
    (folder / "training_config.yaml").write_text("learning_rate: 0.001\nepochs: 3\n")
    text = str(build_model_card(folder, measured_l0={"image": 9.0, "text": 9.0}))
    assert "| activation | TopK, k = 9 (ablation) |" in text
    assert "| measured image_l0 | 9 (7.03% of 128 dims) |" in text
    assert "epochs: 3" in text
    assert "activation-topk" in _front_matter(text)["tags"]


def test_row_shaped_benchmark_json():
    rows = [
        {"task": "zero-shot-image-classification", "dataset": "digits", "metric": "accuracy", "value": 0.4, "split": "test"},
        {"task": "image-text-retrieval", "dataset": "emoji", "metric": "recall@5", "value": 0.7},
    ]
    parsed = parse_benchmark({"results": rows})
    assert [(r.task, r.dataset, r.metric, r.value, r.split) for r in parsed] == [
        ("zero-shot-image-classification", "digits", "accuracy", 0.4, "test"),
        ("image-text-retrieval", "emoji", "recall@5", 0.7, None),
    ]
    assert parse_benchmark(rows) == parsed


def test_bad_benchmark_json_says_what_is_wrong(saved_model, tmp_path):
    folder, _ = saved_model
    with pytest.raises(BenchmarkFormatError, match=r"'a', 'b'.*benchmark_model"):
        build_model_card(folder, repo_id="org/other", benchmark={"models": {"a": {"s": {"top1": 1.0}}, "b": {"s": {"top1": 0.5}}}})
    card = build_model_card(folder, repo_id="org/other", benchmark={"models": {"a": {"s": {"top1": 1.0}}, "b": {"s": {"top1": 0.5}}}}, benchmark_model="b")
    assert card.data.eval_results[0].metric_value == 0.5
    with pytest.raises(BenchmarkFormatError, match="each row needs task, dataset, metric and value"):
        parse_benchmark([{"dataset": "x", "value": 1.0}])
    with pytest.raises(BenchmarkFormatError, match="Unrecognised benchmark JSON"):
        parse_benchmark({"accuracy": 0.3})
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(BenchmarkFormatError, match="not valid JSON"):
        parse_benchmark(broken)
    with pytest.raises(ValueError, match="not a Sparse CLIP"):
        (tmp_path / "clip").mkdir()
        (tmp_path / "clip" / "config.json").write_text('{"model_type": "clip"}')
        build_model_card(tmp_path / "clip")
