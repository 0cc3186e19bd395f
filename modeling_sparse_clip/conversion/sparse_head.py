r"""Initialising a wide ReLU head from a dense CLIP (`--signed_rotation_head WIDTH`, formerly `--sparsify`),
and choosing the activation of a converted model.

What it is, in one line: an EXACT LINEAR RE-ENCODING of the dense embedding into a ReLU head that
starts at 50% density. It is not the dense model: cosines, logits, sigmoid/bias outputs and some
rankings change. Measured by `--verify` / tests/test_conversion_open_clip.py on a random-weight
ViT-B-32 with scikit-learn's 2 photos + 4 emoji against 6 captions: cosines shift up by +0.29 on
average and their spread halves (ratio 0.50); top-1 agreement image->text / text->image is
100% / 83% at 16,384 wide and 83% / 33% at 1,024; L0 is exactly 50%. The re-encoding error is
1.3e-6 (relative). `--verify` prints this drift for every such conversion. Whether it is a good starting point for sparsification fine-tuning
is a training question (the sparsify -> fine-tune recipe), not a conversion one.

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


ACTIVATIONS = ("auto", "relu", "none")


def choose_activation(activation: str, declared: str | None, rotation_head: int | None, what: str = "the source") -> str:
    """The converted model's activation: what the source computes, unless asked for explicitly.

    declared: the activation the source's own config states (`sparse_clip_activation`, see
    `declared_activation`), None when it states none: a plain CLIP is dense, at ANY width (a wide
    projection alone says nothing: a dense model may be wider than its towers).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"--activation must be auto, relu or none for a converted checkpoint, got {activation!r}.")
    if rotation_head is not None:
        if activation == "none" or declared == "relu":
            raise ValueError(
                f"--signed_rotation_head builds a ReLU head from a DENSE projection; it cannot be combined with "
                f"{'--activation none' if activation == 'none' else what + ', which already declares a ReLU head'}."
            )
        return "relu"
    source_activation = declared or "none"
    if activation == "auto":
        return source_activation
    if activation != source_activation:
        print(
            f"--activation {activation}: {what} computes activation={source_activation}; the converted model will NOT "
            "reproduce it (its outputs differ from the source's), as asked."
        )
    return activation


def declared_activation(config: dict, what: str) -> str | None:
    """`sparse_clip_activation` of a source config (open_clip_config.json top level, or a CLIPModel's config.json):
    how a checkpoint of the paper's format (standard CLIP weights + a ReLU after the projection) says so."""
    value = config.get("sparse_clip_activation")
    if value is None:
        return None
    if value not in ("relu", "none"):
        raise ValueError(f"{what}: sparse_clip_activation={value!r}; a converted CLIP head is 'relu' or 'none'.")
    return value


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
            f"--signed_rotation_head {width}: the width must be even and at least twice the dense embedding width ({2 * d}); "
            f"the paper uses 32x-72x the tower width, e.g. {32 * d}."
        )
    q = random_orthonormal_columns(width // 2, d, seed)
    heads = []
    for projection in (visual_projection, text_projection):
        rotated = q @ projection.float()
        heads.append(torch.cat([rotated, -rotated], dim=0).contiguous())
    return heads[0], heads[1]
