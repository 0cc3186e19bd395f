"""A short accelerator check (under 5 minutes on one GPU): does the training path run there, how fast, in
how much memory, and is the sparse-aware loss exact and lean on the device.

1. Training steps (bf16 autocast + gradient checkpointing + AdamW) of a ViT-B/32-shaped Sparse CLIP at 32x
   width (512 x 32 = 16,384, relu) next to transformers' `CLIPModel` with identical towers (same configs,
   the Sparse CLIP towers load the CLIPModel's tower weights): pairs/s and peak memory of each.
2. The loss step alone (forward + backward) on one device, dense `contrastive_loss` vs
   `sparse_contrastive_loss`, at 1% density: time, peak memory, and the loss / gradient differences.

Inputs are random pixel tensors and token ids: this measures speed and memory, nothing about data.
Device-agnostic (`--device cuda|cpu|...`); `--tiny` shrinks everything for a CPU smoke test. Prints one
JSON summary (and writes it with `--output`).

    python -m benchmarks.gpu_check                      # on a GPU machine
    python -m benchmarks.gpu_check --device cpu --tiny  # smoke test
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, HfArgumentParser


@dataclass
class GPUCheckArguments:
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu")
    tiny: bool = field(default=False, metadata={"help": "tiny towers, batch and width: a CPU smoke test"})
    batch_size: int = field(default=256)
    steps: int = field(default=5, metadata={"help": "timed optimiser steps per model (after 1 warm-up step)"})
    width_factor: int = field(default=32, metadata={"help": "Sparse CLIP width = factor x 512"})
    loss_batch: int = field(default=8192, metadata={"help": "batch of the loss-only comparison"})
    loss_density: float = field(default=0.01)
    output: str | None = field(default=None)


def _sync(device: torch.device) -> None:
    if device.type != "cpu" and hasattr(torch, "accelerator") and torch.accelerator.is_available():
        torch.accelerator.synchronize()


class PeakMemory:
    """Peak memory in MB of a block: the device allocator's peak on an accelerator, the resident set on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        _sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else _kb("VmHWM") * 1024
        self.peak_mb, self.added_mb = peak / 2**20, (peak - self.base) / 2**20


def _kb(name: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def _configs(tiny: bool):
    if tiny:
        text = CLIPTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77)
        vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=32)
        return text, vision, 64
    return CLIPTextConfig(), CLIPVisionConfig(), 512  # ViT-B/32 towers; CLIP's 512-d embedding


def _models(args: GPUCheckArguments, device: torch.device):
    from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel

    text, vision, embed = _configs(args.tiny)
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=embed))
    sparse = SparseCLIPModel(SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                              projection_dim=args.width_factor * embed, activation="relu"))
    sparse.vision_model.load_state_dict(clip.vision_model.state_dict())  # identical towers (same classes, configs, weights)
    sparse.text_model.load_state_dict(clip.text_model.state_dict())
    return {"CLIPModel": clip.to(device), "SparseCLIPModel": sparse.to(device)}


def _train_steps(model, batch: dict, steps: int, device: torch.device) -> dict:
    model.gradient_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        if hasattr(model, "clamp_logit_scale_"):
            model.clamp_logit_scale_()
        return float(loss)

    step()  # warm-up (kernels, allocator, optimiser states)
    with PeakMemory(device) as memory:
        _sync(device)
        start = time.perf_counter()
        losses = [step() for _ in range(steps)]
        _sync(device)
        seconds = time.perf_counter() - start
    pairs = batch["input_ids"].shape[0]
    return {"pairs_per_s": steps * pairs / seconds, "seconds_per_step": seconds / steps, "peak_memory_MB": memory.peak_mb,
            "losses": losses, "finite": all(torch.isfinite(torch.tensor(losses)).tolist())}


def _sparse_embeddings(rows: int, width: int, density: float, device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    per_row = max(1, round(density * width))
    x = torch.zeros(rows, width).scatter_(1, torch.randint(width, (rows, per_row), generator=g), torch.rand(rows, per_row, generator=g) + 0.01)
    return F.normalize(x, dim=-1).to(device).requires_grad_(True)


def _loss_check(args: GPUCheckArguments, device: torch.device, width: int) -> dict:
    from modeling_sparse_clip.modeling_sparse_clip import contrastive_loss
    from modeling_sparse_clip.sparse_contrastive_loss import sparse_contrastive_loss

    rows = 256 if args.tiny else args.loss_batch
    out = {"batch": rows, "width": width, "density": args.loss_density}
    grads = {}
    for name, fn in (("dense", contrastive_loss),
                     ("sparse_aware", lambda i, t, s: sparse_contrastive_loss(i, t, s, dense_fallback_density=1.0))):
        img = _sparse_embeddings(rows, width, args.loss_density, device, 0)
        txt = _sparse_embeddings(rows, width, args.loss_density, device, 1)
        scale = torch.tensor(50.0, device=device, requires_grad=True)
        fn(img, txt, scale).backward()  # warm-up
        img.grad = txt.grad = scale.grad = None
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            loss = fn(img, txt, scale)
            loss.backward()
            _sync(device)
            seconds = time.perf_counter() - start
        support = img.detach() != 0
        grads[name] = (loss.detach().double().cpu(), img.grad[support].double().cpu(), scale.grad.double().cpu())
        out[name] = {"seconds": seconds, "peak_added_MB": memory.added_mb, "loss": float(loss)}
    (dl, dg, ds), (sl, sg, ss) = grads["dense"], grads["sparse_aware"]
    out["loss_abs_diff"] = float((dl - sl).abs())
    out["grad_on_support_max_abs_diff"] = float((dg - sg).abs().max())
    out["grad_scale_abs_diff"] = float((ds - ss).abs())
    out["exact"] = out["loss_abs_diff"] <= 1e-6 * max(1.0, abs(float(dl))) and out["grad_on_support_max_abs_diff"] <= 1e-5
    out["time_ratio_dense_over_sparse"] = out["dense"]["seconds"] / out["sparse_aware"]["seconds"]
    return out


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(GPUCheckArguments).parse_args_into_dataclasses(args=argv)
    device = torch.device(args.device)
    started = time.perf_counter()
    summary = {"arguments": asdict(args), "torch": torch.__version__, "device": str(device),
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    text, vision, embed = _configs(args.tiny)
    batch_size = 8 if args.tiny else args.batch_size
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(3, text.vocab_size - 1, (batch_size, text.max_position_embeddings), generator=g).to(device),
        "pixel_values": torch.randn(batch_size, 3, vision.image_size, vision.image_size, generator=g).to(device),
    }
    models = _models(args, device)
    summary["training"] = {name: _train_steps(model, batch, 1 if args.tiny else args.steps, device) for name, model in models.items()}
    summary["training"]["sparse_over_clip_pairs_per_s"] = (
        summary["training"]["SparseCLIPModel"]["pairs_per_s"] / summary["training"]["CLIPModel"]["pairs_per_s"])
    summary["sparse_width"] = args.width_factor * embed
    del models
    summary["loss_one_device"] = _loss_check(args, device, args.width_factor * embed)
    summary["wall_seconds"] = time.perf_counter() - started
    text_out = json.dumps(summary, indent=2)
    print(text_out)
    if args.output:
        from modeling_sparse_clip.atomic import atomic_write_text

        atomic_write_text(args.output, text_out + "\n")
    return summary


if __name__ == "__main__":
    main()
