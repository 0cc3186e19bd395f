"""Gradient caching (GradCache, Gao et al. 2021) for the global-batch contrastive loss
(`--gradient_cache_chunk_size N`): the loss sees the whole batch while the towers only ever hold
the graph of N pairs.

  1. embedding pass without a graph, chunk by chunk (the RNG state before each chunk is kept);
  2. the loss on the whole batch from those embeddings (as leaves), backward to them and to the
     parameters the loss uses directly (the logit scale);
  3. each chunk again, with its graph and the RNG state of step 1 (same dropout masks), backward
     from its cached embedding gradient.

The parameter gradients equal those of one unchunked step (same dropout masks); the towers' activation
memory is that of N pairs, at the cost of a second tower forward. Towers with BatchNorm in training
mode see chunk statistics instead of batch statistics (frozen towers run in eval mode: no change).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import get_device_states, set_device_states

TOWER_INPUTS = ("pixel_values", "input_ids", "attention_mask", "position_ids", "token_type_ids")
CACHED_INPUTS = ("image_tower_embeds", "text_tower_embeds")


class RandomState:
    """The CPU and accelerator RNG states at construction; `restore()` puts them back (dropout replay)."""

    def __init__(self, *tensors: torch.Tensor):
        self.cpu = torch.get_rng_state()
        self.devices, self.states = get_device_states(*tensors)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        set_device_states(self.devices, self.states)


def split_batch(inputs: dict, chunk_size: int) -> list[dict]:
    """Chunks of at most `chunk_size` pairs; tensors whose first dimension is the batch are split."""
    size = next(v.shape[0] for k, v in inputs.items() if k in TOWER_INPUTS + CACHED_INPUTS and v is not None)
    chunks = []
    for start in range(0, size, chunk_size):
        chunks.append({k: v[start: start + chunk_size] if torch.is_tensor(v) and v.dim() and v.shape[0] == size else v
                       for k, v in inputs.items()})
    return chunks


def embed_chunk(model, chunk: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-activation (un-normalised) image and text features of one chunk."""
    if chunk.get("image_tower_embeds") is not None and chunk.get("text_tower_embeds") is not None:
        return model.project_image(chunk["image_tower_embeds"]), model.project_text(chunk["text_tower_embeds"])
    image = model.get_image_features(pixel_values=chunk["pixel_values"]).pooler_output
    text = model.get_text_features(**{k: chunk[k] for k in TOWER_INPUTS[1:] if chunk.get(k) is not None}).pooler_output
    return image, text


def gradient_cache_step(
    model,
    inputs: dict,
    chunk_size: int,
    gather_fn: Callable | None = None,
    loss_backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
):
    """One GradCache forward+backward of `model` (an unwrapped `SparseCLIPModel`) on `inputs`.

    `loss_backward(loss)` runs the loss's backward (the trainer passes its scaled `accelerator.backward`);
    the chunks' backward reuses the gradient it left on the embeddings, so any loss scaling carries over.
    Returns the model output of step 2 (loss over the whole batch, activations, L0)."""
    chunks = split_batch(inputs, chunk_size)
    states, images, texts = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandomState(*[v for v in chunk.values() if torch.is_tensor(v)]))
            image, text = embed_chunk(model, chunk)
            images.append(image)
            texts.append(text)
    after = RandomState(*[v for v in inputs.values() if torch.is_tensor(v)])
    image = torch.cat(images).requires_grad_(True)
    text = torch.cat(texts).requires_grad_(True)
    del images, texts
    outputs = model.forward_from_activations(image, text, return_loss=True, gather_fn=gather_fn)
    loss_backward(outputs.loss)
    image_grad, text_grad = image.grad, text.grad
    start = 0
    for chunk, state in zip(chunks, states):
        state.restore()
        chunk_image, chunk_text = embed_chunk(model, chunk)
        stop = start + chunk_image.shape[0]
        torch.autograd.backward([chunk_image, chunk_text], [image_grad[start:stop], text_grad[start:stop]])
        start = stop
    after.restore()  # the RNG stream continues as after one embedding pass
    outputs.loss = outputs.loss.detach()
    return outputs


def all_reduce_gradients(model) -> None:
    """Average parameter gradients over ranks: the chunks run on the unwrapped model, outside DDP's hooks."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= world


__all__ = ["RandomState", "all_reduce_gradients", "embed_chunk", "gradient_cache_step", "split_batch"]
