"""Post-hoc sparse autoencoders on a dense CLIP's embeddings: the baseline Sparse CLIP is compared with.

Two kinds, both with a decoder pre-bias and unit-norm decoder directions (Bricken et al. 2023,
Gao et al. 2024), trained on the dense model's image AND text embeddings together:

  x' = normalize(x)                                  (embeddings are compared by cosine, so the SAE
                                                      reads unit vectors)
  z  = act( W_enc (x' - b_dec) + b_enc )             act = TopK (keep the k largest pre-activations,
                                                      then ReLU) or ReLU
  x^ = W_dec z + b_dec                               rows of W_dec (one per feature) have unit norm
  loss = mean ||x' - x^||^2 / d  (+ l1_coefficient * mean ||z||_1 for the ReLU+L1 kind)

`z` are the SAE's features ("codes"): the harness measures L0, Clarity and modality on them, and
zero-shot accuracy through the reconstructions `x^` (`modeling_sparse_clip.evaluation.sae_reading`).
`train_sae_baseline` embeds a dataset with the dense model and trains one (`sparse-clip-train-sae`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .atomic import atomic_file, atomic_write_text
from .constants import DATA_CACHE_DIR

logger = logging.getLogger(__name__)

SAE_KINDS = ("topk", "relu_l1")
CONFIG_NAME = "sae_config.json"
WEIGHTS_NAME = "sae.safetensors"


@dataclass
class SAEConfig:
    """input_dim: embedding width of the dense model; width: number of SAE features (use the sparse
    model's projection width for a like-for-like comparison); kind: `topk` or `relu_l1`; k: features
    kept per input (topk); l1_coefficient: weight of the L1 penalty (relu_l1); dense_model: folder of
    the dense model whose embeddings the SAE reads (so the harness can pair them); bias: learn the
    encoder bias and decoder pre-bias (False: both stay zero, so the encoder is a plain linear map +
    activation and can be folded into a bias-free Sparse CLIP head, `sparsify_finetune`)."""

    input_dim: int
    width: int
    kind: str = "topk"
    k: int | None = 32
    l1_coefficient: float = 1e-3
    dense_model: str | None = None
    bias: bool = True

    def __post_init__(self):
        if self.kind not in SAE_KINDS:
            raise ValueError(f"kind={self.kind!r} is unknown; use one of {SAE_KINDS}.")
        if self.input_dim <= 0 or self.width <= 0:
            raise ValueError(f"input_dim and width must be positive, got {self.input_dim} and {self.width}.")
        if self.kind == "topk" and not (isinstance(self.k, int) and 0 < self.k <= self.width):
            raise ValueError(f"kind='topk' needs 0 < k <= width ({self.width}), got k={self.k!r}.")
        if self.kind == "relu_l1" and self.l1_coefficient <= 0:
            raise ValueError(f"kind='relu_l1' needs l1_coefficient > 0, got {self.l1_coefficient}.")


class SparseAutoencoder(nn.Module):
    def __init__(self, config: SAEConfig):
        super().__init__()
        self.config = config
        decoder = F.normalize(torch.randn(config.width, config.input_dim), dim=-1)
        self.W_dec = nn.Parameter(decoder)  # [width, d]: one unit direction per feature
        self.W_enc = nn.Parameter(decoder.t().clone())  # tied initialisation, trained untied
        self.b_enc = nn.Parameter(torch.zeros(config.width), requires_grad=config.bias)
        self.b_dec = nn.Parameter(torch.zeros(config.input_dim), requires_grad=config.bias)  # the pre-bias

    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes z (non-negative, [N, width]) of raw embeddings x ([N, d])."""
        pre = (self.prepare(x) - self.b_dec) @ self.W_enc + self.b_enc
        if self.config.kind == "topk":
            values, indices = pre.topk(self.config.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))
        return F.relu(pre)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    def loss(self, x: torch.Tensor, l1_scale: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction MSE (+ `l1_scale` x the configured L1 term, for the ReLU+L1 kind)."""
        target = self.prepare(x)
        reconstruction, z = self(x)
        mse = (reconstruction - target).pow(2).mean()
        loss = mse
        if self.config.kind == "relu_l1":
            loss = loss + l1_scale * self.config.l1_coefficient * z.abs().sum(-1).mean()
        return loss, {"mse": mse.item(), "l0": (z > 0).sum(-1).float().mean().item()}

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.W_dec.data = F.normalize(self.W_dec.data, dim=-1)

    @torch.no_grad()
    def remove_parallel_decoder_grad_(self) -> None:
        """Drop the gradient component along each decoder row: a unit-norm constraint step would undo it anyway."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec.data).sum(-1, keepdim=True)
            self.W_dec.grad -= parallel * self.W_dec.data

    # -- persistence: safetensors + json, like a Hub folder ------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        with atomic_file(os.path.join(directory, WEIGHTS_NAME)) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp))
        atomic_write_text(os.path.join(directory, CONFIG_NAME), json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "SparseAutoencoder":
        config_path = os.path.join(directory, CONFIG_NAME)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{directory} holds no {CONFIG_NAME}; train one with `sparse-clip-train-sae`.")
        with open(config_path) as f:
            sae = cls(SAEConfig(**json.load(f)))
        sae.load_state_dict(load_file(os.path.join(directory, WEIGHTS_NAME)))
        return sae.eval()


def train_sae(
    sae: SparseAutoencoder,
    embeddings: torch.Tensor,
    epochs: int = 50,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    l1_warmup_fraction: float = 0.0,
) -> list[dict[str, float]]:
    """Adam on shuffled mini-batches; decoder rows kept at unit norm. Returns per-epoch mean mse/L0.

    `l1_warmup_fraction`: the L1 weight ramps linearly from 0 over this fraction of the steps (ReLU+L1:
    at full weight from step 0 most features die before they find data; Conerly et al. 2024)."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = embeddings.float()
    if sae.config.bias:
        with torch.no_grad():  # start the pre-bias at the data mean (of the unit vectors the SAE reads)
            sae.b_dec.copy_(sae.prepare(embeddings).mean(0))
    optimizer = torch.optim.Adam([p for p in sae.parameters() if p.requires_grad], lr=learning_rate)
    history = []
    sae.train()
    steps_per_epoch = math.ceil(len(embeddings) / batch_size)
    warmup_steps = l1_warmup_fraction * epochs * steps_per_epoch
    done = 0
    bar = tqdm(range(epochs), desc=f"train {sae.config.kind} SAE", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(embeddings), generator=generator)
        totals = {"mse": 0.0, "l0": 0.0}
        for step in range(steps_per_epoch):
            batch = embeddings[order[step * batch_size : (step + 1) * batch_size]]
            loss, stats = sae.loss(batch, l1_scale=min(1.0, (done + 1) / warmup_steps) if warmup_steps else 1.0)
            done += 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_decoder_grad_()
            optimizer.step()
            sae.normalize_decoder_()
            for key in totals:
                totals[key] += stats[key] / steps_per_epoch
        history.append(totals)
        bar.set_postfix(mse=f"{totals['mse']:.2e}", l0=f"{totals['l0']:.1f}")
    sae.eval()
    return history


@torch.no_grad()
def reconstruction_error(sae: SparseAutoencoder, embeddings: torch.Tensor) -> float:
    """Mean squared error per dimension between the unit embeddings and their reconstructions."""
    reconstruction, _ = sae(embeddings)
    return (reconstruction - sae.prepare(embeddings)).pow(2).mean().item()


def load_sae_training_pairs(dataset: str = "embedded", split: str = "train", image_column: str = "image", text_column: str = "text",
                            max_examples: int | None = None, data_cache_dir: str | os.PathLike = DATA_CACHE_DIR, seed: int = 0):
    """Images and captions (lists) to train an SAE on: the embedded corpus's `split` (never the held-out
    sets) or any image-text dataset the data package loads; at most `max_examples` rows (seeded)."""
    if dataset == "embedded":
        from .data import build_corpus

        rows = build_corpus(data_cache_dir)[split]
    else:
        from .data import load_image_text_dataset

        rows = load_image_text_dataset(dataset, image_column=image_column, text_column=text_column, split=split)
    rows = rows.select_columns(["image", "text"])
    if max_examples and max_examples < len(rows):
        rows = rows.shuffle(seed=seed).select(range(max_examples))
    return rows


def train_sae_baseline(
    dense_model: str,
    width: int,
    output_dir: str | os.PathLike,
    kind: str = "topk",
    k: int = 32,
    l1_coefficient: float = 1e-3,
    dataset: str = "embedded",
    split: str = "train",
    image_column: str = "image",
    text_column: str = "text",
    max_examples: int | None = None,
    data_cache_dir: str | os.PathLike = DATA_CACHE_DIR,
    epochs: int = 50,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    encode_batch_size: int = 64,
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """The paper's "dense model + post-hoc SAE" baseline: embed the training pairs' images AND captions
    with `dense_model` (the one encoder), train a `kind` SAE of `width` features on them, save it to
    `output_dir` (sae.safetensors + sae_config.json naming the dense model, + training_report.json)
    and return the training report."""
    arguments = dict(locals())  # recorded in the report
    from .encoding import SparseCLIPEncoder
    from .evaluation.suites import ImageColumn

    started = time.time()
    pairs = load_sae_training_pairs(dataset, split, image_column, text_column, max_examples, data_cache_dir, seed)
    encoder = SparseCLIPEncoder.from_pretrained(dense_model, batch_size=encode_batch_size, progress=progress,
                                                device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if encoder.model.config.activation != "none":
        logger.warning("%s has activation=%r; post-hoc SAEs are meant for dense models.", dense_model, encoder.model.config.activation)
    images = encoder.encode_images(ImageColumn(pairs), desc="SAE training").to_dense()
    captions = [c for row in pairs["text"] for c in (row if isinstance(row, list) else [row])]
    texts = encoder.encode_texts(captions, desc="SAE training").to_dense()
    report = train_sae_on_embeddings(
        images, texts, width, output_dir, kind=kind, k=k, l1_coefficient=l1_coefficient, dense_model=dense_model,
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed, progress=progress,
    )
    report["seconds"] = round(time.time() - started, 1)
    report["arguments"] = {key: str(value) if isinstance(value, os.PathLike) else value for key, value in arguments.items()}
    atomic_write_text(os.path.join(output_dir, "training_report.json"), json.dumps(report, indent=2))
    return report


def train_sae_on_embeddings(
    images: torch.Tensor,
    texts: torch.Tensor,
    width: int,
    output_dir: str | os.PathLike,
    kind: str = "topk",
    k: int = 32,
    l1_coefficient: float = 1e-3,
    dense_model: str | os.PathLike | None = None,
    bias: bool = True,
    epochs: int = 50,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    l1_warmup_fraction: float = 0.0,
) -> dict:
    """Train a `kind` SAE of `width` features on a dense model's image AND text embeddings (already
    computed: the main job projects its cached tower outputs, so no tower runs again), save it to
    `output_dir` (naming `dense_model`) with training_report.json, and return the report."""
    started = time.time()
    embeddings = torch.cat([images.float(), texts.float()])
    config = SAEConfig(input_dim=embeddings.shape[1], width=width, kind=kind, k=k if kind == "topk" else None,
                       l1_coefficient=l1_coefficient, dense_model=os.path.abspath(dense_model) if dense_model else None, bias=bias)
    torch.manual_seed(seed)
    sae = SparseAutoencoder(config)
    error_before = reconstruction_error(sae, embeddings)
    history = train_sae(sae, embeddings, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed, progress=progress,
                        l1_warmup_fraction=l1_warmup_fraction)
    with torch.no_grad():
        codes = sae.encode(embeddings)
    error_after = reconstruction_error(sae, embeddings)
    report = {
        "kind": kind,
        "width": width,
        "k": config.k,
        "l1_coefficient": config.l1_coefficient if kind == "relu_l1" else None,
        "bias": bias,
        "l1_warmup_fraction": l1_warmup_fraction if kind == "relu_l1" else None,
        "num_images": len(images),
        "num_texts": len(texts),
        "mse_before": error_before,
        "mse_after": error_after,
        # Fraction of the unit embeddings' variance the SAE explains.
        "explained_variance": 1 - error_after / SparseAutoencoder.prepare(embeddings).var(0).mean().item(),
        "l0_mean": (codes > 0).sum(-1).float().mean().item(),
        "l0_image_mean": (codes[: len(images)] > 0).sum(-1).float().mean().item(),
        "l0_text_mean": (codes[len(images):] > 0).sum(-1).float().mean().item(),
        "dead_features": int(((codes > 0).sum(0) == 0).sum()),
        "seconds": round(time.time() - started, 1),
        "history": history,
    }
    sae.save_pretrained(output_dir)
    atomic_write_text(os.path.join(output_dir, "training_report.json"), json.dumps(report, indent=2))
    return report


__all__ = ["SAEConfig", "SparseAutoencoder", "train_sae", "reconstruction_error", "train_sae_baseline", "train_sae_on_embeddings", "load_sae_training_pairs", "SAE_KINDS"]
