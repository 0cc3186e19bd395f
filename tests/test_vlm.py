"""The sparse-feature VLM: generation, steering hooks, save/load, training command, and steering on the real model.

Fast tests run a real Sparse CLIP architecture (pretrained EfficientNet-Lite0 + MiniLM towers, fresh 384-wide
ReLU head) on real rendered emoji; a tiny VLM learns their names in a few seconds. The semantic test
(suppressing a concept removes its word from the caption) needs the trained embedded model and VLM: it
is marked slow and skips, with the command to run, until both exist.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from interpret_fixtures import EMBEDDED_MODEL, REPO_ROOT, build_fresh_head_model, emoji_sample, render_emoji
from modeling_sparse_clip.constants import EMOJI_FONT

EMBEDDED_VLM = EMBEDDED_MODEL.parent / "vlm"

if not EMOJI_FONT.exists():
    pytest.skip("Noto Color Emoji is not installed: apt-get install fonts-noto-color-emoji", allow_module_level=True)


def tiny_vlm(tokenizer, num_features: int, seed: int = 0, feature_scale: float = 1.0):
    from modeling_sparse_clip.vlm import SparseFeatureVLMConfig, SparseFeatureVLMForConditionalGeneration
    from modeling_sparse_clip.vlm.caption_tokenizer import IMAGE_TOKEN

    torch.manual_seed(seed)
    config = SparseFeatureVLMConfig(
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64, "tie_word_embeddings": True},
        num_features=num_features, adapter_hidden_size=64, num_image_tokens=2,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), feature_scale=feature_scale,
    )
    return SparseFeatureVLMForConditionalGeneration(config)


@pytest.fixture(scope="module")
def sparse_clip_dir(tmp_path_factory):
    return build_fresh_head_model(tmp_path_factory.mktemp("sparse") / "fresh-head", projection_dim=384)


@pytest.fixture(scope="module")
def encoder(sparse_clip_dir):
    from modeling_sparse_clip.encoding import SparseCLIPEncoder

    return SparseCLIPEncoder.from_pretrained(sparse_clip_dir, cache_dir=None, progress=False)


@pytest.fixture(scope="module")
def emoji_acts(encoder):
    chars, names = emoji_sample(16)
    return encoder.encode_images(render_emoji(chars)).to_dense().numpy(), names


@pytest.fixture(scope="module")
def trained(encoder, emoji_acts):
    """A tiny VLM that has learnt the 16 emoji names from their real Sparse CLIP activations."""
    from modeling_sparse_clip.vlm import SparseFeatureCaptioner
    from modeling_sparse_clip.vlm.caption_data import CaptionCollator, SparseCaptionDataset
    from modeling_sparse_clip.vlm.caption_tokenizer import build_caption_tokenizer, build_prompt_ids
    from modeling_sparse_clip.sparse_embeddings import SparseEmbeddings

    torch.set_num_threads(1)
    acts, names = emoji_acts
    tokenizer = build_caption_tokenizer(names * 2 + ["What's in the picture?"] * 2, vocab_size=400)
    model = tiny_vlm(tokenizer, acts.shape[1], feature_scale=float(np.median(acts.max(axis=1))))
    prompt_ids = build_prompt_ids(tokenizer, model.config.num_image_tokens, model.config.prompt)
    data = SparseCaptionDataset(SparseEmbeddings.from_dense(torch.from_numpy(acts)), [[n] for n in names], tokenizer, prompt_ids)
    batch = CaptionCollator(tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(150):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return SparseFeatureCaptioner(model.eval(), tokenizer, encoder, max_new_tokens=16), losses


def test_the_vlm_learns_captions_from_sparse_features(trained, emoji_acts):
    captioner, losses = trained
    acts, names = emoji_acts
    assert losses[-1] < 0.1 * losses[0], losses[::30]
    answers = captioner.caption(acts)
    assert np.mean([a == n for a, n in zip(answers, names)]) >= 0.8, list(zip(answers, names))


def test_generation_is_deterministic_with_a_fixed_seed(trained, emoji_acts):
    captioner, _ = trained
    acts, _ = emoji_acts
    assert captioner.caption(acts) == captioner.caption(acts)  # greedy
    sampled = [captioner.caption(acts, do_sample=True, temperature=1.5, seed=seed) for seed in (0, 0, 1)]
    assert sampled[0] == sampled[1]
    assert sampled[0] != sampled[2], "different seeds gave the same 16 sampled captions: sampling is not sampling"


def test_batched_generation_matches_one_image_at_a_time(trained, emoji_acts):
    captioner, _ = trained
    acts, _ = emoji_acts
    assert captioner.caption(acts) == [captioner(row) for row in acts]


def test_empty_steering_leaves_the_caption_unchanged(trained, emoji_acts):
    from modeling_sparse_clip.interpret import SteeringEdit

    captioner, _ = trained
    acts, _ = emoji_acts
    for row in acts[:6]:
        by_words = captioner.steer_caption(row, suppress=[], boost=[], strength=0.0)
        by_edit = captioner.steer_caption(row, edit=SteeringEdit(suppress=[], boost=[], strength=0.0))
        assert by_words.edit.is_empty()
        assert by_words.before == by_words.after == by_edit.after == captioner(row)


def test_steering_edits_the_activations_before_the_adapter(trained, emoji_acts):
    """Suppressing every active feature of an image leaves the adapter nothing: the caption becomes the
    'empty image' answer; boosting a feature to SS writes exactly SS x max into the adapter's input."""
    from modeling_sparse_clip.interpret import SteeringEdit, steer

    captioner, _ = trained
    acts, _ = emoji_acts
    blank = captioner(np.zeros(acts.shape[1], np.float32))
    changed = 0
    for row in acts:
        result = captioner.steer_caption(row, edit=SteeringEdit(suppress=np.nonzero(row)[0].tolist()))
        assert result.after == blank
        changed += result.after != result.before
    assert changed >= len(acts) - 1
    edit = SteeringEdit(boost=[3], strength=2.0)
    assert steer(acts[0], edit)[3] == pytest.approx(2.0 * acts[0].max())


