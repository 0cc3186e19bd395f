"""Publishing to a Hub over HTTP (the loopback server + the real huggingface_hub client), and loading
back by repo id in a fresh process where this package cannot be imported."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import huggingface_hub.constants
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
from modeling_sparse_clip.cli.publish import main as publish_main
from modeling_sparse_clip.cli.publish import run as publish_cli
from modeling_sparse_clip.publishing import PUBLISH_OPTIONS, PublishError, push_sparse_clip_to_hub
from tests.fixtures.hub_server import HubServer

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["a photo of a flower", "a photo of a temple", "a cat"]
BENCHMARK = {
    "models": {"tiny-sparse": {"fashion_mnist": {"top1_accuracy": 0.5, "top5_accuracy": 0.9, "image_l0_mean": 12.0},
                               "emoji_captions": {"text_to_image_R@1": 0.3}}},
    "meta": {"note": "measured by benchmarks/run.py"},
}


# ----------------------------------------------------------------------------------------------
# A tiny but real model + processor: the real CLIP BPE (its first 1,000 merges) and CLIP image processor
# ----------------------------------------------------------------------------------------------
def clip_bpe_tokenizer(num_merges: int = 1000):
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 1 + num_merges]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges)


def tiny_model_and_processor():
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTextConfig, CLIPVisionConfig

    tokenizer = clip_bpe_tokenizer()
    eos, bos = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|startoftext|>"])
    text = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                          vocab_size=len(tokenizer), max_position_embeddings=16, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
    config = SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=256)
    torch.manual_seed(0)
    model = SparseCLIPModel(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def sample_images(folder: Path) -> list[Path]:
    """scikit-learn's two bundled photos (real images, no download)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, array in enumerate(load_sample_images().images):
        path = folder / f"photo{i}.png"
        Image.fromarray(array).resize((64, 48)).save(path)
        paths.append(path)
    return paths


def embed(model, processor, image_paths) -> dict:
    from PIL import Image

    inputs = processor(text=TEXTS, images=[Image.open(p).convert("RGB") for p in image_paths], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    return {"input_ids": inputs["input_ids"], "pixel_values": inputs["pixel_values"], "image_activations": out.image_activations,
            "text_activations": out.text_activations, "logits_per_image": out.logits_per_image}


def snapshot(folder: Path) -> dict:
    """Every file's bytes hash, size and mtime, and every folder: to prove nothing was written."""
    state = {}
    for p in sorted(folder.rglob("*")):
        stat = p.stat()
        state[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns) if p.is_file() else "dir"
    return state


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    model, processor = tiny_model_and_processor()
    folder = root / "tiny-sparse"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    bench = root / "results.json"
    bench.write_text(json.dumps(BENCHMARK))
    images = sample_images(root / "images")
    return {"folder": folder, "benchmark": bench, "images": images, "model": model, "processor": processor, "root": root}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    # The client as configured for this server: online, large files over git-LFS (it has no Xet).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with HubServer(tmp_path / "hub") as server:
        yield server


# ----------------------------------------------------------------------------------------------
# Loading back in a fresh process without this package
# ----------------------------------------------------------------------------------------------
LOADER = textwrap.dedent(
    """
    import json, sys, sysconfig
    # Started with -S: no site processing, so no editable-install finder; add the plain site-packages only.
    sys.path = [p for p in sys.path if p not in ("", ".") and not p.startswith(REPO)] + [SITE]
    try:
        import modeling_sparse_clip
        raise SystemExit("the package is importable: the test would prove nothing")
    except ModuleNotFoundError:
        pass
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor
    results = {}
    for repo_id in REPO_IDS:
        model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        processor = AutoProcessor.from_pretrained(repo_id)
        inputs = processor(text=TEXTS, images=[Image.open(p).convert("RGB") for p in IMAGES], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model(**inputs)
        results[repo_id] = {"input_ids": inputs["input_ids"], "pixel_values": inputs["pixel_values"],
                            "image_activations": out.image_activations, "text_activations": out.text_activations,
                            "logits_per_image": out.logits_per_image}
    torch.save(results, OUT)
    print("LOADED", sorted(results))
    """
)


def load_in_fresh_process(hub: HubServer, repo_ids: list[str], images: list[Path], tmp_path: Path) -> dict:
    out = tmp_path / "loaded.pt"
    header = (f"REPO = {str(REPO)!r}\nSITE = {sysconfig.get_paths()['purelib']!r}\nREPO_IDS = {repo_ids!r}\n"
              f"TEXTS = {TEXTS!r}\nIMAGES = {[str(p) for p in images]!r}\nOUT = {str(out)!r}\n")
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "PYTHON"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_CACHE=str(tmp_path / "hf-cache"),
               HF_MODULES_CACHE=str(tmp_path / "hf-modules"), HF_HUB_DISABLE_XET="1", TOKENIZERS_PARALLELISM="false")
    res = subprocess.run([sys.executable, "-S", "-c", header + LOADER], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "LOADED" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]
    return torch.load(out)


