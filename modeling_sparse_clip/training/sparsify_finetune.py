"""Sparsify an existing dense CLIP: a wide ReLU head on the dense model's (frozen) towers, initialised
from the dense model, then fine-tuned contrastively with the capped logit scale.

What most users have is a dense OpenAI/OpenCLIP checkpoint, not 2.2B pairs. `convert` makes it a
Sparse CLIP folder (activation `none`); this module turns it into a wide ReLU model and fine-tunes the
head. Three initialisations of the wide head `W` (width x tower), compared on the same budget:

* `rotation`: the signed random rotation `[QP; -QP]` of `--sparsify` (`conversion.sparse_head`):
  lossless and rank-preserving at step 0, but 50% dense; sparsity must be learnt.
* `sae`: the encoder of a post-hoc SAE trained on the dense embeddings, composed with the dense
  projection: `W = W_enc^T P`. A bias-free SAE (`SAEConfig(bias=False)`) reads `x / |x|`, so the head
  gives `|P t| * z`, the SAE's codes `z` scaled per input (same support, same cosines): sparse and
  interpretable from step 0. An SAE with biases cannot be folded into the bias-free head (its
  biases are dropped; a warning says so).
* `random`: a fresh random head, i.e. the from-scratch recipe on the same towers.

`fine_tune_from_dense` trains the head on cached pooled tower outputs (the towers stay frozen), so
each variant costs only the head's matrix products.
"""

from __future__ import annotations

import copy
import logging
import os

import torch

from ..modeling_sparse_clip import SparseCLIPModel

logger = logging.getLogger(__name__)

HEAD_INITS = ("rotation", "sae", "random")


def wide_model_from_dense(dense: SparseCLIPModel, width: int, init: str = "rotation", sae=None, seed: int = 0) -> SparseCLIPModel:
    """A wide ReLU Sparse CLIP on `dense`'s towers (shared modules, not copies) with its head
    initialised by `init` (`HEAD_INITS`); `sae` (a `SparseAutoencoder` on `dense`'s embeddings, `width`
    features) is needed for `init="sae"`. The logit scale starts at the dense model's for `rotation`
    and `sae` (they keep what it knows), at the config's init for `random` (the from-scratch recipe)."""
    if init not in HEAD_INITS:
        raise ValueError(f"init={init!r} is unknown; use one of {HEAD_INITS}.")
    if dense.config.activation != "none":
        logger.warning("sparsifying a model with activation=%r (expected a dense one, activation='none')", dense.config.activation)
    config = copy.deepcopy(dense.config)
    config.projection_dim, config.activation, config.topk_k = int(width), "relu", None
    torch.manual_seed(seed)
    wide = SparseCLIPModel(config, vision_model=dense.vision_model, text_model=dense.text_model)
    visual, text = dense.visual_projection.weight.detach(), dense.text_projection.weight.detach()  # (d, tower)
    with torch.no_grad():
        if init == "rotation":
            from ..conversion.sparse_head import signed_rotation_heads

            heads = signed_rotation_heads(visual, text, width, seed=seed)
        elif init == "sae":
            if sae is None:
                raise ValueError("init='sae' needs the trained SAE (sae=SparseAutoencoder.from_pretrained(...)).")
            if (sae.config.input_dim, sae.config.width) != (visual.shape[0], width):
                raise ValueError(f"the SAE maps {sae.config.input_dim} -> {sae.config.width}, the head needs {visual.shape[0]} -> {width}.")
            if sae.config.bias and (sae.b_enc.abs().max() > 0 or sae.b_dec.abs().max() > 0):
                logger.warning("the SAE has biases; a bias-free head drops them, so step 0 is not exactly the SAE (train it with bias=False)")
            encoder = sae.W_enc.detach().float()  # (d, width)
            heads = (encoder.t() @ visual.float(), encoder.t() @ text.float())
        if init != "random":
            wide.visual_projection.weight.copy_(heads[0])
            wide.text_projection.weight.copy_(heads[1])
            wide.logit_scale.copy_(dense.logit_scale.detach().clamp(max=config.logit_scale_max))
    return wide


def fine_tune_from_dense(dense: SparseCLIPModel, processor, features: dict[str, torch.Tensor], init: str, training_args,
                         width: int = 8192, sae=None, seed: int = 0, callbacks=()):
    """Fine-tune a `wide_model_from_dense` head on cached pooled tower outputs of the training pairs
    (`tower_cache.cached_tower_features`); `training_args` (`SparseCLIPTrainingArguments`) set the
    budget, output folder and `evolution_fractions` (the curve's checkpoints). Returns the trainer."""
    from .data import CachedPairDataset
    from .sparse_clip import fit

    from .model_setup import set_trainable

    model = wide_model_from_dense(dense, width, init, sae=sae, seed=seed)
    set_trainable(model.vision_model, "none", "vision")  # heads only: the cache holds the frozen towers' outputs
    set_trainable(model.text_model, "none", "text")
    os.makedirs(training_args.output_dir, exist_ok=True)
    model.save_pretrained(os.path.join(training_args.output_dir, "step_0"))  # the curve's first point
    processor.save_pretrained(os.path.join(training_args.output_dir, "step_0"))
    return fit(model, processor, CachedPairDataset(features), None, training_args, callbacks,
               config={"sparsify": {"init": init, "width": width, "seed": seed}})


__all__ = ["HEAD_INITS", "fine_tune_from_dense", "wide_model_from_dense"]
