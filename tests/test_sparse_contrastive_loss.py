"""The sparse-aware loss equals the dense loss (loss 1e-6, gradients 1e-5) for relu and topk heads, in
one process and across 2 gloo processes, and never creates a (global batch x width) tensor."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from modeling_sparse_clip.modeling_sparse_clip import contrastive_loss, sparsify
from modeling_sparse_clip.sparse_contrastive_loss import SparseAwareLoss, sparse_contrastive_loss
from tests.isolation import run_ranks

WORLD, LOCAL, IN_DIM, WIDTH = 2, 8, 32, 512


def _inputs():
    g = torch.Generator().manual_seed(0)
    return {
        "x_img": torch.randn(WORLD * LOCAL, IN_DIM, generator=g), "x_txt": torch.randn(WORLD * LOCAL, IN_DIM, generator=g),
        "w_img": torch.randn(IN_DIM, WIDTH, generator=g) / math.sqrt(IN_DIM),
        "w_txt": torch.randn(IN_DIM, WIDTH, generator=g) / math.sqrt(IN_DIM),
        "log_scale": torch.tensor(math.log(20.0)),
    }


def _step(activation, rows, loss_fn):
    """Tower-free Sparse CLIP head: sparsify(x W) -> normalise -> loss; gradients of everything."""
    inputs = _inputs()
    params = {k: inputs[k].clone().requires_grad_(True) for k in ("w_img", "w_txt", "log_scale")}
    if activation == "relu":  # the shift puts the density at a few %
        img, txt = (F.relu(inputs[x][rows] @ params[w] - 1.9) for x, w in (("x_img", "w_img"), ("x_txt", "w_txt")))
    else:
        img, txt = (sparsify(inputs[x][rows] @ params[w], "topk", 12) for x, w in (("x_img", "w_img"), ("x_txt", "w_txt")))
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    img.retain_grad(), txt.retain_grad()
    loss = loss_fn(img, txt, params["log_scale"].exp())
    loss.backward()
    return {"loss": loss.detach(), "img": img.detach(), "txt": txt.detach(), "img_grad": img.grad, "txt_grad": txt.grad,
            **{f"{k}_grad": p.grad for k, p in params.items()}}


PARAM_GRADS = ("w_img_grad", "w_txt_grad", "log_scale_grad")


@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_one_process_equals_dense_loss(activation):
    dense = _step(activation, slice(None), contrastive_loss)
    sparse = _step(activation, slice(None), sparse_contrastive_loss)
    density = (dense["img"] != 0).float().mean()
    assert 0 < density < 0.1  # the sparse path runs (below DENSE_FALLBACK_DENSITY)
    torch.testing.assert_close(sparse["loss"], dense["loss"], rtol=0, atol=1e-6)
    for key in PARAM_GRADS:
        torch.testing.assert_close(sparse[key], dense[key], rtol=1e-5, atol=1e-5)
    for emb in ("img", "txt"):  # as columns, embeddings get gradient on their non-zeros only: equal there
        support = dense[emb] != 0
        torch.testing.assert_close(sparse[f"{emb}_grad"][support], dense[f"{emb}_grad"][support], rtol=1e-5, atol=1e-5)
    assert dense["w_img_grad"].abs().max() > 1e-3


def test_dense_fallback_above_the_density_threshold():
    dense = _step("relu", slice(None), contrastive_loss)
    forced = _step("relu", slice(None), lambda i, t, s: sparse_contrastive_loss(i, t, s, dense_fallback_density=0.0))
    for key in ("loss",) + PARAM_GRADS:
        assert torch.equal(forced[key], dense[key])


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any (rows x width) tensor an op creates (the
    projection weights and their gradients, IN_DIM x WIDTH, are not the loss's)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and WIDTH in t.shape and IN_DIM not in t.shape:
                self.largest = max(self.largest, t.numel())
        return out


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    results = {}
    for activation in ("relu", "topk"):
        results[(activation, "dense")] = _step(activation, rows, contrastive_loss)
        with _LargestTensor() as watch:
            results[(activation, "sparse_aware")] = _step(activation, rows, SparseAwareLoss().contrastive_loss)
        results[(activation, "largest")] = watch.largest
        with _LargestTensor() as watch:
            _step(activation, rows, contrastive_loss)
        results[(activation, "largest_dense")] = watch.largest
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sparse_loss")
    return run_ranks(_worker, WORLD, out_dir)


@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_two_processes_equal_dense_loss_and_one_process(two_ranks, activation):
    single = _step(activation, slice(None), contrastive_loss)
    for r in two_ranks:
        dense, sparse = r[(activation, "dense")], r[(activation, "sparse_aware")]
        torch.testing.assert_close(sparse["loss"], dense["loss"], rtol=0, atol=1e-6)
        for key in PARAM_GRADS:
            torch.testing.assert_close(sparse[key], dense[key], rtol=1e-5, atol=1e-5)
        for emb in ("img", "txt"):  # remote gradients travel on the non-zeros only: equal there
            support = dense[emb] != 0
            torch.testing.assert_close(sparse[f"{emb}_grad"][support], dense[f"{emb}_grad"][support], rtol=1e-5, atol=1e-5)
    # DDP's average over ranks is the single-process global-batch gradient
    loss = torch.stack([r[(activation, "sparse_aware")]["loss"] for r in two_ranks]).mean()
    torch.testing.assert_close(loss, single["loss"], rtol=0, atol=1e-6)
    for key in PARAM_GRADS:
        grad = torch.stack([r[(activation, "sparse_aware")][key] for r in two_ranks]).mean(0)
        torch.testing.assert_close(grad, single[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_no_dense_global_batch_tensor(two_ranks, activation):
    global_matrix = WORLD * LOCAL * WIDTH
    for r in two_ranks:
        assert r[(activation, "largest_dense")] >= global_matrix  # the watch sees the dense loss's global matrices
        assert r[(activation, "largest")] < global_matrix


def test_trainer_flag_uses_the_sparse_aware_loss(tmp_path):
    from transformers import TrainingArguments

    from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
    from modeling_sparse_clip.training import SparseCLIPTrainingArguments
    from modeling_sparse_clip.training.trainer import SparseCLIPTrainer
    from tests.conftest import tiny_clip_configs

    text, vision = tiny_clip_configs()
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(3, 99, (8, 10), generator=g), "pixel_values": torch.randn(8, 3, 32, 32, generator=g)}
    args = SparseCLIPTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, sparse_aware_loss=True)
    dense = SparseCLIPModel(SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=64, activation="none"))
    with pytest.raises(ValueError, match="relu or topk"):
        SparseCLIPTrainer(model=dense, args=args)
    config = SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=512, activation="topk", topk_k=8)
    torch.manual_seed(0)
    model = SparseCLIPModel(config)
    trainer = SparseCLIPTrainer(model=model, args=args)
    assert isinstance(trainer.gather_fn, SparseAwareLoss)
    sparse_loss = trainer.compute_loss(model, dict(batch))
    plain = SparseCLIPTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True))
    torch.testing.assert_close(sparse_loss, plain.compute_loss(model, dict(batch)), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_gpu_check_smoke_on_cpu():
    from benchmarks.gpu_check import main

    summary = main(["--device", "cpu", "--tiny"])
    assert summary["loss_one_device"]["exact"]
    assert all(summary["training"][m]["finite"] for m in ("CLIPModel", "SparseCLIPModel"))
