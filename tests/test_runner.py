"""The benchmark runner end to end: tiny Sparse CLIP / dense models and a post-hoc SAE on small real eval sets
(through the commands `sparse-clip-train-sae` and `sparse-clip-bench`)."""

import json
import unicodedata

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from modeling_sparse_clip.cli import bench, train_sae
from modeling_sparse_clip.constants import EMOJI_FONT, EMOJI_FONT_SIZE, FASHION_MNIST_DIR
from modeling_sparse_clip.data.eval_sets import EvalSet
from modeling_sparse_clip.evaluation.runner import BenchmarkArguments, run
from modeling_sparse_clip.evaluation.suites import build_suite, load_retrieval, load_zero_shot


pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_eval_set(n: int = 60) -> EvalSet:
    """scikit-learn's real 8x8 handwritten digits, upscaled to 32x32 RGB."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [Image.fromarray((255 - d * 16).clip(0, 255).astype(np.uint8)).resize((32, 32), Image.NEAREST).convert("RGB") for d in digits.images[:n]]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=DIGIT_NAMES)})
    dataset = datasets.Dataset.from_dict({"image": images, "label": digits.target[:n].tolist()}, features=features)
    return EvalSet("digits", "zero_shot", dataset, DIGIT_NAMES, ["a photo of the number {}.", "a drawing of a {}."])


def emoji_eval_set(n: int = 40) -> EvalSet:
    """Real Noto Color Emoji glyphs rendered with Pillow; two captions each (CLDR and Unicode names)."""
    import emoji

    font = ImageFont.truetype(str(EMOJI_FONT), EMOJI_FONT_SIZE)
    chars = [ch for ch in emoji.EMOJI_DATA if len(ch) == 1][:n]
    images, captions = [], []
    for ch in chars:
        image = Image.new("RGB", (136, 128), "white")
        ImageDraw.Draw(image).text((0, 0), ch, font=font, embedded_color=True)
        images.append(image)
        captions.append([emoji.EMOJI_DATA[ch]["en"].strip(":").replace("_", " "), unicodedata.name(ch).lower()])
    dataset = datasets.Dataset.from_dict({"image": images, "text": captions}, features=datasets.Features(
        {"image": datasets.Image(), "text": datasets.Sequence(datasets.Value("string"))}))
    return EvalSet("emoji", "retrieval", dataset)


def save_tiny_model(path, activation="relu", projection_dim=256, seed=0):
    from modeling_sparse_clip.conversion.clip_processing import build_clip_processor
    from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
    from tests.conftest import tiny_clip_configs

    text, vision = tiny_clip_configs(vocab=49408)
    text.max_position_embeddings = 32
    text.bos_token_id, text.eos_token_id, text.pad_token_id = 49406, 49407, 49407
    config = SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection_dim, activation=activation)
    torch.manual_seed(seed)
    SparseCLIPModel(config).eval().save_pretrained(path)
    build_clip_processor(image_size=32, context_length=32).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    sets = [digits_eval_set(), emoji_eval_set()]
    for s in sets:
        s.dataset.save_to_disk(str(root / s.name))
    digits = digits_eval_set(300).dataset.select(range(100, 300))  # a disjoint training set for the SAE
    captions = [[f"a photo of the number {DIGIT_NAMES[label]}."] for label in digits["label"]]
    digits.remove_columns("label").add_column("text", captions).save_to_disk(str(root / "digits_train"))
    from wordfreq import top_n_list

    (root / "vocab.txt").write_text("\n".join(top_n_list("en", 400)) + "\n")
    return {
        "root": root,
        "sparse": save_tiny_model(root / "sparse", "relu", 256),
        "dense": save_tiny_model(root / "dense", "none", 32, seed=1),
    }


def test_suite_loads_local_zero_shot_and_retrieval_sets(workspace):
    zero_shot = load_zero_shot(str(workspace["root"] / "digits"))
    assert zero_shot.task == "zero_shot" and zero_shot.class_names == DIGIT_NAMES and "{}" in zero_shot.templates[0]
    retrieval = load_retrieval(str(workspace["root"] / "emoji"), max_examples=10)
    assert retrieval.task == "retrieval" and len(retrieval.dataset) == 10 and len(retrieval.dataset[0]["text"]) == 2


def test_paper_suite_fails_offline_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="save_to_disk"):
        build_suite("paper")


def test_runner_end_to_end(workspace, tmp_path):
    # The post-hoc baseline: a TopK SAE trained on the dense model's image and text embeddings of
    # OTHER digits (rows 100-299, captioned with their class), then evaluated next to the models.
    root = workspace["root"]
    sae_dir = tmp_path / "sae_topk"
    train_sae.run([
        "--dense_model", workspace["dense"], "--width", "256", "--kind", "topk", "--k", "8", "--dataset", str(root / "digits_train"),
        "--output_dir", str(sae_dir), "--epochs", "20", "--batch_size", "64", "--progress", "false",
    ])
    training = json.loads((sae_dir / "training_report.json").read_text())
    assert training["num_images"] == 200 and training["num_texts"] == 200
    assert training["mse_after"] < training["mse_before"] and training["l0_mean"] <= 8

    args = [
        "--models", workspace["dense"], f"sparse={workspace['sparse']}", "--sae", str(sae_dir),
        "--suite", "none", "--zero_shot_datasets", str(root / "digits"), "--retrieval_datasets", str(root / "emoji"),
        "--vocabulary", str(root / "vocab.txt"), "--output_dir", str(tmp_path / "out"), "--batch_size", "32", "--progress", "false",
        "--cache_dir", str(tmp_path / "cache"), "--reference_image_size", "96", "--tower_cache_dir", str(tmp_path / "towers"),
    ]
    with pytest.raises(SystemExit) as exit_status:
        bench.main(args)
    assert exit_status.value.code == 0
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    models = report["models"]
    assert list(models) == ["dense", "sparse", "sae_topk"]
    for name, sets in models.items():
        assert set(sets) == {"digits", "emoji"}
        digits, emoji_set = sets["digits"], sets["emoji"]
        assert 0 <= digits["top1_accuracy"] <= digits["top5_accuracy"] <= 1
        assert 0 <= emoji_set["text_to_image_R@1"] <= emoji_set["text_to_image_R@5"] <= emoji_set["text_to_image_R@10"] <= 1
        for key in ("clarity", "clarity_random_baseline", "multimodal_fraction", "label_agreement"):
            assert np.isfinite(digits[key]) and np.isfinite(emoji_set[key]), (name, key)
        assert digits["num_images"] == 60 and emoji_set["num_images"] == 40
    # A dense model: every dimension is active (L0 = width); the ReLU model is sparser than its width.
    assert models["dense"]["digits"]["image_l0_mean"] == 32 and models["dense"]["digits"]["width"] == 32
    assert models["sparse"]["digits"]["image_l0_mean"] < 256
    # The TopK SAE's codes have at most k = 8 non-zeros.
    assert models["sae_topk"]["emoji"]["image_l0_mean"] <= 8 and models["sae_topk"]["emoji"]["width"] == 256
    meta = report["meta"]
    assert meta["vocabulary_size"] == 400 and "efficientnet_lite0" in meta["reference_image_encoder"]
    assert meta["sets"]["emoji"]["num_texts"] == 80
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| metric | dense | sparse | sae_topk |" in markdown and "Clarity" in markdown


def test_models_on_the_same_towers_share_one_tower_cache_bit_identically(workspace, tmp_path):
    """Two heads on the same frozen towers: with the shared tower cache each tower runs once per input
    set (one file per set and modality, not per model), and every number equals per-model encoding."""
    from modeling_sparse_clip import SparseCLIPModel

    root = workspace["root"]
    other = SparseCLIPModel.from_pretrained(workspace["sparse"])
    torch.manual_seed(5)
    with torch.no_grad():  # a different head, same towers
        other.visual_projection.weight.normal_(std=0.2)
        other.text_projection.weight.normal_(std=0.2)
    other.save_pretrained(root / "other_head")
    from transformers import AutoProcessor

    AutoProcessor.from_pretrained(workspace["sparse"]).save_pretrained(root / "other_head")

    def bench_run(tower_cache_dir, out):
        return run(BenchmarkArguments(
            models=[f"a={workspace['sparse']}", f"b={root / 'other_head'}"], suite="none",
            zero_shot_datasets=[str(root / "digits")], retrieval_datasets=[str(root / "emoji")], vocabulary=str(root / "vocab.txt"),
            output_dir=str(out), batch_size=32, progress=False, cache_dir=str(tmp_path / "ref"), reference_image_size=96,
            tower_cache_dir=tower_cache_dir,
        ))

    shared = bench_run(str(tmp_path / "towers"), tmp_path / "shared")
    files = sorted(p.name.split("_")[1] for p in (tmp_path / "towers").glob("pooled_*.safetensors"))
    assert files == ["image", "image", "text", "text", "text"]  # 2 sets x images, 2 sets + vocabulary x texts
    separate = bench_run("", tmp_path / "separate")
    assert json.dumps(shared["models"], sort_keys=True) == json.dumps(separate["models"], sort_keys=True)
    assert shared["models"]["a"]["digits"]["top1_accuracy"] != shared["models"]["b"]["digits"]["top1_accuracy"] or \
        shared["models"]["a"]["digits"]["image_l0_mean"] != shared["models"]["b"]["digits"]["image_l0_mean"]


def test_runner_rejects_an_empty_request(tmp_path, capsys):
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        bench.run(["--suite", "none", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_status:  # the command: one line saying what to pass
        bench.main(["--suite", "none", "--output_dir", str(tmp_path)])
    assert exit_status.value.code == 1
    assert capsys.readouterr().err.startswith("error: Nothing to evaluate: pass --models")


def test_embedded_suite_reads_the_data_package_eval_sets(workspace, tmp_path, monkeypatch):
    """The `embedded` suite takes the data package's EvalSet objects as they are: here its real
    Fashion-MNIST test set (40 images; the other embedded sets need the full corpus build)."""
    import modeling_sparse_clip.data as data
    from modeling_sparse_clip.data.eval_sets import fashion_mnist_eval

    if not FASHION_MNIST_DIR.exists():
        pytest.skip("apt dataset-fashion-mnist is not installed (make sources)")
    calls = {}

    def only_fashion_mnist(cache_dir):
        calls["cache_dir"] = cache_dir
        return {"fashion_mnist": fashion_mnist_eval(size=40)}

    monkeypatch.setattr(data, "load_eval_sets", only_fashion_mnist)
    report = run(BenchmarkArguments(
        models=[workspace["sparse"]], suite="embedded", data_cache_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"),
        vocabulary=str(workspace["root"] / "vocab.txt"), cache_dir=str(tmp_path / "cache"), reference_image_size=64, progress=False,
        label_descriptions="imagenet_classifier",  # descriptions from the reference classifier, not ground truth
    ))
    assert calls["cache_dir"] == str(tmp_path / "data")
    result = report["models"]["sparse"]["fashion_mnist"]
    assert result["num_images"] == 40 and 0 <= result["top1_accuracy"] <= 1
    # 10 classes x the data package's templates were embedded as the class prompts.
    assert report["meta"]["sets"]["fashion_mnist"]["num_texts"] % 10 == 0
    assert np.isfinite(result["clarity"]) and np.isfinite(result["label_agreement"])
