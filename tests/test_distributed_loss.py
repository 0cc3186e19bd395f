"""The global-batch loss across 2 gloo processes equals one process on the same global batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
from tests.conftest import tiny_clip_configs
from tests.isolation import free_port

GLOBAL_BATCH = 8


def _model_and_batch():
    text, vision = tiny_clip_configs()
    config = SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=128)
    torch.manual_seed(0)
    model = SparseCLIPModel(config)
    g = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(3, 99, (GLOBAL_BATCH, 10), generator=g),
        "pixel_values": torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g),
    }
    return model, batch


def _loss_and_grads(model, batch):
    out = model(**batch, return_loss=True)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, batch = _model_and_batch()
    local = {k: v.chunk(world)[rank] for k, v in batch.items()}
    loss, grads = _loss_and_grads(model, local)
    # what DDP does: average the gradients (and we average the losses for the report)
    dist.all_reduce(loss)
    for g in grads.values():
        dist.all_reduce(g)
    if rank == 0:
        torch.save({"loss": loss / world, "grads": {n: g / world for n, g in grads.items()}}, os.path.join(out_dir, "ddp.pt"))
    dist.destroy_process_group()


def test_two_gloo_processes_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    model, batch = _model_and_batch()
    loss, grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(ddp["loss"], loss, rtol=1e-5, atol=1e-6)
    assert set(ddp["grads"]) == set(grads)
    for name, g in grads.items():
        torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    # the per-GPU loss that a plain CLIPModel computes would differ: make sure this test can tell
    half = {k: v[: GLOBAL_BATCH // 2] for k, v in batch.items()}
    per_gpu = model(**half, return_loss=True).loss.detach()
    assert not torch.allclose(per_gpu, loss, atol=1e-3)


# ---- unequal local batch sizes (the last batch of an epoch, streaming data) ----------------------
UNEQUAL = (9, 7)


def _unequal_gathers():
    from modeling_sparse_clip.sparse_contrastive_loss import SparseAwareLoss
    from modeling_sparse_clip.sparse_gather import sparse_all_gather_with_grad, sparse_all_gather_with_sparse_grad

    # fallback densities forced so that the sparse code paths run on this ~50%-dense tiny model
    return {
        "dense": None,
        "sparse": lambda x: sparse_all_gather_with_grad(x, fallback_density=1.0),
        "sparse_grad": lambda x: sparse_all_gather_with_sparse_grad(x, fallback_density=1.0),
        "sparse_fallback": lambda x: sparse_all_gather_with_grad(x, fallback_density=0.0),
        "sparse_aware": SparseAwareLoss(dense_fallback_density=1.0),
        "sparse_aware_fallback": SparseAwareLoss(dense_fallback_density=0.0),
    }


UNEQUAL_MODELS = ("relu", "topk", "relu_l1")  # relu_l1: relu + the optional L1 term (a per-rank mean)


def _unequal_model(name):
    activation = name.removesuffix("_l1")
    text, vision = tiny_clip_configs()
    config = SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=128,
                              activation=activation, topk_k=12 if activation == "topk" else None,
                              l1_coefficient=0.05 if name.endswith("_l1") else 0.0)
    torch.manual_seed(0)
    return SparseCLIPModel(config)


def _unequal_batch():
    g = torch.Generator().manual_seed(1)
    n = sum(UNEQUAL)
    return {"input_ids": torch.randint(3, 99, (n, 10), generator=g), "pixel_values": torch.randn(n, 3, 32, 32, generator=g)}


def _unequal_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    batch = _unequal_batch()
    start = sum(UNEQUAL[:rank])
    local = {k: v[start: start + UNEQUAL[rank]] for k, v in batch.items()}
    results = {}
    for activation in UNEQUAL_MODELS:
        for name, gather_fn in _unequal_gathers().items():
            model = _unequal_model(activation)
            out = model(**local, return_loss=True, gather_fn=gather_fn)
            out.loss.backward()
            loss = out.loss.detach()
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            dist.all_reduce(loss)  # DDP: average of the ranks' gradients (and of their losses)
            for g in grads.values():
                dist.all_reduce(g)
            results[(activation, name)] = {"loss": loss / world, "grads": {n: g / world for n, g in grads.items()}}
    if rank == 0:
        torch.save(results, os.path.join(out_dir, "unequal.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_unequal_local_batches_match_single_process(tmp_path):
    """9 + 7 pairs on 2 gloo ranks == 16 pairs in one process: loss and every gradient, for the dense
    gather, the sparse gather (both backward modes, and its dense fallback) and the sparse-aware loss."""
    mp.spawn(_unequal_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = torch.load(tmp_path / "unequal.pt", weights_only=False)
    for activation in UNEQUAL_MODELS:
        model = _unequal_model(activation)
        loss, grads = _loss_and_grads(model, _unequal_batch())
        for name in _unequal_gathers():
            got = results[(activation, name)]
            torch.testing.assert_close(got["loss"], loss, rtol=1e-6, atol=1e-6, msg=lambda m: f"{activation}/{name} loss: {m}")
            assert set(got["grads"]) == set(grads)
            for key, g in grads.items():
                torch.testing.assert_close(got["grads"][key], g, rtol=1e-5, atol=1e-6, msg=lambda m: f"{activation}/{name} {key}: {m}")
