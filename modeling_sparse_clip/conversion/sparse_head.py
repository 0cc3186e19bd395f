r"""Initialising a wide ReLU head from a dense CLIP (`--sparsify WIDTH`), and choosing the activation.

Sparse CLIP puts a ReLU after a projection that is much wider than the dense one. Starting
sparsification fine-tuning from a dense CLIP needs a wide head that, before any training, keeps
what the dense model knows. The head chosen here is the *signed random rotation*:

    W = [Q P ; -Q P]          P: dense projection (d, w), Q: (WIDTH/2, d) with orthonormal columns
    u = relu(W x) = [relu(Q z), relu(-Q z)],   z = P x the dense embedding

Why this one:

1. Lossless. `u[:D/2] - u[D/2:] = Q z` and `Q^T Q = I`, so `z = Q^T (u_+ - u_-)`: the dense
   embedding is exactly recoverable from the sparse one, and `(u_+ - u_-)` of two inputs has
   exactly the dense inner product. (Tiling P without the sign flip would lose every negative
   coordinate; a fresh random head would lose everything.)
2. Rankings are kept. `<u, v> = (z.w + |Qz|.|Qw|) / 2`, and `||u|| = ||z||`. For a random
   rotation into D/2 >> d dims the coordinates of (Qz, Qw) behave like correlated Gaussian pairs,
   so `|Qz|.|Qw| -> (2/pi) ||z|| ||w|| (sqrt(1-rho^2) + rho*arcsin(rho))`, rho = cos(z, w), up to
   O(D^-1/2). Then `cos(u, v) -> g(rho) = (rho + (2/pi)(sqrt(1-rho^2) + rho*arcsin(rho))) / 2`,
   whose derivative `(1 + (2/pi) arcsin(rho)) / 2` is > 0 for rho > -1: a strictly increasing
   function of the dense cosine. Zero-shot rankings (argmax over classes, retrieval order) are
   therefore those of the dense model up to O(D^-1/2) noise, which shrinks as the head widens.
   Without Q (D = 2d) the nuisance term |z|.|w| depends on which coordinates z and w share and
   rankings drift much more.
3. It starts at 50% density, not at the paper's ~0.5%: sparsity is then learnt by the usual
   contrastive training with the capped logit scale, the way the paper's ReLU models sparsify
   gradually (it found TopK/L1 that force sparsity from the first step end worse).

No extra noise is added: the +/- pairs are not a symmetric saddle (each input activates exactly
one unit of a pair) and the random Q already makes every unit distinct; noise would only break
property 1. Both towers share the same Q, so image and text stay in one space. The logit scale is
kept (capped by `logit_scale_max`); g compresses cosines by ~2x around rho = 0, so fine-tuning
will raise the scale.
"""

import torch


def choose_activation(activation: str, projection_dim: int, tower_widths: tuple[int, int], sparsify: int | None) -> str:
    """`auto`: a projection wider than both towers is the paper's ReLU format; otherwise dense."""
    if sparsify is not None:
        if activation not in ("auto", "relu"):
            raise ValueError(f"--sparsify builds a ReLU head; it cannot be combined with --activation {activation}.")
        return "relu"
    if activation == "auto":
        return "relu" if projection_dim > max(tower_widths) else "none"
    if activation not in ("relu", "none"):
        raise ValueError(f"--activation must be auto, relu or none for a converted checkpoint, got {activation!r}.")
    return activation


def random_orthonormal_columns(rows: int, cols: int, seed: int) -> torch.Tensor:
    """(rows, cols) with orthonormal columns (rows >= cols), from the QR of a seeded Gaussian matrix."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # sign fix: a Haar-distributed rotation


def signed_rotation_heads(
    visual_projection: torch.Tensor, text_projection: torch.Tensor, width: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wide (width, tower) heads `[QP; -QP]` for both towers, from dense (d, tower) projection weights."""
    d = visual_projection.shape[0]
    if text_projection.shape[0] != d:
        raise ValueError(f"the two dense projections disagree on the embedding width: {d} vs {text_projection.shape[0]}")
    if width % 2 or width < 2 * d:
        raise ValueError(
            f"--sparsify {width}: the width must be even and at least twice the dense embedding width ({2 * d}); "
            f"the paper uses 32x-72x the tower width, e.g. {32 * d}."
        )
    q = random_orthonormal_columns(width // 2, d, seed)
    heads = []
    for projection in (visual_projection, text_projection):
        rotated = q @ projection.float()
        heads.append(torch.cat([rotated, -rotated], dim=0).contiguous())
    return heads[0], heads[1]
