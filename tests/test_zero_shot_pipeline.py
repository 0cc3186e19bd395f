"""`pipeline("zero-shot-image-classification", model=<a saved SparseCLIP folder>)`: with the package, and
through `trust_remote_code=True` without it; its scores are the model's softmax over `logits_per_image`.
Also: a folder whose processor is transformers' own CLIPProcessor loads it without running our code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from modeling_sparse_clip import SparseCLIPModel
from tests.isolation import hide_modules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["a red flower", "a stone temple", "a dog"]
TEMPLATE = "This is a photo of {}."
# Hide the repository and an editable install of the package from a child interpreter.
BLOCK_PACKAGE = hide_modules("modeling_sparse_clip", "conversion", "training", repo=REPO) + """
try:
    import modeling_sparse_clip
    raise SystemExit("package unexpectedly importable")
except ImportError:
    pass
import builtins
def no_prompt(*args):  # transformers asks "Do you wish to run the custom code?" through input()
    raise SystemExit("PROMPTED: " + str(args)[:300])
builtins.input = no_prompt
"""


def photo():
    """A real photograph shipped with scikit-learn (no download)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg"))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_towers_dir):
    """Tiny random CLIP towers + the real CLIP BPE processor, saved as one SparseCLIP folder."""
    from modeling_sparse_clip.conversion.clip_processing import build_clip_processor

    folder = tmp_path_factory.mktemp("zero_shot") / "model"
    torch.manual_seed(0)
    model = SparseCLIPModel.from_towers(vision=str(tiny_towers_dir / "vision"), text=str(tiny_towers_dir / "text"), projection_dim=256)
    model.save_pretrained(folder)
    build_clip_processor(image_size=32, context_length=32).save_pretrained(folder)  # what conversion and training save
    return folder


def _softmax_of_logits(model, tokenizer, image_processor, image):
    text = tokenizer([TEMPLATE.format(label) for label in LABELS], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**text, **image_processor(images=[image], return_tensors="pt")).logits_per_image
    return dict(zip(LABELS, logits[0].softmax(-1).tolist()))


def test_pipeline_with_the_package(model_folder):
    from transformers import AutoModelForZeroShotImageClassification, pipeline

    assert type(AutoModelForZeroShotImageClassification.from_pretrained(model_folder)) is SparseCLIPModel
    classifier = pipeline("zero-shot-image-classification", model=str(model_folder))
    assert type(classifier.model) is SparseCLIPModel
    image = photo()
    result = classifier(image, candidate_labels=LABELS, hypothesis_template=TEMPLATE)
    expected = _softmax_of_logits(classifier.model, classifier.tokenizer, classifier.image_processor, image)
    assert [r["label"] for r in result] == sorted(LABELS, key=lambda label: -expected[label])
    for r in result:
        assert r["score"] == pytest.approx(expected[r["label"]], abs=1e-6)


@pytest.mark.slow  # a child interpreter: ~15 s uncontended
def test_pipeline_through_trust_remote_code_without_the_package(model_folder, tmp_path):
    photo().save(tmp_path / "photo.png")
    script = BLOCK_PACKAGE + textwrap.dedent(
        f"""
        import json, torch
        from PIL import Image
        from transformers import pipeline
        classifier = pipeline("zero-shot-image-classification", model={str(model_folder)!r}, trust_remote_code=True)
        assert type(classifier.model).__module__.startswith("transformers_modules"), type(classifier.model).__module__
        image = Image.open({str(tmp_path / 'photo.png')!r})
        result = classifier(image, candidate_labels={LABELS!r}, hypothesis_template={TEMPLATE!r})
        text = classifier.tokenizer([{TEMPLATE!r}.format(l) for l in {LABELS!r}], padding=True, return_tensors="pt")
        pixels = classifier.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        torch.save({{"text": dict(text), "pixel_values": pixels}}, {str(tmp_path / 'inputs.pt')!r})
        print("RESULT" + json.dumps(result))
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                         stdin=subprocess.DEVNULL)
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, res.stdout[-2000:] + res.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT"):])
    # the package's model on the very inputs the remote-code pipeline built gives the same scores
    inputs = torch.load(tmp_path / "inputs.pt")
    model = SparseCLIPModel.from_pretrained(model_folder).eval()
    with torch.no_grad():
        probs = model(**inputs["text"], pixel_values=inputs["pixel_values"]).logits_per_image[0].softmax(-1).tolist()
    expected = dict(zip(LABELS, probs))
    for r in result:
        assert r["score"] == pytest.approx(expected[r["label"]], abs=1e-6)


@pytest.mark.slow  # a child interpreter
def test_transformers_own_processor_loads_without_our_code(tiny_config, tmp_path):
    """A folder whose processor is transformers' CLIPProcessor (the embedded models': CLIPImageProcessor +
    a BERT tokenizer) names no code of ours in its processor files, and loads in a clean environment
    without running any: `trust_remote_code=False` answers the question transformers would otherwise ask
    (its AutoTokenizer always resolves the folder's config.json, whose `auto_map` names our config class)."""
    from modeling_sparse_clip.pretrained_towers import embedded_processor

    folder = tmp_path / "model"
    SparseCLIPModel(tiny_config).save_pretrained(folder)
    embedded_processor().save_pretrained(folder)
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if (folder / name).exists():
            assert "auto_map" not in (folder / name).read_text(), name
    script = BLOCK_PACKAGE + textwrap.dedent(
        f"""
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=False)
        print("LOADED", type(processor).__name__, type(processor).__module__)
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert "LOADED CLIPProcessor transformers." in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
    assert not (tmp_path / "modules").exists() or not any((tmp_path / "modules").rglob("*.py"))  # none of our code ran
