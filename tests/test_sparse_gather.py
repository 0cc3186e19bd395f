"""The sparse all-gather gives the dense gather's loss and gradients (2 real gloo processes), and
both equal a single process on the same global batch; at low density and in dense-fallback mode."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from modeling_sparse_clip.modeling_sparse_clip import all_gather_with_grad, contrastive_loss
from modeling_sparse_clip.sparse_gather import (
    break_even_density,
    log_communication,
    sparse_all_gather_with_grad,
    sparse_all_gather_with_sparse_grad,
)
from tests.isolation import run_ranks

WORLD, LOCAL_BATCH, IN_DIM, WIDTH = 2, 4, 32, 512
# A shift before the ReLU sets the density: a few % ("low"), or ~70% ("high": past the fp32
# break-even density of 1/2, so the sparse gather falls back to dense by itself).
SHIFTS = {"low": 1.9, "high": -0.5}


def _inputs():
    g = torch.Generator().manual_seed(0)
    return {
        "x_img": torch.randn(WORLD * LOCAL_BATCH, IN_DIM, generator=g),
        "x_txt": torch.randn(WORLD * LOCAL_BATCH, IN_DIM, generator=g),
        "w_img": torch.randn(IN_DIM, WIDTH, generator=g) / math.sqrt(IN_DIM),
        "w_txt": torch.randn(IN_DIM, WIDTH, generator=g) / math.sqrt(IN_DIM),
        "log_scale": torch.tensor(math.log(20.0)),
    }


def _step(inputs, shift, rows, gather_fn):
    """Tower-free Sparse CLIP head: relu(x W - shift) -> normalise -> contrastive loss."""
    params = {k: inputs[k].clone().requires_grad_(True) for k in ("w_img", "w_txt", "log_scale")}
    img = F.normalize(F.relu(inputs["x_img"][rows] @ params["w_img"] - shift), dim=-1)
    txt = F.normalize(F.relu(inputs["x_txt"][rows] @ params["w_txt"] - shift), dim=-1)
    img.retain_grad(), txt.retain_grad()
    loss = contrastive_loss(img, txt, params["log_scale"].exp(), gather_fn)
    loss.backward()
    return {
        "loss": loss.detach(),
        "img": img.detach(), "txt": txt.detach(),
        "img_grad": img.grad, "txt_grad": txt.grad,
        **{f"{k}_grad": p.grad for k, p in params.items()},
    }


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    inputs = _inputs()
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    gathers = {
        "dense": all_gather_with_grad,
        "sparse": sparse_all_gather_with_grad,
        "sparse_grad": sparse_all_gather_with_sparse_grad,
        "forced_fallback": lambda x: sparse_all_gather_with_grad(x, fallback_density=0.0),
    }
    results = {}
    for density, shift in SHIFTS.items():
        for name, fn in gathers.items():
            with log_communication() as log:
                out = _step(inputs, shift, rows, fn)
            out["modes"], out["bytes"] = log.modes, log.total
            results[(density, name)] = out
    # Half-precision values travel and rebuild bit-exactly too.
    x = F.relu(torch.randn(LOCAL_BATCH, WIDTH, generator=torch.Generator().manual_seed(rank)) - 1.5).to(torch.bfloat16)
    results["bf16_equal"] = torch.equal(sparse_all_gather_with_grad(x), all_gather_with_grad(x))
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("gather")
    return run_ranks(_worker, WORLD, out_dir)


def _single_process(shift):
    return _step(_inputs(), shift, slice(None), lambda x: x)


def test_densities_are_what_the_test_claims(results):
    low = torch.cat([r[("low", "dense")]["img"] for r in results])
    high = torch.cat([r[("high", "dense")]["img"] for r in results])
    assert 0 < (low != 0).float().mean() < 0.05
    # Enough non-zeros per row that the normalised rows have non-trivial gradients.
    assert (low != 0).sum(1).min() >= 2 and (low != 0).sum(1).float().mean() >= 8
    for r in results:
        assert r[("low", "dense")]["w_img_grad"].abs().max() > 1e-3
    assert (high != 0).float().mean() > break_even_density(torch.float32)


@pytest.mark.parametrize("density", ["low", "high"])
@pytest.mark.parametrize("name", ["sparse", "forced_fallback"])
def test_exact_mode_equals_dense_gather_bitwise(results, density, name):
    for r in results:
        dense, sparse = r[(density, "dense")], r[(density, name)]
        for key in ("loss", "img_grad", "txt_grad", "w_img_grad", "w_txt_grad", "log_scale_grad"):
            assert torch.equal(sparse[key], dense[key]), (density, name, key)


def test_modes_and_fallback(results):
    for r in results:
        assert r[("low", "sparse")]["modes"] == ["sparse", "sparse"]
        assert r[("high", "sparse")]["modes"] == ["dense", "dense"]
        assert r[("low", "forced_fallback")]["modes"] == ["dense", "dense"]
        # At ~4% density the sparse forward sends far fewer bytes than the dense fallback.
        assert r[("low", "sparse_grad")]["bytes"] * 5 < r[("low", "forced_fallback")]["bytes"]


@pytest.mark.parametrize("density", ["low", "high"])
def test_sparse_grad_mode_exact_upstream_of_relu(results, density):
    for r in results:
        dense, sparse = r[(density, "dense")], r[(density, "sparse_grad")]
        assert torch.equal(sparse["loss"], dense["loss"])
        for key in ("w_img_grad", "w_txt_grad", "log_scale_grad"):
            assert torch.equal(sparse[key], dense[key]), (density, key)
        if sparse["modes"] == ["sparse", "sparse"]:
            # W.r.t. the gather input: equal on the non-zeros; off them the gradient is not sent.
            for emb in ("img", "txt"):
                support = dense[emb] != 0
                assert torch.equal(sparse[f"{emb}_grad"][support], dense[f"{emb}_grad"][support])
                assert not torch.equal(sparse[f"{emb}_grad"], dense[f"{emb}_grad"])


@pytest.mark.parametrize("density", ["low", "high"])
@pytest.mark.parametrize("name", ["dense", "sparse", "sparse_grad", "forced_fallback"])
def test_two_processes_equal_one_process_on_the_global_batch(results, density, name):
    single = _single_process(SHIFTS[density])
    # DDP averages rank gradients; the global loss is the mean of the ranks' local losses.
    loss = torch.stack([r[(density, name)]["loss"] for r in results]).mean()
    torch.testing.assert_close(loss, single["loss"], rtol=1e-6, atol=1e-7)
    for key in ("w_img_grad", "w_txt_grad", "log_scale_grad"):
        grad = torch.stack([r[(density, name)][key] for r in results]).mean(0)
        torch.testing.assert_close(grad, single[key], rtol=1e-5, atol=1e-7)


def test_bf16_values_rebuild_bit_exactly(results):
    assert all(r["bf16_equal"] for r in results)
