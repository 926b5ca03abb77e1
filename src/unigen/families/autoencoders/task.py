"""Autoencoders as a unigen family: LDM's KL-regularised autoencoder and Kingma & Welling's VAE.

    loss       kl: L1 (or L2) reconstruction summed per image + kl_weight KL (one reparameterised z), batch mean;
               vae: the negative ELBO in nats per dimension (training scale; eval reports nats per image)
    sample     `prior`: reconstructions.png (pairs of rows: test images, reconstructions); the VAE also decodes
               z ~ N(0, I) into samples.png (the mean of p(x|z)). The KL autoencoder has no useful prior (its KL
               weight is 1e-6), so it writes reconstructions only: its generative model is latent diffusion.
    evaluate   psnr (+ se), fd (MNIST feature net) / fd_pixels of reconstructions against the test images; the VAE
               adds -ELBO and -IWAE-k (k = 1, 8, 64, model.iwae_k) in nats and bits/dim, and fd of its samples
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from unigen.config import Config
from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.families.autoencoders import evaluate
from unigen.families.autoencoders.gaussian import kl_standard_normal, reparameterize
from unigen.families.autoencoders.losses import kl_autoencoder_loss, log_likelihood
from unigen.families.autoencoders.network import (VAE, AutoencoderConfig, KLAutoencoder, VQAutoencoder,
                                                  build_autoencoder)
from unigen.families.autoencoders.quantize import codebook_loss, commitment_loss, perplexity, straight_through
from unigen.io import atomic_path
from unigen.task import Task, unwrap
from unigen.train.objective import Objective

QUICK_EVAL = 500        # test images in quick mode


def kl_loss(model: nn.Module, batch: dict[str, Tensor], *, kl_weight: float = 1e-6,
            rec_loss: str = "l1") -> tuple[Tensor, dict]:
    """LDM's KL autoencoder objective on one batch: mean over images of rec + kl_weight KL."""
    net = unwrap(model, KLAutoencoder, "a KL autoencoder")
    x = batch["x"]
    mu, logvar = net.posterior(x)
    x_hat = net.decode(reparameterize(mu, logvar))
    loss, rec, kl = kl_autoencoder_loss(x, x_hat, mu, logvar, kl_weight, rec_loss)
    return loss.mean(), {"rec": float(rec.detach().mean()), "kl": float(kl.detach().mean())}


def vq_loss(model: nn.Module, batch: dict[str, Tensor], *, beta: float = 0.25, rec_loss: str = "l2",
            decay: float = 0.99, eps: float = 1e-5, restart: float = 0.0) -> tuple[Tensor, dict]:
    """VQ-VAE objective (Eq. 3): mean reconstruction error + ||sg[z_e] - e||^2 (not with the EMA codebook) +
    beta ||z_e - sg[e]||^2; in training mode it then moves the EMA codebook and restarts dead codes."""
    net = unwrap(model, VQAutoencoder, "a VQ autoencoder")
    x = batch["x"]
    z_e = net.encode_continuous(x)
    z_q, k = net.quantize.quantize(z_e)
    x_hat = net.decode(straight_through(z_e, z_q))
    rec = (x_hat - x).abs().mean() if rec_loss == "l1" else (x_hat - x).pow(2).mean()
    commit = commitment_loss(z_e, z_q)
    loss = rec + beta * commit + (0.0 if net.quantize.ema else codebook_loss(z_e, z_q))
    restarted = 0
    if net.training and torch.is_grad_enabled():
        net.quantize.update(z_e, k, decay, eps)
        restarted = net.quantize.restart_dead(z_e, restart) if restart > 0 else 0
    ppl, used = perplexity(k, net.quantize.K)
    return loss, {"rec": float(rec.detach()), "commit": float(commit.detach()), "perplexity": ppl,
                  "code_usage": used, "restarted": restarted}


