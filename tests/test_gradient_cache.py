"""Gradient caching (`--gradient_cache_chunk_size`): chunks of 3 on 16 pairs give the unchunked gradients,
with dropout replayed from the saved RNG state, directly and through `SparseCLIPTrainer.training_step`."""

import torch
from transformers import TrainingArguments

from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
from modeling_sparse_clip.training.gradient_cache import embed_chunk, gradient_cache_step, split_batch
from modeling_sparse_clip.training.trainer import SparseCLIPTrainer
from tests.conftest import tiny_clip_configs

PAIRS, CHUNK = 16, 3


def _model(attention_dropout: float = 0.0, activation: str = "relu"):
    text, vision = tiny_clip_configs()
    text.attention_dropout = vision.attention_dropout = attention_dropout
    config = SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=128,
                              activation=activation, topk_k=16 if activation == "topk" else None, l1_coefficient=1e-3)
    torch.manual_seed(0)
    return SparseCLIPModel(config).train()


def _batch():
    g = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(3, 99, (PAIRS, 10), generator=g),
        "attention_mask": torch.ones(PAIRS, 10, dtype=torch.long),
        "pixel_values": torch.randn(PAIRS, 3, 32, 32, generator=g),
    }


def _grads(model):
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _assert_same(got: dict, want: dict):
    assert set(got) == set(want) and len(want) > 10
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_chunks_of_three_equal_the_unchunked_step():
    model, batch = _model(), _batch()
    loss = model(**batch, return_loss=True).loss
    loss.backward()
    want = _grads(model)
    out = gradient_cache_step(model, batch, CHUNK)
    torch.testing.assert_close(out.loss, loss.detach(), rtol=1e-6, atol=1e-6)
    assert [len(c["input_ids"]) for c in split_batch(batch, CHUNK)] == [3, 3, 3, 3, 3, 1]
    _assert_same(_grads(model), want)


def test_dropout_masks_are_replayed():
    """With dropout, the reference is the same chunked forward kept with its graph (same RNG stream):
    replaying the saved RNG state gives its gradients; a re-run with fresh masks would not."""
    model, batch = _model(attention_dropout=0.3), _batch()
    torch.manual_seed(123)
    parts = [embed_chunk(model, c) for c in split_batch(batch, CHUNK)]
    image, text = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    model.forward_from_activations(image, text, return_loss=True).loss.backward()
    want = _grads(model)
    torch.manual_seed(123)
    gradient_cache_step(model, batch, CHUNK)
    _assert_same(_grads(model), want)
    # the test can tell: fresh dropout masks in the second pass change the gradients
    torch.manual_seed(123)
    with torch.no_grad():
        [embed_chunk(model, c) for c in split_batch(batch, CHUNK)]
    fresh = gradient_cache_step(model, batch, CHUNK)  # noqa: F841 (RNG stream now differs from the reference)
    got = _grads(model)
    assert any(not torch.allclose(got[n], want[n], rtol=1e-5, atol=1e-6) for n in want)


def test_trainer_training_step_with_gradient_cache(tmp_path):
    batch = _batch()
    steps = {}
    for chunk in (None, CHUNK):
        model = _model(activation="topk")
        args = TrainingArguments(output_dir=str(tmp_path / str(chunk)), report_to=[], use_cpu=True)
        trainer = SparseCLIPTrainer(model=model, args=args, gradient_cache_chunk_size=chunk)
        trainer.current_gradient_accumulation_steps = 1  # set by the training loop
        loss = trainer.training_step(trainer.model, dict(batch))
        steps[chunk] = (loss.detach(), _grads(model))
    torch.testing.assert_close(steps[CHUNK][0], steps[None][0], rtol=1e-6, atol=1e-6)
    _assert_same(steps[CHUNK][1], steps[None][1])
