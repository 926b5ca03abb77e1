"""Weight-port parity with diffusers' AutoencoderKL (random-init small config): our module names follow theirs, so
their state dict loads into ours unchanged and both give the same posterior and reconstruction."""
import pytest
import torch

from unigen.families.autoencoders.network import AutoencoderConfig, build_autoencoder

diffusers = pytest.importorskip("diffusers")


def _pair(attention: bool):
    torch.manual_seed(0)
    theirs = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                                     up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32),
                                     layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=16,
                                     mid_block_add_attention=attention).eval()
    m = AutoencoderConfig(kind="kl", channels=(16, 32, 32), layers=1, groups=8, latent_channels=4, attention=attention)
    ours = build_autoencoder(m, {"shape": (3, 16, 16)}).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize("attention", [True, False])
def test_kl_autoencoder_matches_diffusers(attention):
    ours, theirs = _pair(attention)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        post = theirs.encode(x).latent_dist
        mu, logvar = ours.posterior(x)
        z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(mu, post.mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logvar, post.logvar, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.decode(z), theirs.decode(z).sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), theirs(x).sample, rtol=1e-5, atol=1e-5)
    assert ours.latent_shape((3, 16, 16)) == (4, 4, 4)