def assert_same_outputs(got: dict, expected: dict):
    torch.testing.assert_close(got["input_ids"], expected["input_ids"], rtol=0, atol=0)
    torch.testing.assert_close(got["pixel_values"], expected["pixel_values"], rtol=0, atol=0)
    for key in ("image_activations", "text_activations", "logits_per_image"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)
    assert (got["image_activations"] == 0).any() and (got["image_activations"] > 0).any()  # ReLU: sparse, alive


def test_publish_then_load_by_repo_id_without_the_package(hub, saved, tmp_path):
    folder = saved["folder"]
    before = snapshot(folder)
    result = push_sparse_clip_to_hub(folder, "org/tiny-sparse", benchmark_json=saved["benchmark"], endpoint=hub.endpoint, token=hub.token)
    assert snapshot(folder) == before and not (folder / "README.md").exists()  # the source folder is never written

    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    files = set(api.list_repo_files("org/tiny-sparse"))
    assert {"model.safetensors", "config.json", "configuration_sparse_clip.py", "modeling_sparse_clip.py", "processor_config.json",
            "tokenizer.json", "README.md", "benchmark_results.json"} <= files
    assert result.commit_oid == api.model_info("org/tiny-sparse").sha
    info = api.model_info("org/tiny-sparse", files_metadata=True)
    weights = next(s for s in info.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs.sha256 == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()  # went over LFS
    name, results = model_index_to_eval_results(info.card_data.to_dict()["model-index"])
    assert name == "tiny-sparse" and {(r.dataset_name, r.metric_type, r.metric_value) for r in results} == {
        ("fashion_mnist", "top1_accuracy", 0.5), ("fashion_mnist", "top5_accuracy", 0.9), ("emoji_captions", "text_to_image_R@1", 0.3)}
    assert info.pipeline_tag == "zero-shot-image-classification" and info.card_data.library_name == "transformers"

    expected = embed(saved["model"], saved["processor"], saved["images"])
    got = load_in_fresh_process(hub, ["org/tiny-sparse"], saved["images"], tmp_path)
    assert_same_outputs(got["org/tiny-sparse"], expected)


def test_folder_without_hub_code_gets_code_and_auto_map(hub, saved, tmp_path):
    import shutil

    folder = tmp_path / "bare"
    shutil.copytree(saved["folder"], folder)
    for name in ("configuration_sparse_clip.py", "modeling_sparse_clip.py"):
        (folder / name).unlink()
    config = json.loads((folder / "config.json").read_text())
    config.pop("auto_map")
    (folder / "config.json").write_text(json.dumps(config))
    before = snapshot(folder)
    push_sparse_clip_to_hub(folder, "org/bare", endpoint=hub.endpoint, token=hub.token)
    assert snapshot(folder) == before
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    assert {"configuration_sparse_clip.py", "modeling_sparse_clip.py"} <= set(api.list_repo_files("org/bare"))
    pushed = json.loads(Path(api.hf_hub_download("org/bare", "config.json", cache_dir=tmp_path / "c")).read_text())
    assert pushed["auto_map"]["AutoModel"] == "modeling_sparse_clip.SparseCLIPModel"
    card = ModelCard.load(api.hf_hub_download("org/bare", "README.md", cache_dir=tmp_path / "c"))
    assert card.data.pipeline_tag == "zero-shot-image-classification" and card.data.eval_results is None  # no benchmark given


def test_publish_model_object_as_pull_request_and_space(hub, saved, tmp_path):
    space = tmp_path / "space"
    (space / "__pycache__").mkdir(parents=True)
    (space / "app.py").write_text("import gradio as gr\n")
    (space / "requirements.txt").write_text("sparse-clip\n")
    (space / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    space_before = snapshot(space)
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("org/obj")
    main_before = api.model_info("org/obj").sha
    result = push_sparse_clip_to_hub(saved["model"], "org/obj", processor=saved["processor"], create_pr=True, space_dir=space,
                                     space_repo_id="org/obj-explorer", endpoint=hub.endpoint, token=hub.token)
    assert result.pr_url.endswith("/org/obj/discussions/1")
    assert api.model_info("org/obj").sha == main_before  # a PR does not touch main
    assert "model.safetensors" in api.list_repo_files("org/obj", revision="refs/pr/1")
    assert snapshot(space) == space_before

    space_files = set(api.list_repo_files("org/obj-explorer", repo_type="space", revision="refs/pr/1"))
    assert {"app.py", "requirements.txt", "README.md"} <= space_files and not any("__pycache__" in f for f in space_files)
    card = Path(api.hf_hub_download("org/obj-explorer", "README.md", repo_type="space", revision="refs/pr/1", cache_dir=tmp_path / "c")).read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["models"] == ["org/obj"]
    assert api.get_space_variables("org/obj-explorer")["SPARSE_CLIP_MODEL"].value == "org/obj"


def test_errors_are_clear_and_leave_the_folder_untouched(hub, saved, tmp_path, monkeypatch):
    folder = saved["folder"]
    before = snapshot(folder)
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("org/taken")

    with pytest.raises(PublishError, match=r"org/taken already exists .* exist_ok=True"):
        push_sparse_clip_to_hub(folder, "org/taken", endpoint=hub.endpoint, token=hub.token, exist_ok=False)
    with pytest.raises(PublishError, match=r"refused the token \(401 .*hf auth login"):
        push_sparse_clip_to_hub(folder, "org/new", endpoint=hub.endpoint, token="hf_not_a_token")
    with pytest.raises(PublishError, match=r"refused the token"):  # an existing repo: refused at upload instead
        push_sparse_clip_to_hub(folder, "org/taken", endpoint=hub.endpoint, token="hf_not_a_token")
    with HubServer(tmp_path / "gone") as gone:
        down = gone.endpoint
    with pytest.raises(PublishError, match=r"cannot be reached .*Connection refused.*HF_ENDPOINT"):
        push_sparse_clip_to_hub(folder, "org/new", endpoint=down, token=hub.token)
    with pytest.raises(PublishError, match=r"HF_HUB_DISABLE_XET=1"):  # hf_xet installed and not disabled
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", False)
        push_sparse_clip_to_hub(folder, "org/xet", endpoint=hub.endpoint, token=hub.token)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with pytest.raises(PublishError, match="no config.json"):
        push_sparse_clip_to_hub(saved["root"] / "images", "org/new", endpoint=hub.endpoint, token=hub.token)
    with pytest.raises(PublishError, match="space_repo_id"):
        push_sparse_clip_to_hub(folder, "org/new", space_dir=tmp_path, endpoint=hub.endpoint, token=hub.token)
    assert snapshot(folder) == before
    assert api.list_repo_files("org/taken") == [".gitattributes"]  # nothing was committed by the failures


def test_push_failing_midway_leaves_folder_and_repo_untouched(tmp_path, saved, monkeypatch):
    """The server takes the repo and small files but refuses the weights (a per-file size limit, as the
    Hub has): the push fails after the repo exists and uploads began."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    folder = saved["folder"]
    before = snapshot(folder)
    with HubServer(tmp_path / "hub", max_lfs_size=1000) as hub:
        with pytest.raises(PublishError, match=r"refused a large file .*max_shard_size"):
            push_sparse_clip_to_hub(folder, "org/limited", endpoint=hub.endpoint, token=hub.token)
        api = HfApi(endpoint=hub.endpoint, token=hub.token)
        assert api.list_repo_files("org/limited") == [".gitattributes"]  # created, but no partial commit
    assert snapshot(folder) == before


def test_model_push_to_hub_publishes_with_our_card(hub, saved, tmp_path):
    """`SparseCLIPModel.push_to_hub` hands our options to `push_sparse_clip_to_hub`: one commit with the
    processor, Hub code, benchmark results and the generated card, not transformers' bare push."""
    assert set(PUBLISH_OPTIONS) == {"commit_message", "processor", "benchmark_json", "space_dir", "space_repo_id", "endpoint", "exist_ok", "card_kwargs"}
    saved["model"].push_to_hub("org/pushed-object", processor=saved["processor"], benchmark_json=saved["benchmark"],
                               endpoint=hub.endpoint, token=hub.token, commit_message="from push_to_hub")
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    assert [c.title for c in api.list_repo_commits("org/pushed-object")] == ["from push_to_hub", "initial commit"]  # one commit
    assert {"model.safetensors", "config.json", "configuration_sparse_clip.py", "modeling_sparse_clip.py", "processor_config.json",
            "tokenizer.json", "README.md", "benchmark_results.json"} <= set(api.list_repo_files("org/pushed-object"))
    card = ModelCard.load(api.hf_hub_download("org/pushed-object", "README.md", cache_dir=tmp_path / "c"))
    assert "sparse-clip" in card.data.tags and card.data.pipeline_tag == "zero-shot-image-classification"
    assert {r.metric_type for r in card.data.eval_results} == {"top1_accuracy", "top5_accuracy", "text_to_image_R@1"}
    assert "# pushed-object" in card.text and "logit-scale cap" in card.text


def test_cli_in_process(hub, saved, tmp_path, capsys):
    result = publish_cli(["--model_dir", str(saved["folder"]), "--repo_id", "org/cli", "--benchmark_json", str(saved["benchmark"]),
                           "--endpoint", hub.endpoint, "--token", hub.token, "--license", "mit", "--datasets", "emoji,fashion_mnist"])
    assert f"Published {len(result.files)} files to {hub.endpoint}/org/cli" in capsys.readouterr().out
    info = HfApi(endpoint=hub.endpoint).model_info("org/cli")
    assert info.card_data.license == "mit" and info.card_data.datasets == ["emoji", "fashion_mnist"]
    with pytest.raises(SystemExit) as exit_info:
        publish_main(["--model_dir", str(saved["folder"]), "--repo_id", "org/cli", "--endpoint", hub.endpoint,
                      "--token", hub.token, "--exist_ok", "false"])
    assert exit_info.value.code == 1 and "error: Cannot create the model repo org/cli: the repository org/cli already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_transformers_push_to_hub_and_cli_in_fresh_processes(hub, saved, tmp_path):
    """`model.push_to_hub` / `processor.push_to_hub` (HF_ENDPOINT in the environment, as users set it)
    publish a loadable model with the generated card; the CLI runs as a command."""
    folder = saved["folder"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=hub.token, HF_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_XET="1", PYTHONPATH=str(REPO))
    cli = subprocess.run([sys.executable, "-m", "conversion.publish", "--model_dir", str(folder), "--repo_id", "org/published",
                          "--benchmark_json", str(saved["benchmark"])], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0 and "Published" in cli.stdout, cli.stderr[-3000:]
    script = textwrap.dedent(f"""
        import modeling_sparse_clip
        from transformers import AutoProcessor
        from modeling_sparse_clip import SparseCLIPModel
        model = SparseCLIPModel.from_pretrained({str(folder)!r})
        processor = AutoProcessor.from_pretrained({str(folder)!r})
        model.push_to_hub("org/pushed")
        processor.push_to_hub("org/pushed")
        model.push_to_hub("org/published", commit_message="push again")
        print("PUSHED")
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert "PUSHED" in res.stdout, res.stderr[-3000:]

    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    assert [c.title for c in api.list_repo_commits("org/published")][0] == "push again"
    # with the package installed, model.push_to_hub writes our card on a new repo too
    assert "sparse-clip" in api.model_info("org/pushed").card_data.to_dict()["tags"]
    assert "sparse-clip" in api.model_info("org/published").card_data.to_dict()["tags"]
    expected = embed(saved["model"], saved["processor"], saved["images"])
    got = load_in_fresh_process(hub, ["org/pushed", "org/published"], saved["images"], tmp_path)
    assert_same_outputs(got["org/pushed"], expected)
    assert_same_outputs(got["org/published"], expected)
