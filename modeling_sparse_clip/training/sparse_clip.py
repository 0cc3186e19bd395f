"""Train or fine-tune a Sparse CLIP with `SparseCLIPTrainer`: build the model and data, train, save.

Under torchrun/accelerate the loss is computed over the GLOBAL batch: features are gathered from every
rank with gradients (see `contrastive_loss`), densely or, with `--sparse_gather`, sending non-zeros only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from transformers import set_seed

from .arguments import DataArguments, ModelArguments, SparseCLIPTrainingArguments
from .callbacks import EpochCallback, EvolutionCheckpointCallback
from .data import build_train_dataset
from .model_setup import build_model
from .trainer import SparseCLIPTrainer, last_good_checkpoint

logger = logging.getLogger(__name__)


def train(model_args: ModelArguments, data_args: DataArguments, training_args: SparseCLIPTrainingArguments, callbacks=()):
    """Build, train, save. Returns the trainer (its `state.log_history` holds loss + telemetry)."""
    set_seed(training_args.seed)  # the new heads' initialisation must be reproducible too
    model, processor = build_model(model_args)
    train_dataset, collator = build_train_dataset(model, processor, model_args, data_args, training_args)
    return fit(model, processor, train_dataset, collator, training_args, callbacks,
               config={"model": asdict(model_args), "data": asdict(data_args)})


def fit(model, processor, train_dataset, collator, training_args: SparseCLIPTrainingArguments, callbacks=(),
        config: dict | None = None, sparse_gather: bool = False):
    """Train an already built model on an already built dataset (e.g. heads on cached tower outputs:
    the main job trains every head and every sparsify variant on the same cache), save it with its
    processor and training_config.json. Returns the trainer."""
    all_callbacks = [EpochCallback(train_dataset), *callbacks]
    if training_args.evolution_fractions:
        fractions = tuple(float(f) for f in training_args.evolution_fractions.split(","))
        all_callbacks.append(EvolutionCheckpointCallback(training_args.output_dir, fractions, processor))
    trainer = SparseCLIPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=all_callbacks,
        telemetry_window=training_args.telemetry_window,
        sparse_gather=(config or {}).get("model", {}).get("sparse_gather", sparse_gather),
    )
    resume = training_args.resume_from_checkpoint
    if resume in ("latest", "true", "True"):
        resume = last_good_checkpoint(training_args.output_dir)
        logger.info("resuming from %s", resume or "scratch (no complete checkpoint yet)")
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        config = {**(config or {}), "training": training_args.to_sanitized_dict()}
        (Path(training_args.output_dir) / "training_config.json").write_text(json.dumps(config, indent=2, default=str))
    return trainer


__all__ = ["fit", "train"]
