"""`SparseCLIPTrainer` (telemetry, NaN guard, marked-complete checkpoints) and its callbacks."""

import logging
import math
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .sparsity_telemetry import SparsityTelemetry

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
    """Trainer whose logs carry sparsity telemetry and which refuses to continue on a non-finite loss."""

    def __init__(self, *args, telemetry_window: int = 50, **kwargs):
        super().__init__(*args, **kwargs)
        self.telemetry = SparsityTelemetry(self.model.config.projection_dim, window=telemetry_window)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, return_loss=True)
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


class EpochCallback(TrainerCallback):
    """Tells the pair dataset the epoch, so each epoch draws another caption per image, reproducibly
    (also after a resume)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.dataset, "epoch"):
            self.dataset.epoch = int(math.floor(state.epoch or 0))


class EvolutionCheckpointCallback(TrainerCallback):
    """Saves full `from_pretrained` folders at fixed fractions of training (the paper's concept-evolution
    study uses 1%, 3%, 10%, 30%, 100%) to `<output_dir>/evolution/progress_XXX`."""

    def __init__(self, output_dir: str, fractions=(0.01, 0.03, 0.1, 0.3, 1.0), processor=None):
        self.output_dir = Path(output_dir) / "evolution"
        self.fractions = fractions
        self.processor = processor
        self.targets: dict[int, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.targets = {max(1, round(f * state.max_steps)): f for f in self.fractions}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        fraction = self.targets.get(state.global_step)
        if fraction is None or not state.is_world_process_zero:
            return
        folder = self.output_dir / f"progress_{round(fraction * 100):03d}"
        tmp = folder.with_name(folder.name + ".tmp")
        model.save_pretrained(tmp)
        if self.processor is not None:
            self.processor.save_pretrained(tmp)
        (tmp / "training_progress.json").write_text(f'{{"global_step": {state.global_step}, "fraction": {fraction}}}')
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)  # atomic: a folder that exists is complete
