"""The global-batch contrastive loss that never builds the dense global batch (`--sparse_aware_loss`).

The dense loss (`modeling_sparse_clip.contrastive_loss`, with the dense or the sparse gather) holds
the whole global batch of both modalities as dense (global batch x width) matrices on every rank,
plus their gradients in backward: at width 55,296 and global batch 32K that is what capped the
paper's width. Here each rank keeps the global batch as its non-zeros only (`global_nonzeros`:
global row, column, value; a CSR layout as it arrives) and scores its own dense LOCAL rows against
it with sparse-dense products, a block of local rows at a time:

  forward    logits (local x global) = local (b x W) @ S^T,  S the global batch (CSR)   [torch CSR @ dense]
  backward   d local = dlogits @ S                                                 [CSR of S^T @ dense]
             d values of S = (dlogits^T @ local) sampled at S's non-zeros          [torch.sparse.sampled_addmm]

so no (global batch x width) tensor exists in forward or backward; the gradients for the remote
rows' values go back to their owners sparse (`send_back_to_owners`) and are added in place into the
one dense (local batch x width) gradient buffer per modality, like `--sparse_gather`'s sparse-gradient
mode. That buffer (what the model's relu/normalize backward needs) is the floor of the memory. Exactness: the loss and every parameter gradient upstream
of a relu/topk activation equal the dense loss's (the gradient w.r.t. an embedding is only sent on
its non-zeros, and relu/topk pass nothing back where they output zero; see `sparse_gather`'s doc).
Unequal local batch sizes are handled as in the dense loss (global row offsets, loss weight
world x local / global so that DDP's gradient average is the global-batch gradient).

Where it is not the faster path: above `DENSE_FALLBACK_DENSITY` non-zeros (early training of a relu
model, ~50% dense) sparse kernels lose to dense BLAS, and the (index, value) layout costs more memory
than dense values, so the loss switches to the dense path by itself (decided on the densest rank, so
every rank takes the same path). Measured on CPU (`python -m benchmarks.bench_loss_memory`, width
55,296, global batch 4,096, 2 ranks): 4.7x / 2.9x / 1.5x faster than the dense loss at 0.5% / 1% / 2%,
slower above ~3%; 3.7x / 3.6x / 3.2x less peak memory, whose floor is the two local gradient buffers.
Half-precision embeddings are upcast to fp32 inside the loss (sparse CPU kernels lack bf16 and the
loss is more accurate in fp32); the local upcast costs one local (b x W) fp32 copy per modality.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .modeling_sparse_clip import contrastive_loss
from .sparse_gather import gather_headers, global_nonzeros, send_back_to_owners

# Above this fraction of non-zeros (on the densest rank, either modality) the dense loss runs instead.
# Measured crossings on CPU (benchmarks/results/loss_memory.json, width 55,296, global batch 4,096): time
# at ~3%, memory at ~27%; between the two the sparse-aware loss is slower but smaller, and memory is
# what limits the width, so the switch is at 10%.
DENSE_FALLBACK_DENSITY = 0.1


def _world(group) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


class SparseColumns:
    """The global batch's sparsity pattern (n_rows x width): CSR index arrays for it and for its
    transpose, built once per step and shared by forward and backward."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, width: int):
        nnz = rows.numel()
        index = torch.int32 if max(nnz, n_rows, width) < 2**31 - 1 else torch.int64
        self.shape = (n_rows, width)
        self.crow = F.pad(torch.bincount(rows, minlength=n_rows).cumsum(0), (1, 0)).to(index)
        self.col = cols.to(index)
        # the transpose: stable sort by column keeps rows ascending within each column
        self.perm = torch.sort(cols, stable=True).indices
        self.crow_t = F.pad(torch.bincount(cols, minlength=width).cumsum(0), (1, 0)).to(index)
        self.row_t = rows[self.perm].to(index)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow_t, self.row_t, values[self.perm], self.shape[::-1])


# Local rows are processed in blocks of about this many elements (rows x width): the sparse kernels want
# a contiguous (width x rows) operand, and a block-sized copy keeps that off the peak.
BLOCK_ELEMENTS = 2**22


