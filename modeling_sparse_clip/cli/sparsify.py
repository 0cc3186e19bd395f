"""`sparse-clip-sparsify` (= `python -m modeling_sparse_clip.cli.sparsify`): turn a dense CLIP (a Sparse CLIP folder with activation
`none`, e.g. from `sparse-clip-convert-clip` / `sparse-clip-convert-open-clip`) into a wide ReLU Sparse CLIP and fine-tune its head.

    sparse-clip-convert-clip --source openai/clip-vit-base-patch32 --output_dir outputs/clip_dense   # 1. convert
    sparse-clip-sparsify sparsify_embedded \\
        --dense_model outputs/clip_dense --init sae --dataset my_pairs --output_dir outputs/clip_sparse  # 2-3
    sparse-clip-bench --models outputs/clip_dense outputs/clip_sparse                            # 4. evaluate

A recipe (first argument: a shipped name such as `sparsify_embedded`, or a file) gives the training
flags; flags after it override it. The towers stay frozen: they run once over the training pairs
(cached under `--data_cache_dir`/tower_features) and only the head trains. `--init sae` first trains a
bias-free ReLU+L1 SAE on the dense embeddings of the training pairs (or reads `--sae_dir`). The library
calls are `modeling_sparse_clip.training.sparsify_finetune.{wide_model_from_dense, fine_tune_from_dense}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import run_command


@dataclass
class SparsifyArguments:
    dense_model: str = field(default=None, metadata={"help": "folder of the dense model (activation 'none') to sparsify"})
    init: str = field(default="sae", metadata={"help": "wide-head initialisation: sae (the main job's winner: L0 <= 2 percent of width within 1 point of dense in 1/3 of the scratch steps) | rotation | random"})
    width: int = field(default=8192, metadata={"help": "width of the sparse embedding"})
    sae_dir: str | None = field(default=None, metadata={"help": "init sae: a trained bias-free SAE folder (default: train one here)"})
    sae_l1_coefficient: float = field(default=3e-4)
    sae_epochs: int = field(default=8)


def run(argv):
    import torch
    from transformers import AutoProcessor

    from ..modeling_sparse_clip import SparseCLIPModel
    from ..sae import SparseAutoencoder, train_sae_on_embeddings
    from ..training.arguments import DataArguments, SparseCLIPTrainingArguments, parse_config_and_flags
    from ..training.data import load_pairs
    from ..training.sparsify_finetune import fine_tune_from_dense
    from ..training.tower_cache import cached_tower_features

    args, data_args, training_args = parse_config_and_flags((SparsifyArguments, DataArguments, SparseCLIPTrainingArguments), argv)
    if not args.dense_model:
        raise ValueError("pass --dense_model: the folder of the dense model to sparsify (sparse-clip-convert-clip makes one from a CLIP checkpoint)")
    dense = SparseCLIPModel.from_pretrained(args.dense_model).eval()
    processor = AutoProcessor.from_pretrained(args.dense_model)
    features = cached_tower_features(dense, processor, load_pairs(data_args), Path(data_args.data_cache_dir) / "tower_features")
    sae = None
    if args.init == "sae":
        if args.sae_dir:
            sae = SparseAutoencoder.from_pretrained(args.sae_dir)
        else:
            with torch.no_grad():
                images, texts = dense.project_image(features["image"]), torch.unique(dense.project_text(features["text"]), dim=0)
            sae_dir = Path(training_args.output_dir) / "sae_init"
            train_sae_on_embeddings(images, texts, args.width, sae_dir, kind="relu_l1", l1_coefficient=args.sae_l1_coefficient,
                                    bias=False, dense_model=args.dense_model, epochs=args.sae_epochs, batch_size=512, learning_rate=2e-3)
            sae = SparseAutoencoder.from_pretrained(sae_dir)
    trainer = fine_tune_from_dense(dense, processor, features, args.init, training_args, width=args.width, sae=sae, seed=training_args.seed)
    logs = [e for e in trainer.state.log_history if "loss" in e]
    summary = {"output_dir": training_args.output_dir, "init": args.init, "steps": trainer.state.global_step, "last_log": logs[-1] if logs else {}}
    print(json.dumps(summary, indent=2))
    return summary


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()
