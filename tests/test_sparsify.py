"""Sparsifying a dense model: the wide-head initialisations (the SAE-encoder init IS the SAE at step 0,
the towers are shared and untouched) and fine-tuning on cached tower outputs lowers L0."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import render_emoji_pairs, tiny_clip_configs
from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.sae import SAEConfig, SparseAutoencoder, train_sae
from modeling_sparse_clip.training.sparsify_finetune import fine_tune_from_dense, wide_model_from_dense

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dense_model(seed=0):
    text, vision = tiny_clip_configs(vocab=49408)
    text.max_position_embeddings = 32
    text.bos_token_id, text.eos_token_id, text.pad_token_id = 49406, 49407, 49407
    torch.manual_seed(seed)
    config = SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16, activation="none",
                              logit_scale_init_value=math.log(10.0), logit_scale_max=math.log(20.0))
    return SparseCLIPModel(config).eval()


@pytest.fixture(scope="module")
def setup():
    from modeling_sparse_clip.conversion.clip_processing import build_clip_processor

    processor = build_clip_processor(image_size=32, context_length=32)
    pairs = render_emoji_pairs(48)
    dense = _dense_model()
    encoder = SparseCLIPEncoder(dense, processor, batch_size=16, progress=False)
    pooled_images = encoder.pool_images([p[0] for p in pairs])
    pooled_texts = encoder.pool_texts([p[1] for p in pairs])
    features = {"image": pooled_images, "text": pooled_texts, "text_offsets": torch.arange(len(pairs) + 1)}
    return dense, processor, features


def test_sae_encoder_init_gives_the_sae_activations_at_step_0(setup):
    dense, _, features = setup
    with torch.no_grad():
        embeddings = torch.cat([dense.project_image(features["image"]), dense.project_text(features["text"])])
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(input_dim=16, width=64, kind="relu_l1", l1_coefficient=1e-3, bias=False))
    train_sae(sae, embeddings, epochs=5, batch_size=32, progress=False)
    assert sae.b_enc.abs().max() == 0 and sae.b_dec.abs().max() == 0  # bias=False: they stay zero
    tower_before = {k: v.clone() for k, v in dense.vision_model.state_dict().items()}

    wide = wide_model_from_dense(dense, 64, "sae", sae=sae)
    assert wide.config.activation == "relu" and wide.config.projection_dim == 64
    assert wide.vision_model is dense.vision_model  # the towers are shared, not re-initialised
    assert all(torch.equal(v, tower_before[k]) for k, v in dense.vision_model.state_dict().items())
    with torch.no_grad():
        for project_dense, project_wide, pooled in ((dense.project_image, wide.project_image, features["image"]),
                                                     (dense.project_text, wide.project_text, features["text"])):
            z_dense = project_dense(pooled)
            codes = sae.encode(z_dense)
            acts = project_wide(pooled)
            # the head gives the SAE's codes scaled by |dense embedding|: same support, same cosines
            torch.testing.assert_close(acts, codes * z_dense.norm(dim=-1, keepdim=True), rtol=1e-4, atol=1e-5)
            assert 0 < (acts > 0).float().mean() < 1
            torch.testing.assert_close(F.normalize(acts, dim=-1), F.normalize(codes, dim=-1), rtol=1e-4, atol=1e-5)
    assert wide.logit_scale.item() == pytest.approx(dense.logit_scale.item())


def test_rotation_and_random_inits(setup):
    dense, _, features = setup
    rotation = wide_model_from_dense(dense, 64, "rotation")
    random = wide_model_from_dense(dense, 64, "random")
    with torch.no_grad():
        u = rotation.project_image(features["image"])
        z = dense.project_image(features["image"])
        # the signed rotation is lossless: half the units fire, and ||u|| = ||z||
        assert (u > 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
        torch.testing.assert_close(u.norm(dim=-1), z.norm(dim=-1), rtol=1e-4, atol=1e-5)
    assert not torch.equal(random.visual_projection.weight, rotation.visual_projection.weight)
    with pytest.raises(ValueError, match="needs the trained SAE"):
        wide_model_from_dense(dense, 64, "sae")
    with pytest.raises(ValueError, match="unknown"):
        wide_model_from_dense(dense, 64, "tiled")


def test_sparsify_fine_tuning_lowers_l0(setup, tmp_path):
    from modeling_sparse_clip.training.arguments import SparseCLIPTrainingArguments

    dense, processor, features = setup
    args = SparseCLIPTrainingArguments(
        output_dir=str(tmp_path / "rotation"), max_steps=40, per_device_train_batch_size=16, learning_rate=1e-2,
        logging_steps=5, save_steps=1000, use_cpu=True, report_to="none", disable_tqdm=True, seed=0,
        evolution_fractions="0.5,1.0", dataloader_num_workers=0,
    )
    trainer = fine_tune_from_dense(dense, processor, features, "rotation", args, width=64)
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert logs[0]["l0_image_mean"] > logs[-1]["l0_image_mean"]
    start = SparseCLIPModel.from_pretrained(tmp_path / "rotation" / "step_0")
    end = SparseCLIPModel.from_pretrained(tmp_path / "rotation")
    assert (tmp_path / "rotation" / "evolution" / "progress_050").is_dir()
    with torch.no_grad():
        l0_start = (start.project_image(features["image"]) > 0).float().sum(-1).mean()
        l0_end = (end.project_image(features["image"]) > 0).float().sum(-1).mean()
    assert l0_start == pytest.approx(32, abs=2)  # 50% of 64 at step 0
    assert l0_end < l0_start
    # the towers did not train (heads only, on the cache)
    assert torch.equal(end.vision_model.state_dict()[next(iter(end.vision_model.state_dict()))],
                       dense.vision_model.state_dict()[next(iter(dense.vision_model.state_dict()))])


def test_sparsify_command_on_a_dense_folder(setup, emoji_dataset_dir, tmp_path):
    """The user's path: a dense Sparse CLIP folder + image-text pairs -> a wide ReLU model (SAE init, the SAE trained here)."""
    from modeling_sparse_clip.cli import sparsify

    dense, processor, _ = setup
    dense.save_pretrained(tmp_path / "dense")
    processor.save_pretrained(tmp_path / "dense")
    summary = sparsify.run([
        "--dense_model", str(tmp_path / "dense"), "--init", "sae", "--width", "64", "--sae_epochs", "2", "--dataset", emoji_dataset_dir,
        "--output_dir", str(tmp_path / "sparse"), "--data_cache_dir", str(tmp_path / "cache"), "--max_steps", "3",
        "--per_device_train_batch_size", "16", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
    ])
    assert summary["steps"] == 3
    model = SparseCLIPModel.from_pretrained(tmp_path / "sparse")
    assert model.config.activation == "relu" and model.config.projection_dim == 64
    assert (tmp_path / "sparse" / "sae_init" / "sae.safetensors").exists()
    assert list((tmp_path / "cache" / "tower_features").glob("*.safetensors"))
    with pytest.raises(ValueError, match="--dense_model"):
        sparsify.run(["--output_dir", str(tmp_path / "x")])


def test_best_init_prefers_the_goal_then_sparsity_then_accuracy():
    from modeling_sparse_clip.training.main_job import best_init

    def row(l0, gap):
        return {"image_l0_percent": l0, "text_l0_percent": l0, "max_gap_to_dense_points": gap, "meets_goal": l0 <= 2 and gap <= 1}

    curves = {"curves": {"rotation": [row(50, 0.0), row(3.0, 0.2)], "sae": [row(1.0, 4.0)], "random": [row(1.5, 2.0)]}}
    assert best_init(curves, ["rotation", "sae", "random"]) == "random"  # none meets the goal; the sparse ones: smaller gap
    curves["curves"]["sae"].append(row(1.8, 0.5))
    assert best_init(curves, ["rotation", "sae", "random"]) == "sae"  # meets the goal
    assert best_init({"curves": {"rotation": [row(9, 0.1)], "random": [row(8, 3.0)]}}, ["rotation", "random"]) == "rotation"
