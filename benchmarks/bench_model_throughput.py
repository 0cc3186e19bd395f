"""Forward+backward throughput: SparseCLIPModel (wide relu head) vs transformers CLIPModel, same towers.

Both models get ViT-B/32-shaped towers with identical weights; the sparse one has a 32x wide relu
projection (512 -> 16,384). Same batch, same run, alternating timed rounds so that machine noise
hits both equally. Prints pairs/s of each and the ratio sparse/dense (target >= 0.95).

    python -m benchmarks.bench_model_throughput --batch_size 64 --steps 10          # GPU or CPU
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, HfArgumentParser

from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel


@dataclass
class Args:
    batch_size: int = field(default=32, metadata={"help": "pairs per step"})
    steps: int = field(default=5, metadata={"help": "timed steps per model per round"})
    rounds: int = field(default=3)
    warmup: int = field(default=2)
    expansion_factor: int = field(default=32)
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast (GPU)"})
    gradient_checkpointing: bool = field(default=False)
    output_json: str = field(default="benchmarks/results/model_throughput.json")


def build_models(expansion_factor: int):
    clip_config = CLIPConfig()  # ViT-B/32 text + vision, projection 512
    dense = CLIPModel(clip_config)
    sparse = SparseCLIPModel(
        SparseCLIPConfig(
            text_config=clip_config.text_config.to_dict(),
            vision_config=clip_config.vision_config.to_dict(),
            projection_dim=clip_config.projection_dim * expansion_factor,
            activation="relu",
        )
    )
    # identical towers
    sparse.text_model.load_state_dict(dense.text_model.state_dict(), strict=False)
    sparse.vision_model.load_state_dict(dense.vision_model.state_dict(), strict=False)
    return dense, sparse


def main():
    (args,) = HfArgumentParser(Args).parse_args_into_dataclasses()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dense, sparse = build_models(args.expansion_factor)
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(0, 49406, (args.batch_size, 77), generator=g).to(device),
        "pixel_values": torch.randn(args.batch_size, 3, 224, 224, generator=g).to(device),
    }
    models = {"CLIPModel (dense, 512)": dense.to(device), f"SparseCLIPModel (relu, {sparse.projection_dim})": sparse.to(device)}
    optims = {}
    for name, m in models.items():
        m.train()
        if args.gradient_checkpointing:
            m.activation_checkpointing_enable()
        optims[name] = torch.optim.AdamW(m.parameters(), lr=1e-5)

    def step(name):
        m, opt = models[name], optims[name]
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.bf16):
            loss = m(**batch, return_loss=True).loss
        loss.backward()
        opt.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for name in models:
        for _ in range(args.warmup):
            step(name)
    sync()
    seconds = {name: 0.0 for name in models}
    for _ in range(args.rounds):
        for name in models:
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            sync()
            seconds[name] += time.perf_counter() - t0
    pairs = args.batch_size * args.steps * args.rounds
    rates = {name: pairs / s for name, s in seconds.items()}
    (dense_name, sparse_name) = list(models)
    ratio = rates[sparse_name] / rates[dense_name]
    dev_name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {dev_name}  batch {args.batch_size}  bf16={args.bf16}  grad-ckpt={args.gradient_checkpointing}")
    print(f"{'model':40s} {'pairs/s':>10s}")
    for name, r in rates.items():
        print(f"{name:40s} {r:10.1f}")
    print(f"ratio sparse/dense: {ratio:.3f}  (target >= 0.95)")
    out = Path(args.output_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    results[f"{dev_name} bs{args.batch_size} bf16={args.bf16}"] = {"pairs_per_s": rates, "ratio": ratio}
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