def test_concept_words_become_features_through_the_text_tower(trained, emoji_acts):
    from modeling_sparse_clip.interpret import concept_features

    captioner, _ = trained
    result = captioner.steer_caption(emoji_acts[0][0], suppress=["dog"], boost=["cat"], top_k=2, strength=2.0)
    assert result.features_of["dog"] == [f for f, _ in concept_features(captioner.encoder, "dog", 2)]
    assert result.edit.suppress == sorted(result.features_of["dog"])
    assert result.edit.boost == sorted(result.features_of["cat"])


def test_the_space_steering_hook_shows_captions_before_and_after(trained, emoji_acts):
    """`interpret.steer_image(captioner=...)` is what the Space's Steering tab calls."""
    from modeling_sparse_clip.interpret import steer_image

    captioner, _ = trained
    acts, names = emoji_acts
    row = acts[0]
    result = steer_image(captioner.encoder, row, suppress_features=np.nonzero(row)[0].tolist(), captioner=captioner)
    assert result.caption_before == captioner(row)
    assert result.caption_after == captioner(np.zeros_like(row))


def test_save_and_load_round_trip_gives_identical_generations(trained, emoji_acts, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from modeling_sparse_clip.vlm import SparseFeatureCaptioner

    captioner, _ = trained
    acts, _ = emoji_acts
    captioner.vlm.save_pretrained(tmp_path)
    captioner.tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"].endswith("SparseFeatureVLMForConditionalGeneration")
    assert (tmp_path / "modeling_sparse_feature_vlm.py").exists() and (tmp_path / "configuration_sparse_feature_vlm.py").exists()
    loaded = SparseFeatureCaptioner(AutoModelForImageTextToText.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path), max_new_tokens=16)
    for name, tensor in captioner.vlm.state_dict().items():
        assert torch.equal(tensor, loaded.vlm.state_dict()[name]), name
    assert loaded.caption(acts) == captioner.caption(acts)
    assert loaded.caption(acts, do_sample=True, seed=3) == captioner.caption(acts, do_sample=True, seed=3)