def vae_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
    """The VAE's negative ELBO (K&W Eq. 10, analytic KL, one z per image) in nats per dimension, batch mean."""
    net = unwrap(model, VAE, "a VAE")
    target, x_in = evaluate.vae_inputs(batch["x"], net.likelihood)
    mu, logvar = net.posterior(x_in)
    log_px_z = log_likelihood(target, net.decoder_params(reparameterize(mu, logvar)), net.likelihood)
    kl = kl_standard_normal(mu, logvar)
    nelbo = (kl - log_px_z).mean()
    return nelbo / net.dims, {"nelbo_nats": float(nelbo.detach()), "kl": float(kl.detach().mean())}


def _save(x: Tensor, path: Path) -> Path:
    with atomic_path(path) as tmp:
        save_file({"x": x.float().contiguous()}, str(tmp))
    return path


class AutoencoderTask(Task):
    model_config = AutoencoderConfig
    samplers = ("prior",)

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        return build_autoencoder(cfg.model, data_info)

    def objectives(self, cfg: Config) -> list[Objective]:
        m = cfg.model
        losses = {"vae": vae_loss, "kl": partial(kl_loss, kl_weight=m.kl_weight, rec_loss=m.rec_loss),
                  "vq": partial(vq_loss, beta=m.beta, rec_loss=m.rec_loss, decay=m.codebook_decay,
                                eps=m.codebook_eps, restart=m.restart)}
        return [Objective("main", losses[m.kind])]

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        losses = {VAE: vae_loss, KLAutoencoder: kl_loss, VQAutoencoder: vq_loss}
        return losses[type(unwrap(model))](model, batch)

    def sample(self, model: nn.Module, cfg: Config, *, run_dir: Path, out_dir: Path, n: int, sampler: str,
               steps: int, seed: int, **kw) -> dict[str, Any]:
        if kw:
            raise UserError(f"autoencoder sampling has no option(s) {', '.join(kw)}")
        net = unwrap(model)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        test = load_data(cfg.data, "test")
        x = test.batch(torch.arange(min(n, len(test))))["x"]
        samples, files = None, {}
        if isinstance(net, VAE):
            z = torch.randn(n, net.latent_dim, generator=torch.Generator().manual_seed(seed))
            samples = net.decode(z)
            files["samples"] = str(_save(samples, out_dir / "samples.safetensors"))
        files.update(evaluate.pictures(net, x, out_dir, samples))
        return {**files, "n": n, "sampler": sampler}

    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False, n: int = 0,
                 **kw) -> dict:
        """PSNR and FD of reconstructions of the test split (quick: its first 500 images; `n`: the first n);
        the VAE adds its likelihood bounds and the FD of prior samples."""
        if kw:
            raise UserError(f"autoencoder eval has no option(s) {', '.join(kw)}")
        if n < 0:
            raise UserError(f"--n must be >= 0, got {n}")
        net = unwrap(model)
        test = load_data(cfg.data, "test")
        count = min(len(test), n or (QUICK_EVAL if quick else len(test)))
        x = test.batch(torch.arange(count))["x"]
        x_hat = evaluate.reconstruct(net, x)
        p = evaluate.psnr(x, x_hat)
        out: dict[str, float] = {"psnr": float(p.mean()), "psnr_se": float(p.std() / len(p) ** 0.5),
                                 "n_eval": count, **evaluate.frechet(x_hat, x)}
        if isinstance(net, VQAutoencoder):
            out.update(evaluate.code_statistics(net, x))
        if isinstance(net, VAE):
            out.update(evaluate.vae_bounds(net, x, 8 if quick else cfg.model.iwae_k))
            z = torch.randn(count, net.latent_dim, generator=torch.Generator().manual_seed(cfg.sample.seed))
            out.update({f"sample_{k}": v for k, v in evaluate.frechet(net.decode(z).clamp(-1, 1), x).items()})
        return out


TASK = AutoencoderTask()
