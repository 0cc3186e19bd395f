"""Training Sparse CLIP with `transformers.Trainer` (the loop lives here; the commands are thin clients).

- `arguments`: `ModelArguments`, `DataArguments`, `SparseCLIPTrainingArguments`; recipe + flags parsing
- `model_setup`: the model and processor a run starts from, which tower parameters train, the sparse gather
- `data`: pair datasets and the collator; `tower_cache`: frozen towers run once over the corpus
- `trainer`: `SparseCLIPTrainer` (cap after every step, gather, telemetry, NaN stop, complete checkpoints)
- `callbacks`: the cap, the caption per epoch, concept-evolution folders; `telemetry`: L0 and dead features
- `sparse_clip`: `train(model_args, data_args, training_args)`: build, train, save
- `main_job`: the embedded sparse + dense runs and their held-out table; `vlm`: the sparse-feature VLM

    from modeling_sparse_clip.training import parse_args, train
    trainer = train(*parse_args(["embedded_sparse", "--output_dir", "outputs/mine"]))
"""

from .arguments import DataArguments, ModelArguments, SparseCLIPTrainingArguments, parse_args, parse_config_and_flags
from .callbacks import EpochCallback, EvolutionCheckpointCallback, LogitScaleCapCallback
from .data import CachedPairDataset, ImageTextCollator, PairDataset, build_train_dataset, load_pairs
from .model_setup import build_model, set_trainable, sparse_gather_fn
from .sparse_clip import train
from .telemetry import SparsityTelemetry
from .tower_cache import cached_tower_features, encode_tower_features
from .trainer import NonFiniteLossError, SparseCLIPTrainer, last_good_checkpoint

__all__ = [
    "CachedPairDataset", "DataArguments", "EpochCallback", "EvolutionCheckpointCallback", "ImageTextCollator",
    "LogitScaleCapCallback", "ModelArguments", "NonFiniteLossError", "PairDataset", "SparseCLIPTrainer",
    "SparseCLIPTrainingArguments", "SparsityTelemetry", "build_model", "build_train_dataset", "cached_tower_features",
    "encode_tower_features", "last_good_checkpoint", "load_pairs", "parse_args", "parse_config_and_flags",
    "set_trainable", "sparse_gather_fn", "train",
]
