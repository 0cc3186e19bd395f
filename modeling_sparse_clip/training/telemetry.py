"""Sparsity telemetry logged with the loss: L0 per modality, % of width, live and dead features, logit scale."""

from collections import deque

import torch


class SparsityTelemetry:
    """Accumulates per-row L0 since the last log and which features fired in the last `window` batches.

    Under data parallelism each rank sees its own batches; rank 0's numbers are what get logged.
    """

    def __init__(self, width: int, window: int = 50):
        self.width = width
        self.fired = deque(maxlen=window)  # one bool[width] per batch: fired on any image or text row
        self.l0 = {"image": [], "text": []}
        self.logit_scale = float("nan")

    @torch.no_grad()
    def update(self, image_activations: torch.Tensor, text_activations: torch.Tensor, logit_scale: torch.Tensor) -> None:
        for name, acts in (("image", image_activations), ("text", text_activations)):
            self.l0[name].append((acts != 0).sum(-1).float().cpu())
        self.fired.append(((image_activations != 0).any(0) | (text_activations != 0).any(0)).cpu())
        self.logit_scale = float(logit_scale)

    def summary(self) -> dict[str, float]:
        """Metrics for `Trainer.log`; resets the L0 accumulators."""
        out = {}
        for name, chunks in self.l0.items():
            if chunks:
                l0 = torch.cat(chunks)
                out[f"l0_{name}_mean"] = round(l0.mean().item(), 2)
                out[f"l0_{name}_median"] = l0.median().item()
                out[f"l0_{name}_pct_width"] = round(100.0 * l0.mean().item() / self.width, 4)
            chunks.clear()
        if self.fired:
            live = torch.stack(list(self.fired)).any(0)
            out["active_features_pct"] = round(100.0 * live.float().mean().item(), 3)
            out["dead_features"] = int((~live).sum())
        out["logit_scale"] = round(self.logit_scale, 4)
        return out