def test_hub_files_load_without_this_package(trained, emoji_acts, tmp_path):
    """`trust_remote_code=True` users have only transformers: the saved files must be enough."""
    captioner, _ = trained
    acts, _ = emoji_acts
    captioner.vlm.save_pretrained(tmp_path / "vlm")
    captioner.tokenizer.save_pretrained(tmp_path / "vlm")
    np.save(tmp_path / "acts.npy", acts[:4])
    expected = captioner.caption(acts[:4])
    script = f"""
import sys, json, numpy as np, torch
assert not any('modeling_sparse_clip' in m for m in sys.modules)
from transformers import AutoModelForImageTextToText, AutoTokenizer
path = {str(tmp_path / 'vlm')!r}
model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
assert 'modeling_sparse_clip' not in type(model).__module__, type(model).__module__
n = model.config.num_image_tokens
prompt = [tok.convert_tokens_to_ids('<image>')] * n + [tok.bos_token_id] + tok.encode(model.config.prompt, add_special_tokens=False)
ids = torch.tensor([prompt] * 4)
out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), image_features=torch.from_numpy(np.load({str(tmp_path / 'acts.npy')!r})),
                     max_new_tokens=16, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
print(json.dumps([t.strip() for t in tok.batch_decode(out[:, len(prompt):], skip_special_tokens=True)]))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


def test_bad_inputs_say_what_to_do(trained, emoji_acts):
    from modeling_sparse_clip.vlm import check_feature_source
    from modeling_sparse_clip.vlm.caption_tokenizer import prompt_batch

    captioner, _ = trained
    acts, _ = emoji_acts
    with pytest.raises(ValueError, match="reads 384 features"):
        captioner.caption(np.zeros((1, 100), np.float32))
    inputs = prompt_batch(captioner.tokenizer, captioner.prompt_ids[1:], 1)  # one placeholder missing
    with pytest.raises(ValueError, match="build_prompt_ids"):
        captioner.vlm(**inputs, image_features=torch.from_numpy(acts[:1]))
    config = captioner.vlm.config
    config.sparse_clip_fingerprint, saved = "0" * 16, config.sparse_clip_fingerprint
    try:
        with pytest.raises(ValueError, match="retrain the VLM"):
            check_feature_source(config, captioner.encoder)
    finally:
        config.sparse_clip_fingerprint = saved
    with pytest.raises(ValueError, match="needs the Sparse CLIP encoder"):
        type(captioner)(captioner.vlm, captioner.tokenizer).edit(suppress=["dog"])


# ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_command_end_to_end(encoder, sparse_clip_dir, tmp_path):
    """`python -m training.train_vlm CONFIG` on 48 real corpus images for a few steps: a loadable VLM + summary."""
    from modeling_sparse_clip.recipes import recipe_path
    from modeling_sparse_clip.vlm import SparseFeatureCaptioner

    out = tmp_path / "vlm"
    cmd = [sys.executable, "-m", "training.train_vlm", str(recipe_path("vlm_embedded")),
           "--sparse_clip_model", str(sparse_clip_dir), "--output_dir", str(out), "--feature_cache_dir", str(tmp_path / "cache"),
           "--max_train_samples", "48", "--max_eval_samples", "8", "--max_steps", "4", "--per_device_train_batch_size", "16",
           "--hidden_size", "32", "--num_hidden_layers", "1", "--intermediate_size", "64", "--adapter_hidden_size", "32",
           "--vocab_size", "300", "--report_to", "none", "--eval_strategy", "no", "--disable_tqdm", "true",
           "--data_cache_dir", str(REPO_ROOT / ".cache" / "data")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "SPARSE_CLIP_FEATURE_CACHE": str(tmp_path / "features")}
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "vlm_training.json").read_text())
    assert summary["steps"] == 4 and summary["train_images"] == 48
    assert np.isfinite(summary["validation_loss"]) and summary["validation_captions"]["images"] == 8
    captioner = SparseFeatureCaptioner.from_pretrained(out, encoder=encoder)
    assert captioner.vlm.config.sparse_clip_fingerprint == encoder.fingerprint()
    assert len(captioner.caption(np.zeros((2, encoder.width), np.float32))) == 2


NEEDS_TRAINED_VLM = pytest.mark.skipif(
    not (EMBEDDED_MODEL / "config.json").exists() or not (EMBEDDED_VLM / "config.json").exists(),
    reason=f"the trained embedded model ({EMBEDDED_MODEL}) or its VLM ({EMBEDDED_VLM}) is absent: run `make main`, then "
           "`sparse-clip-train-vlm vlm_embedded`",
)


@pytest.fixture(scope="module")
def suppression_trials():
    """Held-out Fashion-MNIST images (corpus test split, 20 per class, the benchmark's images) whose VLM caption names
    their class, and a function K -> (rate at which suppressing the class word's top-K text-tower features removes
    the word, the same rate when K features of ANOTHER class are suppressed instead: the control)."""
    from benchmarks.eval_vlm_steering import mentions, select_concept_images
    from modeling_sparse_clip.data import build_corpus
    from modeling_sparse_clip.interpret import SteeringEdit, concept_features, steer
    from modeling_sparse_clip.vlm import SparseFeatureCaptioner
    from modeling_sparse_clip.vlm.feature_cache import cached_image_activations

    captioner = SparseFeatureCaptioner.from_pretrained(EMBEDDED_VLM, encoder=EMBEDDED_MODEL)
    test = build_corpus(cache_dir=REPO_ROOT / ".cache" / "data")["test"]
    rows, words = select_concept_images(test, ["fashion_mnist"], 200, seed=0)["fashion_mnist"]
    acts = cached_image_activations(captioner.encoder, test.select(rows)).to_dense().numpy()
    before = captioner.caption(acts)
    named = [i for i, (b, w) in enumerate(zip(before, words)) if mentions(b, w)]
    labels = sorted(set(words))
    rng = np.random.default_rng(0)
    other = {i: str(rng.choice([label for label in labels if label != words[i]])) for i in named}
    results = {}

    def trial(k: int):
        features = {w: [f for f, _ in concept_features(captioner.encoder, w, k)] for w in labels}
        own = captioner.caption(np.stack([steer(acts[i], SteeringEdit(suppress=features[words[i]])) for i in named]))
        control = captioner.caption(np.stack([steer(acts[i], SteeringEdit(suppress=features[other[i]])) for i in named]))
        results[k] = {
            "word_removed_rate": float(np.mean([not mentions(a, words[i]) for a, i in zip(own, named)])),
            "control_removed_rate": float(np.mean([not mentions(a, words[i]) for a, i in zip(control, named)])),
            "examples": [{"label": words[i], "before": before[i], "after": a} for a, i in list(zip(own, named))[::16]],
        }
        report = {"images": len(rows), "captions_naming_their_label": len(named), "by_top_k": results}
        out = REPO_ROOT / "test-artifacts" / "vlm"
        out.mkdir(parents=True, exist_ok=True)
        (out / "suppression.json").write_text(json.dumps(report, indent=2))
        print(f"\nsuppress top-{k}:", json.dumps(results[k], indent=1))
        return results[k]

    assert len(named) >= 0.5 * len(rows), f"the VLM names the class of only {len(named)} of {len(rows)} held-out images"
    return trial


@pytest.mark.slow
@NEEDS_TRAINED_VLM
def test_suppressing_a_concept_removes_its_word_specifically(suppression_trials):
    """What holds on the embedded model: suppression is SPECIFIC (the word goes when its own features are zeroed,
    almost never when as many features of another class are) and grows with K. Measured (2026-11, embedded model
    L0 ~ 72, VLM of the vlm_embedded recipe): K=16 -> 22% removed vs 0% control; K=64 -> 48% vs 0.6%."""
    k16 = suppression_trials(16)
    assert k16["word_removed_rate"] >= 0.10 and k16["word_removed_rate"] >= 5 * max(k16["control_removed_rate"], 0.01), k16
    k64 = suppression_trials(64)
    assert k64["word_removed_rate"] > k16["word_removed_rate"] and k64["control_removed_rate"] <= 0.05, (k16, k64)


@pytest.mark.slow
@NEEDS_TRAINED_VLM
@pytest.mark.xfail(strict=True, reason="Measured NOT to hold on the embedded model: zeroing a class word's top-2 features removes the word "
                   "from only ~4% of the captions that named it (a Fashion-MNIST class is spread over ~100 active features; "
                   "see benchmarks/results/vlm_steering). strict: a model on which it holds turns this into a failure to revisit.")
def test_suppressing_a_concept_removes_its_word_in_a_clear_majority(suppression_trials):
    """The issue's claim at the paper's operating point (1-2 features): a clear majority = at least 2 in 3 captions."""
    assert suppression_trials(2)["word_removed_rate"] >= 2 / 3


def test_input_top_k_reads_only_the_strongest_features(trained, emoji_acts):
    """With input_top_k, the adapter sees each image's k largest activations: editing a weaker feature changes
    nothing, boosting one above the others puts it in."""
    captioner, _ = trained
    acts, _ = emoji_acts
    model = tiny_vlm(captioner.tokenizer, acts.shape[1], seed=1)
    model.config.input_top_k = model.adapter.input_top_k = 8
    features = torch.from_numpy(acts[:4])
    kept = model.adapter.keep_top_k(features)
    assert ((kept > 0).sum(dim=1) == 8).all()
    assert torch.equal(kept.topk(8).values, features.topk(8).values)
    weak = features.clone()
    ranks = features[0].argsort(descending=True)
    weak[0, ranks[20]] = 0.0  # the 21st strongest feature
    assert torch.equal(model.adapter(weak), model.adapter(features))
    boosted = features.clone()
    boosted[0, ranks[20]] = 2 * features[0].max()
    assert not torch.equal(model.adapter(boosted)[0], model.adapter(features)[0])
    with pytest.raises(ValueError, match="input_top_k"):
        type(model.config)(num_features=16, input_top_k=32)
