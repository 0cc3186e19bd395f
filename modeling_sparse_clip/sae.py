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
zero-shot accuracy through the reconstructions `x^`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

SAE_KINDS = ("topk", "relu_l1")
CONFIG_NAME = "sae_config.json"
WEIGHTS_NAME = "sae.safetensors"


@dataclass
class SAEConfig:
    """input_dim: embedding width of the dense model; width: number of SAE features (use the sparse
    model's projection width for a like-for-like comparison); kind: `topk` or `relu_l1`; k: features
    kept per input (topk); l1_coefficient: weight of the L1 penalty (relu_l1); dense_model: folder of
    the dense model whose embeddings the SAE reads (so the harness can pair them)."""

    input_dim: int
    width: int
    kind: str = "topk"
    k: int | None = 32
    l1_coefficient: float = 1e-3
    dense_model: str | None = None

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
        self.b_enc = nn.Parameter(torch.zeros(config.width))
        self.b_dec = nn.Parameter(torch.zeros(config.input_dim))  # the pre-bias

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

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        target = self.prepare(x)
        reconstruction, z = self(x)
        mse = (reconstruction - target).pow(2).mean()
        loss = mse
        if self.config.kind == "relu_l1":
            loss = loss + self.config.l1_coefficient * z.abs().sum(-1).mean()
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
        os.makedirs(directory, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, os.path.join(directory, WEIGHTS_NAME))
        with open(os.path.join(directory, CONFIG_NAME), "w") as f:
            json.dump(asdict(self.config), f, indent=2)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "SparseAutoencoder":
        config_path = os.path.join(directory, CONFIG_NAME)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{directory} holds no {CONFIG_NAME}; train one with `python -m benchmarks.train_sae_baseline`.")
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
) -> list[dict[str, float]]:
    """Adam on shuffled mini-batches; decoder rows kept at unit norm. Returns per-epoch mean mse/L0."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = embeddings.float()
    with torch.no_grad():  # start the pre-bias at the data mean (of the unit vectors the SAE reads)
        sae.b_dec.copy_(sae.prepare(embeddings).mean(0))
    optimizer = torch.optim.Adam(sae.parameters(), lr=learning_rate)
    history = []
    sae.train()
    steps_per_epoch = math.ceil(len(embeddings) / batch_size)
    bar = tqdm(range(epochs), desc=f"train {sae.config.kind} SAE", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(embeddings), generator=generator)
        totals = {"mse": 0.0, "l0": 0.0}
        for step in range(steps_per_epoch):
            batch = embeddings[order[step * batch_size : (step + 1) * batch_size]]
            loss, stats = sae.loss(batch)
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


__all__ = ["SAEConfig", "SparseAutoencoder", "train_sae", "reconstruction_error", "SAE_KINDS"]
