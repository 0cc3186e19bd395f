"""A sparse all-gather with gradients for the global-batch contrastive loss.

Drop-in for `modeling_sparse_clip.modeling_sparse_clip.all_gather_with_grad`, passed where the loss runs
(`model(..., return_loss=True, gather_fn=sparse_all_gather_with_grad)`; the trainer's `--sparse_gather`):
each rank sends only the non-zeros of its (local_batch, width) embeddings: their flat positions
(int32 when local_batch * width < 2**31, else int64) and values, padded to the largest rank's count,
after one tiny all_gather of the counts. Every rank rebuilds the same dense global matrix the dense
gather would return, bit for bit.

Backward, two modes:
  * `sparse_grad=False` (default, exact): reduce-scatter (all-to-all + sum) of the dense gradient. Every rank receives
    sum over ranks of d(loss_rank)/d(its own rows), exactly what the dense gather returns.
  * `sparse_grad=True`: reduce-scatter only the gradient entries at the input's non-zeros (every rank
    knows all positions from the forward), and return zero elsewhere. The gradient w.r.t. the gather's
    input then equals the dense one ON the non-zeros only. It is exact for everything upstream whenever
    the input's producer has zero derivative where its output is zero: ReLU (torch's relu backward masks
    by `output > 0`), TopK-scatter, and `F.normalize` of such an output (normalize's Jacobian at a non-zero
    entry only involves the non-zero entries). That is the Sparse CLIP model's case.

Dense fallback: when the densest rank's non-zeros cost more as (index, value) pairs than as a dense
block (`density > value_bytes / (index_bytes + value_bytes)`, 1/2 for fp32 or 1/3 for bf16 with int32
indices, e.g. early in training), the plain dense all_gather and reduce-scatter run instead.

`CommunicationLog` (a context manager) records the payload bytes each collective sends from this rank.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class CommunicationLog:
    """Bytes this rank sends to its peers, by collective (all_gather and reduce_scatter each send
    (world - 1) chunks of the per-rank payload), and which mode each gather used."""

    bytes_sent: dict[str, int] = field(default_factory=dict)
    modes: list[str] = field(default_factory=list)

    def record(self, name: str, nbytes: int) -> None:
        self.bytes_sent[name] = self.bytes_sent.get(name, 0) + int(nbytes)

    @property
    def total(self) -> int:
        return sum(self.bytes_sent.values())


_ACTIVE_LOGS: list[CommunicationLog] = []


@contextlib.contextmanager
def log_communication():
    """`with log_communication() as log: ...` collects the bytes sent by sparse gathers in the block."""
    log = CommunicationLog()
    _ACTIVE_LOGS.append(log)
    try:
        yield log
    finally:
        _ACTIVE_LOGS.remove(log)


def _record(name: str, tensor: torch.Tensor, world: int) -> None:
    for log in _ACTIVE_LOGS:
        log.record(name, tensor.numel() * tensor.element_size() * (world - 1))


def _all_gather(tensor: torch.Tensor, world: int, group, name: str) -> list[torch.Tensor]:
    out = [torch.empty_like(tensor) for _ in range(world)]
    _record(name, tensor, world)
    dist.all_gather(out, tensor.contiguous(), group=group)
    return out


def _reduce_scatter(chunks: list[torch.Tensor], world: int, group, name: str) -> torch.Tensor:
    """Sum over ranks of their chunk for this rank. Done as all-to-all + a local sum in rank order,
    like the dense gather's backward (gloo's reduce_scatter sends ~2x the bytes, and the same
    summation order keeps the result bit-identical to the dense path)."""
    received = [torch.empty_like(chunks[0]) for _ in range(world)]
    _record(name, chunks[0], world)
    dist.all_to_all(received, [c.contiguous() for c in chunks], group=group)
    total = received[0]
    for other in received[1:]:  # left to right, in place: no stacked copy
        total += other
    return total


def break_even_density(dtype: torch.dtype, index_bytes: int = 4) -> float:
    """Density above which (index, value) pairs cost more bytes than the dense block."""
    value_bytes = torch.empty((), dtype=dtype).element_size()
    return value_bytes / (value_bytes + index_bytes)


class _SparseAllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, group, fallback_density, sparse_grad):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        features = features.contiguous()
        rows, width = features.shape
        flat = features.view(-1)
        positions = (flat != 0).nonzero().squeeze(1)  # ascending flat positions of the non-zeros
        # One small collective: every rank's shape and non-zero count (also catches unequal batches).
        header = torch.tensor([rows, width, positions.numel()], dtype=torch.int64, device=features.device)
        headers = torch.stack(_all_gather(header, world, group, "header"))
        if not bool((headers[:, :2] == headers[0, :2]).all()):
            raise ValueError(f"Every rank must gather the same (batch, width); got {headers[:, :2].tolist()}.")
        counts = headers[:, 2].tolist()
        index_dtype = torch.int32 if rows * width < 2**31 else torch.int64
        index_bytes = torch.empty((), dtype=index_dtype).element_size()
        threshold = break_even_density(features.dtype, index_bytes) if fallback_density is None else fallback_density
        ctx.group, ctx.world, ctx.rank, ctx.rows = group, world, rank, rows
        ctx.dense = max(counts) > threshold * rows * width
        for log in _ACTIVE_LOGS:
            log.modes.append("dense" if ctx.dense else "sparse")
        if ctx.dense:
            ctx.sparse_grad = False
            return torch.cat(_all_gather(features, world, group, "dense_values"), dim=0)

        ctx.sparse_grad = sparse_grad
        pad = max(counts)
        send_pos = torch.zeros(pad, dtype=index_dtype, device=features.device)
        send_val = torch.zeros(pad, dtype=features.dtype, device=features.device)
        send_pos[: positions.numel()] = positions.to(index_dtype)
        send_val[: positions.numel()] = flat[positions]
        all_pos = _all_gather(send_pos, world, group, "sparse_indices")
        all_val = _all_gather(send_val, world, group, "sparse_values")
        out = torch.zeros(world * rows * width, dtype=features.dtype, device=features.device)
        global_positions = []
        for r in range(world):
            pos = all_pos[r][: counts[r]].long() + r * rows * width
            out[pos] = all_val[r][: counts[r]]
            global_positions.append(pos)
        if sparse_grad:
            ctx.save_for_backward(*global_positions)
            ctx.counts, ctx.pad = counts, pad
        return out.view(world * rows, width)

    @staticmethod
    def backward(ctx, grad_output):
        world, rank, rows = ctx.world, ctx.rank, ctx.rows
        # No whole-matrix .contiguous(): the incoming gradient is often a transposed matmul result,
        # and copying it would cost another global-batch x width buffer.
        if not ctx.sparse_grad:
            # Exact: each rank gets the sum over ranks of the gradient w.r.t. its own rows.
            grad = _reduce_scatter(list(grad_output.chunk(world, dim=0)), world, ctx.group, "grad_dense")
            return grad, None, None, None
        width = grad_output.shape[1]
        chunks = []
        for r, pos in enumerate(ctx.saved_tensors):
            chunk = torch.zeros(ctx.pad, dtype=grad_output.dtype, device=grad_output.device)
            chunk[: ctx.counts[r]] = grad_output[pos // width, pos % width]
            chunks.append(chunk)
        summed = _reduce_scatter(chunks, world, ctx.group, "grad_sparse_values")
        grad = torch.zeros(rows * width, dtype=grad_output.dtype, device=grad_output.device)
        grad[ctx.saved_tensors[rank] - rank * grad.numel()] = summed[: ctx.counts[rank]]
        return grad.view(rows, width), None, None, None


def sparse_all_gather_with_grad(features: torch.Tensor, group=None, fallback_density: float | None = None,
                                sparse_grad: bool = False) -> torch.Tensor:
    """Concatenate every rank's `features` (equal shapes) sending only non-zeros; gradients as the
    dense gather's (see the module doc for `sparse_grad`). With one process it returns `features`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return features
    if features.dim() != 2:
        raise ValueError(f"Expected (batch, width) features, got shape {tuple(features.shape)}.")
    return _SparseAllGather.apply(features, group, fallback_density, sparse_grad)


def sparse_all_gather_with_sparse_grad(features: torch.Tensor, group=None, fallback_density: float | None = None) -> torch.Tensor:
    """`sparse_all_gather_with_grad` with `sparse_grad=True`: the backward also sends only the
    non-zero positions' gradients (exact for parameters upstream of a ReLU/TopK, see module doc)."""
    return sparse_all_gather_with_grad(features, group, fallback_density, sparse_grad=True)


__all__ = ["sparse_all_gather_with_grad", "sparse_all_gather_with_sparse_grad", "log_communication",
           "CommunicationLog", "break_even_density"]
