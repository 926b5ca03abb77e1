"""Vector quantisation against brute force and hand-derived gradients; the EMA codebook against a k-means step;
weight-port parity of the VQ autoencoder with diffusers' VQModel."""
import math

import pytest
import torch

from unigen.families.autoencoders.network import AutoencoderConfig, build_autoencoder
from unigen.families.autoencoders.quantize import (VectorQuantizer, codebook_loss, commitment_loss, ema_codebook,
                                                   nearest_code, perplexity, straight_through)


def test_nearest_code_is_the_brute_force_argmin():
    g = torch.Generator().manual_seed(0)
    z, e = torch.randn(200, 6, generator=g, dtype=torch.float64), torch.randn(37, 6, generator=g, dtype=torch.float64)
    brute = torch.tensor([min(range(len(e)), key=lambda j: float(((zi - e[j]) ** 2).sum())) for zi in z])
    assert torch.equal(nearest_code(z, e), brute)


def test_straight_through_passes_the_gradient_unchanged():
    z_e = torch.randn(4, 3, requires_grad=True)
    z_q = torch.randn(4, 3)
    out = straight_through(z_e, z_q)
    torch.testing.assert_close(out, z_q)                  # forward value: z_q
    upstream = torch.randn(4, 3)
    out.backward(upstream)
    assert torch.equal(z_e.grad, upstream)


def test_beta_is_on_the_commitment_term():
    """d/dz_e [cb + beta commit] = 2 beta (z_e - e) / n and d/de = 2 (e - z_e) / n (Eq. 3), not the other way round."""
    beta, n = 0.25, 12
    z_e, e = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    (codebook_loss(z_e, e) + beta * commitment_loss(z_e, e)).backward()
    torch.testing.assert_close(z_e.grad, 2 * beta * (z_e - e).detach() / n)
    torch.testing.assert_close(e.grad, 2 * (e - z_e).detach() / n)


def test_ema_at_decay_zero_is_one_kmeans_step():
    g = torch.Generator().manual_seed(1)
    K, D = 5, 3
    e = torch.randn(K, D, generator=g, dtype=torch.float64)
    z = torch.randn(300, D, generator=g, dtype=torch.float64)
    k = nearest_code(z, e)
    assert len(k.unique()) == K
    means = torch.stack([z[k == i].mean(0) for i in range(K)])
    _, _, new = ema_codebook(torch.zeros(K, dtype=torch.float64), torch.zeros(K, D, dtype=torch.float64), 1, z, k,
                             decay=0.0, eps=1e-12)
    torch.testing.assert_close(new, means)
    # debiased: at decay 0.99 the first step, and a second step on the same batch, are the same k-means step
    n, m, first = ema_codebook(torch.zeros(K, dtype=torch.float64), torch.zeros(K, D, dtype=torch.float64), 1, z, k,
                               decay=0.99, eps=1e-12)
    _, _, second = ema_codebook(n, m, 2, z, k, decay=0.99, eps=1e-12)
    torch.testing.assert_close(first, means)
    torch.testing.assert_close(second, means)


def test_ema_moving_averages_are_debiased_like_sonnet():
    """Sonnet 2's ExponentialMovingAverage divides its hidden value by 1 - decay^count, so after one step N is the
    batch's counts themselves; that matters through the smoothing: e_i = m_i / ((N_i + eps) / (n + K eps) n)."""
    e = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    z = torch.tensor([[1.0], [2.0], [9.0]], dtype=torch.float64)
    k = nearest_code(z, e)
    _, _, new = ema_codebook(torch.zeros(2, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64), 1, z, k,
                             decay=0.99, eps=0.5)
    N, m = torch.tensor([2.0, 1.0], dtype=torch.float64), torch.tensor([[3.0], [9.0]], dtype=torch.float64)
    expected = m / ((N + 0.5) / (3 + 2 * 0.5) * 3)[:, None]
    torch.testing.assert_close(new, expected)


def test_laplace_smoothing_keeps_unused_codes_finite():
    e = torch.tensor([[0.0], [10.0], [100.0]])
    z = torch.tensor([[1.0], [2.0]])
    n, m, new = ema_codebook(torch.zeros(3), torch.zeros(3, 1), 1, z, nearest_code(z, e), decay=0.5, eps=1e-5)
    assert torch.isfinite(new).all() and new[2].item() == 0.0 and new[0].item() == pytest.approx(1.5, rel=1e-4)


def test_perplexity_and_usage():
    assert perplexity(torch.arange(8), 16) == (pytest.approx(8.0), 0.5)
    assert perplexity(torch.zeros(10, dtype=torch.long), 4) == (pytest.approx(1.0), 0.25)


def test_dead_codes_restart_at_encoder_outputs():
    vq = VectorQuantizer(4, 2, ema=True)
    vq.usage.copy_(torch.tensor([1.0, 0.0, 5.0, 0.001]))
    z = torch.randn(2, 2, 3, 3)
    torch.manual_seed(0)
    assert vq.restart_dead(z, threshold=0.01) == 2
    rows = z.permute(0, 2, 3, 1).reshape(-1, 2)
    for j in (1, 3):
        assert (rows == vq.embedding.weight[j]).all(1).any()
    assert (vq.usage >= 0.01).all()


def test_vq_autoencoder_matches_diffusers_vqmodel():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    theirs = diffusers.VQModel(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                               up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32),
                               layers_per_block=1, latent_channels=3, norm_num_groups=8, num_vq_embeddings=20,
                               vq_embed_dim=5, sample_size=8).eval()
    m = AutoencoderConfig(kind="vq", channels=(16, 32), layers=1, groups=8, latent_channels=3, codebook_size=20,
                          code_dim=5)
    ours = build_autoencoder(m, {"shape": (1, 8, 8)}).eval()
    result = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert result.missing_keys == ["quantize.usage"] and result.unexpected_keys == []
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_continuous(x), theirs.encode(x).latents, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), theirs(x).sample, rtol=1e-5, atol=1e-5)
    assert ours.latent_shape((1, 8, 8)) == (5, 4, 4) and ours.codes(x).shape == (3, 4, 4)
