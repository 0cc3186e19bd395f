"""`SparseCLIPTrainer`: `transformers.Trainer` that clamps the logit scale after every optimiser step,
chooses the cross-rank gather of the loss, logs sparsity telemetry, stops on a non-finite loss and
marks checkpoints complete."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .callbacks import LogitScaleCapCallback
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
    - logs carry sparsity telemetry; a non-finite loss stops the run before the update, naming the
      last good checkpoint.
    """

    def __init__(self, *args, telemetry_window: int = 50, sparse_gather: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(LogitScaleCapCallback())
        self.gather_fn = sparse_gather_fn(self.model.config.activation) if sparse_gather else None
        self.telemetry = SparsityTelemetry(self.model.config.projection_dim, window=telemetry_window)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**{**inputs, "return_loss": True}, gather_fn=self.gather_fn)  # a collator may already ask for the loss
        loss = outputs.loss
        if not torch.isfinite(loss):
            last = last_good_checkpoint(self.args.output_dir)
            raise NonFiniteLossError(
                f"Loss is {loss.item()} at step {self.state.global_step + 1}; training stopped before the update. "
                f"Last good checkpoint: {last or 'none yet'}. Lower the learning rate or check the batch, then "
                f"resume with --resume_from_checkpoint {last or '<checkpoint>'}."
            )
        if model.training:
            self.telemetry.update(outputs.image_activations.detach(), outputs.text_activations.detach(), outputs.logit_scale)
        return (loss, outputs) if return_outputs else loss

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
