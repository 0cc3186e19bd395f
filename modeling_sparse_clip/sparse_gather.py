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

Ranks may hold different numbers of rows (the last batch of an epoch, streaming data): the header
carries each rank's rows, payloads are padded to the largest rank and cut again.

`global_nonzeros` / `send_back_to_owners` are the same exchange without the dense rebuild, for the
sparse-aware loss (`modeling_sparse_clip.sparse_contrastive_loss`), which never builds the global matrix.

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


def nonzero_positions(flat: torch.Tensor, block: int = 2**24) -> torch.Tensor:
    """Ascending positions of the non-zeros of a 1-d tensor, a block at a time: `nonzero()` on the CPU
    takes a temporary of 8 bytes per ELEMENT of its input, as large as the dense matrix twice over."""
    if flat.numel() <= block:
        return (flat != 0).nonzero().squeeze(1)
    return torch.cat([(flat[start: start + block] != 0).nonzero().squeeze(1) + start for start in range(0, flat.numel(), block)])


def gather_headers(values: list[int], device, group=None) -> torch.Tensor:
    """Every rank's small integer header (e.g. rows, width, non-zero counts): a (world, len) int64 tensor."""
    world = dist.get_world_size(group)
    header = torch.tensor(values, dtype=torch.int64, device=device)
    return torch.stack(_all_gather(header, world, group, "header"))


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    if tensor.shape[0] == rows:
        return tensor.contiguous()
    return torch.cat([tensor, tensor.new_zeros(rows - tensor.shape[0], *tensor.shape[1:])])


def _exchange_nonzeros(flat: torch.Tensor, positions: torch.Tensor, counts: list[int], index_dtype, world, group):
    """All-gather every rank's (flat position, value) pairs, padded to the largest count.
    Returns per-rank lists (positions as int64, values), trimmed to each rank's count."""
    pad = max(counts)
    send_pos = torch.zeros(pad, dtype=index_dtype, device=flat.device)
    send_val = torch.zeros(pad, dtype=flat.dtype, device=flat.device)
    send_pos[: positions.numel()] = positions.to(index_dtype)
    send_val[: positions.numel()] = flat[positions]
    all_pos = _all_gather(send_pos, world, group, "sparse_indices")
    all_val = _all_gather(send_val, world, group, "sparse_values")
    return [p[:c].long() for p, c in zip(all_pos, counts)], [v[:c] for v, c in zip(all_val, counts)]


def _send_back_sparse(grads: list[torch.Tensor], counts: list[int], world, group) -> torch.Tensor:
    """Each rank holds gradient values for every rank's non-zeros; return the sum over ranks of
    the values for this rank's own non-zeros (padded all-to-all, summed in rank order)."""
    pad = max(counts)
    chunks = []
    for g, c in zip(grads, counts):
        chunk = g.new_zeros(pad)
        chunk[:c] = g
        chunks.append(chunk)
    return _reduce_scatter(chunks, world, group, "grad_sparse_values")


