"""The post-hoc SAE baseline: training reduces reconstruction error, TopK keeps exactly k codes, persistence."""

import pytest
import torch

from modeling_sparse_clip.sae import SAEConfig, SparseAutoencoder, reconstruction_error, train_sae


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sparse_mixtures(n=1000, dim=32, atoms=64, active=3, seed=0):
    """Embeddings that ARE sparse non-negative mixtures of a hidden dictionary (what an SAE should find)."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.nn.functional.normalize(torch.randn(atoms, dim, generator=g), dim=-1)
    codes = torch.zeros(n, atoms)
    idx = torch.stack([torch.randperm(atoms, generator=g)[:active] for _ in range(n)])
    codes.scatter_(1, idx, torch.rand(n, active, generator=g) + 0.5)
    return codes @ dictionary


def test_topk_sae_learns_and_keeps_exactly_k_codes():
    data = sparse_mixtures()
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(input_dim=32, width=128, kind="topk", k=4))
    before = reconstruction_error(sae, data)
    history = train_sae(sae, data, epochs=25, batch_size=100, learning_rate=3e-3, progress=False)
    after = reconstruction_error(sae, data)
    assert after < before / 5, (before, after)
    assert history[-1]["mse"] < history[0]["mse"]
    with torch.no_grad():
        codes = sae.encode(data)
    nonzeros = (codes != 0).sum(-1)
    assert (codes >= 0).all()
    assert (nonzeros == 4).all(), nonzeros.unique(return_counts=True)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(128))


def test_relu_l1_sae_learns_sparse_codes():
    data = sparse_mixtures(seed=1)
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(input_dim=32, width=128, kind="relu_l1", k=None, l1_coefficient=3e-4))
    before = reconstruction_error(sae, data)
    history = train_sae(sae, data, epochs=25, batch_size=100, learning_rate=3e-3, progress=False)
    assert reconstruction_error(sae, data) < before / 3
    with torch.no_grad():
        codes = sae.encode(data)
    assert (codes >= 0).all()
    assert (codes > 0).sum(-1).float().mean() < 128 / 2  # the L1 term makes codes sparse
    assert history[-1]["l0"] < history[0]["l0"]
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(128))


def test_l1_warmup_ramps_the_l1_weight_linearly_then_holds_it():
    """`l1_warmup_fraction`: the L1 term's weight goes 1/n, 2/n, ..., 1 over the first n = fraction x
    total steps, then stays at full weight (the main job's ReLU+L1 SAE; fewer features die early)."""
    data = sparse_mixtures(n=400)
    sae = SparseAutoencoder(SAEConfig(input_dim=32, width=64, kind="relu_l1", k=None, l1_coefficient=1e-3))
    scales, loss = [], sae.loss

    def recording_loss(x, l1_scale=1.0):
        scales.append(l1_scale)
        return loss(x, l1_scale=l1_scale)

    sae.loss = recording_loss
    train_sae(sae, data, epochs=5, batch_size=100, progress=False, l1_warmup_fraction=0.4)  # 20 steps, 8 ramping
    assert scales == pytest.approx([i / 8 for i in range(1, 9)] + [1.0] * 12)
    x = data[:50]
    full, stats = loss(x)
    half, _ = loss(x, l1_scale=0.5)
    with torch.no_grad():
        l1 = sae.encode(x).abs().sum(-1).mean()
    torch.testing.assert_close(full - half, 0.5 * 1e-3 * l1)


def test_sae_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(input_dim=8, width=16, kind="topk", k=2, dense_model="some/dense"))
    sae.save_pretrained(tmp_path)
    loaded = SparseAutoencoder.from_pretrained(tmp_path)
    x = torch.randn(5, 8)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), rtol=0, atol=0)
    assert loaded.config == sae.config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="l2"), "unknown"),
        (dict(kind="topk", k=0), "0 < k"),
        (dict(kind="topk", k=99), "0 < k"),
        (dict(kind="relu_l1", l1_coefficient=0.0), "l1_coefficient"),
    ],
)
def test_sae_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SAEConfig(input_dim=8, width=16, **kwargs)


def test_from_pretrained_without_a_config_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="sparse-clip-train-sae"):
        SparseAutoencoder.from_pretrained(tmp_path)
