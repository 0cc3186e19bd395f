"""Train a post-hoc SAE (TopK or ReLU+L1) on a dense model's image AND text embeddings.

    python -m benchmarks.train_sae_baseline --dense_model outputs/dense --width 4096 --kind topk \
        --k 32 --output_dir outputs/sae_topk

The SAE folder (sae.safetensors + sae_config.json, naming its dense model) is then evaluated next
to the models with `python -m benchmarks.run --models ... --sae outputs/sae_topk`: the paper's
"dense model + post-hoc SAE" baseline (Tables 1 and 3a). Use the sparse model's width for a like-for-like
comparison. Training data: the embedded corpus's train split by default (never the held-out sets),
or any image-text dataset the data package loads (`load_dataset` id, local folder, webdataset shards).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import HfArgumentParser

from modeling_sparse_clip.sae import SAEConfig, SparseAutoencoder, reconstruction_error, train_sae

from .encode import ModelEncoder


@dataclass
class SAEBaselineArguments:
    dense_model: str = field(metadata={"help": "Folder of the dense model (activation='none') whose embeddings the SAE reads."})
    width: int = field(metadata={"help": "Number of SAE features: the sparse model's projection width for a fair comparison."})
    output_dir: str = field(metadata={"help": "Where to save sae.safetensors + sae_config.json."})
    kind: str = field(default="topk", metadata={"help": "topk or relu_l1."})
    k: int = field(default=32, metadata={"help": "Features kept per input (topk)."})
    l1_coefficient: float = field(default=1e-3, metadata={"help": "L1 weight (relu_l1)."})
    dataset: str = field(default="embedded", metadata={"help": "`embedded` (the corpus train split) or a dataset the data package loads."})
    split: str = field(default="train")
    image_column: str = field(default="image")
    text_column: str = field(default="text")
    max_examples: int | None = field(default=None, metadata={"help": "Use at most this many image-text rows (seeded)."})
    data_cache_dir: str = field(default=".cache/data")
    epochs: int = field(default=50)
    batch_size: int = field(default=256)
    learning_rate: float = field(default=1e-3)
    encode_batch_size: int = field(default=64)
    device: str | None = field(default=None)
    seed: int = field(default=0)
    progress: bool = field(default=True)


def load_training_pairs(args: SAEBaselineArguments):
    """Images and captions (lists) of the training data."""
    if args.dataset == "embedded":
        from modeling_sparse_clip.data import build_corpus

        dataset = build_corpus(args.data_cache_dir)[args.split]
    else:
        from modeling_sparse_clip.data import load_image_text_dataset

        dataset = load_image_text_dataset(args.dataset, image_column=args.image_column, text_column=args.text_column, split=args.split)
    dataset = dataset.select_columns(["image", "text"])
    if args.max_examples and args.max_examples < len(dataset):
        dataset = dataset.shuffle(seed=args.seed).select(range(args.max_examples))
    return dataset


def dense_embeddings(args: SAEBaselineArguments, dataset) -> tuple[ModelEncoder, torch.Tensor, torch.Tensor]:
    encoder = ModelEncoder.from_pretrained(args.dense_model, batch_size=args.encode_batch_size, device=args.device, progress=args.progress)
    if encoder.model.config.activation != "none":
        print(f"note: {args.dense_model} has activation={encoder.model.config.activation!r}; post-hoc SAEs are meant for dense models.")
    from .run import ImageColumn

    images = encoder.encode_images(ImageColumn(dataset), desc="SAE training")[0]
    captions = [c for row in dataset["text"] for c in (row if isinstance(row, list) else [row])]
    texts = encoder.encode_texts(captions, desc="SAE training")[0]
    return encoder, torch.from_numpy(images.toarray()), torch.from_numpy(texts.toarray())


def train_baseline(args: SAEBaselineArguments) -> dict:
    started = time.time()
    dataset = load_training_pairs(args)
    encoder, images, texts = dense_embeddings(args, dataset)
    embeddings = torch.cat([images, texts])
    config = SAEConfig(
        input_dim=embeddings.shape[1], width=args.width, kind=args.kind, k=args.k if args.kind == "topk" else None,
        l1_coefficient=args.l1_coefficient, dense_model=os.path.abspath(args.dense_model),
    )
    torch.manual_seed(args.seed)
    sae = SparseAutoencoder(config)
    error_before = reconstruction_error(sae, embeddings)
    history = train_sae(sae, embeddings, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                        seed=args.seed, progress=args.progress)
    with torch.no_grad():
        codes = sae.encode(embeddings)
    report = {
        "num_images": len(images),
        "num_texts": len(texts),
        "mse_before": error_before,
        "mse_after": reconstruction_error(sae, embeddings),
        # Fraction of the unit embeddings' variance the SAE explains.
        "explained_variance": 1 - reconstruction_error(sae, embeddings) / SparseAutoencoder.prepare(embeddings).var(0).mean().item(),
        "l0_mean": (codes > 0).sum(-1).float().mean().item(),
        "dead_features": int(((codes > 0).sum(0) == 0).sum()),
        "seconds": round(time.time() - started, 1),
        "history": history,
        "arguments": asdict(args),
    }
    sae.save_pretrained(args.output_dir)
    with open(os.path.join(args.output_dir, "training_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(SAEBaselineArguments).parse_args_into_dataclasses(args=argv)
    report = train_baseline(args)
    print(json.dumps({k: v for k, v in report.items() if k not in ("history", "arguments")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