class _SparseAllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, group, fallback_density, sparse_grad):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        features = features.contiguous()
        rows, width = features.shape
        flat = features.view(-1)
        positions = nonzero_positions(flat)  # ascending flat positions of the non-zeros
        # One small collective: every rank's shape and non-zero count. Ranks may hold different
        # numbers of rows (last batch of an epoch, streaming data); the width must agree.
        headers = gather_headers([rows, width, positions.numel()], features.device, group)
        if not bool((headers[:, 1] == width).all()):
            raise ValueError(f"Every rank must gather the same width; got {headers[:, 1].tolist()}.")
        sizes, counts = headers[:, 0].tolist(), headers[:, 2].tolist()
        index_dtype = torch.int32 if max(sizes) * width < 2**31 else torch.int64
        index_bytes = torch.empty((), dtype=index_dtype).element_size()
        threshold = break_even_density(features.dtype, index_bytes) if fallback_density is None else fallback_density
        ctx.group, ctx.world, ctx.rank, ctx.sizes = group, world, rank, sizes
        ctx.dense = max(c / max(s * width, 1) for c, s in zip(counts, sizes)) > threshold
        for log in _ACTIVE_LOGS:
            log.modes.append("dense" if ctx.dense else "sparse")
        if ctx.dense:
            ctx.sparse_grad = False
            parts = _all_gather(_pad_rows(features, max(sizes)), world, group, "dense_values")
            return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)

        ctx.sparse_grad = sparse_grad
        all_pos, all_val = _exchange_nonzeros(flat, positions, counts, index_dtype, world, group)
        out = torch.zeros(sum(sizes) * width, dtype=features.dtype, device=features.device)
        global_positions, offset = [], 0
        for r in range(world):
            pos = all_pos[r] + offset
            out[pos] = all_val[r]
            global_positions.append(pos)
            offset += sizes[r] * width
        if sparse_grad:
            ctx.save_for_backward(*global_positions)
            ctx.counts, ctx.local_positions = counts, positions
        return out.view(sum(sizes), width)

    @staticmethod
    def backward(ctx, grad_output):
        world, rank, sizes = ctx.world, ctx.rank, ctx.sizes
        width = grad_output.shape[1]
        # No whole-matrix .contiguous(): the incoming gradient is often a transposed matmul result,
        # and copying it would cost another global-batch x width buffer.
        if not ctx.sparse_grad:
            # Exact: each rank gets the sum over ranks of the gradient w.r.t. its own rows
            # (chunks padded to the largest rank so that the all-to-all has equal sizes).
            chunks = [_pad_rows(c, max(sizes)) if c.shape[0] != max(sizes) else c
                      for c in grad_output.split(sizes, dim=0)]
            grad = _reduce_scatter(chunks, world, ctx.group, "grad_dense")
            return grad[: sizes[rank]], None, None, None
        grads = [grad_output[pos // width, pos % width] for pos in ctx.saved_tensors]
        summed = _send_back_sparse(grads, ctx.counts, world, ctx.group)
        grad = torch.zeros(sizes[rank] * width, dtype=grad_output.dtype, device=grad_output.device)
        grad[ctx.local_positions] = summed[: ctx.counts[rank]]
        return grad.view(sizes[rank], width), None, None, None


def global_nonzeros(features: torch.Tensor, headers: torch.Tensor, group=None):
    """The global batch of (rows, width) `features` as its non-zeros only, no autograd (the sparse-aware
    loss's own backward sends the gradients back with `send_back_to_owners`).

    `headers`: `gather_headers([rows, width, nnz])` of every rank. Returns `(values, rows, cols,
    local_positions)`: global row indices in rank order and ascending (row, col) within each row (a CSR
    layout as it stands), and the flat positions of this rank's own non-zeros. With one process: its own."""
    flat = features.detach().contiguous().view(-1)
    width = features.shape[1]
    positions = nonzero_positions(flat)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return flat[positions], positions // width, positions % width, positions
    world = dist.get_world_size(group)
    sizes, counts = headers[:, 0].tolist(), headers[:, 2].tolist()
    if counts[dist.get_rank(group)] != positions.numel():
        raise ValueError("The header's non-zero count does not match these features.")
    index_dtype = torch.int32 if max(sizes) * width < 2**31 else torch.int64
    all_pos, all_val = _exchange_nonzeros(flat, positions, counts, index_dtype, world, group)
    row_offsets = [sum(sizes[:r]) for r in range(world)]
    rows = torch.cat([p // width + o for p, o in zip(all_pos, row_offsets)])
    return torch.cat(all_val), rows, torch.cat([p % width for p in all_pos]), positions


def send_back_to_owners(grad_values: torch.Tensor, counts: list[int], group=None) -> torch.Tensor:
    """`grad_values` (one per global non-zero, in `global_nonzeros` order) summed over ranks for this
    rank's own non-zeros, sent sparse. With one process: `grad_values`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return grad_values
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    return _send_back_sparse(list(grad_values.split(counts)), counts, world, group)[: counts[rank]]


def sparse_all_gather_with_grad(features: torch.Tensor, group=None, fallback_density: float | None = None,
                                sparse_grad: bool = False) -> torch.Tensor:
    """Concatenate every rank's `features` (equal widths, any number of rows per rank) sending only
    non-zeros; gradients as the dense gather's (see the module doc for `sparse_grad`). With one
    process it returns `features`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return features
    if features.dim() != 2:
        raise ValueError(f"Expected (batch, width) features, got shape {tuple(features.shape)}.")
    return _SparseAllGather.apply(features, group, fallback_density, sparse_grad)


def sparse_all_gather_with_sparse_grad(features: torch.Tensor, group=None, fallback_density: float | None = None) -> torch.Tensor:
    """`sparse_all_gather_with_grad` with `sparse_grad=True`: the backward also sends only the
    non-zero positions' gradients (exact for parameters upstream of a ReLU/TopK, see module doc)."""
    return sparse_all_gather_with_grad(features, group, fallback_density, sparse_grad=True)


__all__ = ["gather_headers", "global_nonzeros", "send_back_to_owners", "sparse_all_gather_with_grad", "sparse_all_gather_with_sparse_grad", "log_communication",
           "CommunicationLog", "break_even_density"]
