"""Trainer callbacks of a Sparse CLIP run: the logit-scale cap, the caption drawn per epoch, and
`from_pretrained` folders kept along the way (concept evolution)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import TrainerCallback

from ..atomic import atomic_dir


class LogitScaleCapCallback(TrainerCallback):
    """Clamps the logit-scale parameter to the cap after every optimiser step, before the next forward
    (OpenCLIP does the same in its loop), so momentum never carries it above the cap.

    `SparseCLIPTrainer` adds it itself; with a plain `transformers.Trainer` pass it in `callbacks=`; a
    hand-written loop calls `model.clamp_logit_scale_()` after `optimizer.step()`.
    """

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        # every Sparse CLIP inside the trained model (it may be wrapped or be part of a larger model)
        for module in model.modules():
            if hasattr(module, "clamp_logit_scale_"):
                module.clamp_logit_scale_()


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
        with atomic_dir(self.output_dir / f"progress_{round(fraction * 100):03d}") as folder:  # exists => complete
            model.save_pretrained(folder)
            if self.processor is not None:
                self.processor.save_pretrained(folder)
            (folder / "training_progress.json").write_text(json.dumps({"global_step": state.global_step, "fraction": fraction}))


__all__ = ["EpochCallback", "EvolutionCheckpointCallback", "LogitScaleCapCallback"]
