"""`SparseCLIPTrainer`: `transformers.Trainer` that clamps the logit scale after every optimiser step,
chooses how the loss sees the global batch (dense gather, sparse gather, sparse-aware loss), can run
the towers in chunks under one full-batch loss (gradient caching), logs sparsity telemetry, stops on
a non-finite loss and marks checkpoints complete."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .callbacks import LogitScaleCapCallback
from .gradient_cache import all_reduce_gradients, gradient_cache_step
from .model_setup import sparse_gather_fn
from .telemetry import SparsityTelemetry

logger = logging.getLogger(__name__)
COMPLETE_MARKER = "checkpoint_complete"


class NonFiniteLossError(FloatingPointError):
    pass


def last_good_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` that finished writing (a run killed mid-save leaves no marker)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (p / COMPLETE_MARKER).exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


class SparseCLIPTrainer(Trainer):
    """Trainer for `SparseCLIPModel`.

    - the logit-scale parameter is clamped to the cap after every optimiser step (`LogitScaleCapCallback`);
    - `sparse_gather=True`: the loss gathers the global batch sending only non-zeros
      (`sparse_gather_fn`), else densely with gradients;
    - `sparse_aware_loss=True` (relu/topk models; `--sparse_aware_loss`): the loss keeps the global
      batch as non-zeros only and never builds it dense (`SparseAwareLoss`); it also sends only
      non-zeros, so it replaces `sparse_gather`;
    - `gradient_cache_chunk_size=N` (`--gradient_cache_chunk_size`): the loss covers the whole batch
      while the towers run N pairs at a time (`gradient_cache_step`);
    - logs carry sparsity telemetry; a non-finite loss stops the run before the update, naming the
      last good checkpoint.
    Unset keyword arguments are read from the training arguments of the same name.
    """

    def __init__(self, *args, telemetry_window: int = 50, sparse_gather: bool = False, sparse_aware_loss: bool | None = None,
                 gradient_cache_chunk_size: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(LogitScaleCapCallback())
        if sparse_aware_loss is None:
            sparse_aware_loss = getattr(self.args, "sparse_aware_loss", False)
        if gradient_cache_chunk_size is None:
            gradient_cache_chunk_size = getattr(self.args, "gradient_cache_chunk_size", None)
        activation = self.model.config.activation
        if sparse_aware_loss:
            if activation not in ("relu", "topk"):
                raise ValueError(f"--sparse_aware_loss needs a relu or topk model (this one is {activation!r}): its "
                                 "gradients are exact only where the activation passes no gradient at zero outputs.")
            from ..sparse_contrastive_loss import SparseAwareLoss

            self.gather_fn = SparseAwareLoss()
        else:
            self.gather_fn = sparse_gather_fn(activation) if sparse_gather else None
        if gradient_cache_chunk_size is not None and gradient_cache_chunk_size < 1:
            raise ValueError(f"--gradient_cache_chunk_size must be a positive number of pairs, got {gradient_cache_chunk_size}.")
        self.gradient_cache_chunk_size = gradient_cache_chunk_size
        self.telemetry = SparsityTelemetry(self.model.config.projection_dim, window=telemetry_window)

    def _check_finite(self, loss: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(loss):
            last = last_good_checkpoint(self.args.output_dir)
            raise NonFiniteLossError(
                f"Loss is {loss.item()} at step {self.state.global_step + 1}; training stopped before the update. "
                f"Last good checkpoint: {last or 'none yet'}. Lower the learning rate or check the batch, then "
                f"resume with --resume_from_checkpoint {last or '<checkpoint>'}."
            )
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**{**inputs, "return_loss": True}, gather_fn=self.gather_fn)  # a collator may already ask for the loss
        loss = self._check_finite(outputs.loss)
        if model.training:
            self.telemetry.update(outputs.image_activations.detach(), outputs.text_activations.detach(), outputs.logit_scale)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.gradient_cache_chunk_size:
            return super().training_step(model, inputs, num_items_in_batch)
        # Gradient caching: the chunks run on the unwrapped model (several forwards per step would
        # confuse DDP's hooks), so the gradients are averaged over ranks here, once per micro-batch.
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        module = self.accelerator.unwrap_model(model)
        scale = 1.0 / getattr(self, "current_gradient_accumulation_steps", 1)  # what Trainer.training_step divides by

        def loss_backward(loss):
            self.accelerator.backward(self._check_finite(loss) * scale)

        with self.compute_loss_context_manager():
            outputs = gradient_cache_step(module, inputs, self.gradient_cache_chunk_size, self.gather_fn, loss_backward)
        all_reduce_gradients(module)
        self.telemetry.update(outputs.image_activations.detach(), outputs.text_activations.detach(), outputs.logit_scale)
        return outputs.loss * scale

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            logs.update(self.telemetry.summary())
        super().log(logs, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            (folder / COMPLETE_MARKER).write_text(str(self.state.global_step))


__all__ = ["COMPLETE_MARKER", "NonFiniteLossError", "SparseCLIPTrainer", "last_good_checkpoint"]