class _GlobalBatchLogits(torch.autograd.Function):
    """(image, text) local dense rows -> (local image x global texts, local texts x global images) logits.

    The global batch exists only as non-zeros (`global_nonzeros`). Backward: each local embedding gets one
    dense (b x W) gradient buffer, the product with the global columns, into which the gradients that every
    rank's loss sends to its non-zeros are added in place; nothing else is (b x W) or larger."""

    @staticmethod
    def forward(ctx, image, text, headers, group):
        width = image.shape[1]
        total = int(headers[:, 0].sum())
        ctx.group, ctx.counts = group, (headers[:, 2].tolist(), headers[:, 3].tolist())
        sides = []
        for local, nnz_column in ((image, 2), (text, 3)):
            values, rows, cols, positions = global_nonzeros(local, headers[:, [0, 1, nnz_column]], group)
            sides.append((values, SparseColumns(rows, cols, total, width), positions))
        (img_values, images, _), (txt_values, texts, _) = sides
        ctx.sides = sides
        ctx.save_for_backward(image, text)
        return _times(image, texts.matrix(txt_values)), _times(text, images.matrix(img_values))

    @staticmethod
    def backward(ctx, grad_per_image, grad_per_text):
        image, text = ctx.saved_tensors
        (img_values, images, img_positions), (txt_values, texts, txt_positions) = ctx.sides
        # d logits_per_image / d image (dense rows) and / d the global texts' values; the same for text
        grad_image = _times_transposed(grad_per_image, texts.transposed(txt_values), image)
        grad_txt_values = _sampled(texts.matrix(txt_values), grad_per_image, image)
        grad_text = _times_transposed(grad_per_text, images.transposed(img_values), text)
        grad_img_values = _sampled(images.matrix(img_values), grad_per_text, text)
        # what every rank's loss sent to this rank's own non-zeros, added in place
        grad_image.view(-1).index_add_(0, img_positions, send_back_to_owners(grad_img_values, ctx.counts[0], ctx.group))
        grad_text.view(-1).index_add_(0, txt_positions, send_back_to_owners(grad_txt_values, ctx.counts[1], ctx.group))
        return grad_image, grad_text, None, None


def _times(local: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """local (b x W) @ matrix^T (CSR n x W) -> (b x n), a block of local rows at a time."""
    out = local.new_empty(local.shape[0], matrix.shape[0])
    for block in _blocks(local):
        out[block] = (matrix @ local[block].t().contiguous()).t()
    return out


def _times_transposed(grad: torch.Tensor, transposed: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """grad (b x n) @ matrix (n x W), given matrix^T as CSR (W x n) -> dense (b x W)."""
    out = torch.empty_like(like)
    for block in _blocks(like):
        out[block] = (transposed @ grad[block].t().contiguous()).t()
    return out


def _sampled(matrix: torch.Tensor, grad: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """(grad^T @ local) at `matrix`'s non-zeros, in its CSR order: the gradient of its values."""
    out = torch.zeros_like(matrix.values())
    for block in _blocks(local):
        out += torch.sparse.sampled_addmm(matrix, grad[block].t(), local[block], beta=0.0).values()
    return out


def _blocks(local: torch.Tensor) -> list[slice]:
    rows = max(1, BLOCK_ELEMENTS // max(1, local.shape[1]))
    return [slice(start, start + rows) for start in range(0, local.shape[0], rows)]


def sparse_contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    group=None,
    dense_fallback_density: float = DENSE_FALLBACK_DENSITY,
) -> torch.Tensor:
    """`contrastive_loss` of L2-normalised, mostly-zero embeddings without a dense global batch.

    Same value and (upstream of relu/topk) the same gradients as the dense loss, on one process or
    under torch.distributed with any local batch sizes. Denser than `dense_fallback_density`: the
    dense loss runs (same result)."""
    rank, world = _world(group)
    rows, width = image_embeds.shape
    counts = [rows, width, int(torch.count_nonzero(image_embeds)), int(torch.count_nonzero(text_embeds))]
    if world > 1:
        headers = gather_headers(counts, image_embeds.device, group)
    else:
        headers = torch.tensor([counts], dtype=torch.int64, device=image_embeds.device)
    sizes = headers[:, 0]
    density = (headers[:, 2:].max(dim=1).values.double() / (sizes.double() * width).clamp(min=1)).max().item()
    if density > dense_fallback_density:
        return contrastive_loss(image_embeds, text_embeds, logit_scale)
    if image_embeds.dtype in (torch.float16, torch.bfloat16):
        image_embeds, text_embeds = image_embeds.float(), text_embeds.float()
    total, offset = int(sizes.sum()), int(sizes[:rank].sum())
    logits_per_image, logits_per_text = _GlobalBatchLogits.apply(image_embeds, text_embeds, headers, group)
    logits_per_image, logits_per_text = logit_scale * logits_per_image, logit_scale * logits_per_text
    labels = torch.arange(rows, device=image_embeds.device) + offset
    loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    if total != world * rows:  # unequal local batches: DDP's average of the ranks' gradients stays exact
        loss = loss * (world * rows / total)
    return loss


class SparseAwareLoss:
    """What `SparseCLIPModel(..., gather_fn=SparseAwareLoss())` (the trainer's `--sparse_aware_loss`)
    takes: `contrastive_loss` hands the whole loss to `.contrastive_loss`; called as a plain gather it
    is the sparse gather with sparse gradients."""

    def __init__(self, group=None, dense_fallback_density: float = DENSE_FALLBACK_DENSITY):
        self.group, self.dense_fallback_density = group, dense_fallback_density

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        from .sparse_gather import sparse_all_gather_with_sparse_grad

        return sparse_all_gather_with_sparse_grad(features, self.group)

    def contrastive_loss(self, image_embeds, text_embeds, logit_scale) -> torch.Tensor:
        return sparse_contrastive_loss(image_embeds, text_embeds, logit_scale, self.group, self.dense_fallback_density)


__all__ = ["DENSE_FALLBACK_DENSITY", "SparseAwareLoss", "SparseColumns", "sparse_contrastive_loss"]
