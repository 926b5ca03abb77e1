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

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from unigen.config import Config
from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.families.autoencoders import evaluate
from unigen.families.autoencoders.adversarial import (adaptive_weight, adopt_weight, generator_loss, hinge_d_loss,
                                                      perceptual_distance)
from unigen.families.autoencoders.gaussian import kl_standard_normal, reparameterize
from unigen.families.autoencoders.losses import kl_autoencoder_loss, log_likelihood
from unigen.families.autoencoders.network import (VAE, AutoencoderConfig, CodePrior, KLAutoencoder, PriorConfig,
                                                  VQAutoencoder, build_autoencoder, check_prior)
from unigen.families.discrete_diffusion import noise
from unigen.families.discrete_diffusion.ar import ar_token_nll, sample_ar
from unigen.families.discrete_diffusion.masked import mdlm_token_nll
from unigen.families.discrete_diffusion.samplers import SAMPLERS, MaskedDenoiser
from unigen.families.autoencoders.quantize import codebook_loss, commitment_loss, perplexity, straight_through
from unigen.io import atomic_path, read_json
from unigen.metrics.features import ensure_feature_net
from unigen.plot import save_image_grid
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


def _vq_forward(net: VQAutoencoder, x: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(x_hat through the straight-through estimator, z_e, codes k, commitment loss, codebook + beta commitment)."""
    z_e = net.encode_continuous(x)
    z_q, k = net.quantize.quantize(z_e)
    x_hat = net.decode(straight_through(z_e, z_q))
    commit = commitment_loss(z_e, z_q)
    q_loss = beta * commit + (0.0 if net.quantize.ema else codebook_loss(z_e, z_q))
    return x_hat, z_e, k, commit, q_loss


def _vq_update(net: VQAutoencoder, z_e: Tensor, k: Tensor, decay: float, eps: float, restart: float) -> dict:
    """In training: the EMA codebook step and dead-code restarts; the batch's code statistics for the log."""
    restarted = 0
    if net.training and torch.is_grad_enabled():
        net.quantize.update(z_e, k, decay, eps)
        restarted = net.quantize.restart_dead(z_e, restart) if restart > 0 else 0
    ppl, used = perplexity(k, net.quantize.K)
    return {"perplexity": ppl, "code_usage": used, "restarted": restarted}


def vq_loss(model: nn.Module, batch: dict[str, Tensor], *, beta: float = 0.25, rec_loss: str = "l2",
            decay: float = 0.99, eps: float = 1e-5, restart: float = 0.0) -> tuple[Tensor, dict]:
    """VQ-VAE objective (Eq. 3): mean reconstruction error + ||sg[z_e] - e||^2 (not with the EMA codebook) +
    beta ||z_e - sg[e]||^2; in training mode it then moves the EMA codebook and restarts dead codes."""
    net = unwrap(model, VQAutoencoder, "a VQ autoencoder")
    x = batch["x"]
    x_hat, z_e, k, commit, q_loss = _vq_forward(net, x, beta)
    rec = (x_hat - x).abs().mean() if rec_loss == "l1" else (x_hat - x).pow(2).mean()
    logs = _vq_update(net, z_e, k, decay, eps, restart)
    return rec + q_loss, {"rec": float(rec.detach()), "commit": float(commit.detach()), **logs}


def vqgan_generator_loss(model: nn.Module, batch: dict[str, Tensor], step: int | None = None, *,
                         m: AutoencoderConfig, features: Callable[[Tensor], list[Tensor]] | None = None
                         ) -> tuple[Tensor, dict]:
    """Taming's VQLPIPSWithDiscriminator, generator side: nll = mean |x - x_hat| + perceptual_weight d_perc,
    loss = nll + lambda adopt(step) L_GAN + codebook_weight L_VQ, lambda the adaptive weight at the decoder's
    last layer (Eq. 7)."""
    net = unwrap(model, VQAutoencoder, "a VQGAN")
    x = batch["x"]
    x_hat, z_e, k, commit, q_loss = _vq_forward(net, x, m.beta)
    nll = (x_hat - x).abs().mean()
    if features is not None and m.perceptual_weight > 0:
        nll = nll + m.perceptual_weight * perceptual_distance(features(x), features(x_hat)).mean()
    loss, logs = nll + m.codebook_weight * q_loss, {"nll": float(nll.detach()), "commit": float(commit.detach())}
    factor = adopt_weight(1.0, step, m.disc_start)
    if factor > 0 and torch.is_grad_enabled():
        g_loss = generator_loss(net.discriminator(x_hat))
        lam = adaptive_weight(nll, g_loss, net.decoder.last_layer, m.disc_weight)
        loss = loss + lam * factor * g_loss
        logs.update(g_loss=float(g_loss.detach()), d_weight=float(lam))
    logs.update(_vq_update(net, z_e, k, m.codebook_decay, m.codebook_eps, m.restart))
    return loss, logs


def vqgan_discriminator_loss(model: nn.Module, batch: dict[str, Tensor], step: int | None = None, *,
                             m: AutoencoderConfig) -> tuple[Tensor, dict]:
    """Hinge loss of the patch discriminator on real images and (detached) reconstructions, 0 before disc_start."""
    net = unwrap(model, VQAutoencoder, "a VQGAN")
    x = batch["x"]
    with torch.no_grad():
        x_hat = net.decode(net.encode(x))
    real, fake = net.discriminator(x), net.discriminator(x_hat)
    d_loss = adopt_weight(1.0, step, m.disc_start) * hinge_d_loss(real, fake)
    return d_loss, {"logits_real": float(real.detach().mean()), "logits_fake": float(fake.detach().mean())}


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


def feature_maps(x: Tensor) -> list[Tensor]:
    """The perceptual network: the two conv layers' activations of unigen.metrics.features' MNIST CNN (trained by
    us on MNIST's labels, cached; LPIPS's VGG weights are a download, which is not possible here)."""
    if tuple(x.shape[1:]) != (1, 28, 28):
        raise UserError(f"the perceptual term needs MNIST-shaped images (1, 28, 28), got {tuple(x.shape[1:])}; "
                        "set model.perceptual_weight=0")
    net = ensure_feature_net()
    h1 = F.gelu(net.conv1(x))                                                   # (B, 32, 28, 28)
    h2 = F.gelu(net.conv2(F.max_pool2d(h1, 2)))                                 # (B, 64, 14, 14)
    return [h1, h2]


def vqgan_objectives(cfg: Config) -> list[Objective]:
    """Generator (every parameter but the discriminator's) then discriminator (from disc_start), Adam (0.5, 0.9)."""
    m = cfg.model
    features = feature_maps if m.perceptual_weight > 0 else None
    gen = partial(vqgan_generator_loss, m=m, features=features)
    disc = partial(vqgan_discriminator_loss, m=m)
    not_disc = lambda net: (p for n, p in net.named_parameters() if not n.startswith("discriminator."))  # noqa: E731
    return [Objective("gen", gen, params=not_disc, betas=(0.5, 0.9), with_step=True),
            Objective("disc", disc, params=lambda net: net.discriminator.parameters(), betas=(0.5, 0.9),
                      start=m.disc_start, with_step=True)]


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
        if m.kind == "vq" and m.disc_weight > 0:
            return vqgan_objectives(cfg)
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


# ---- the prior over the code grid --------------------------------------------------------------------------------

def load_first_stage(path: str, data_info: dict) -> VQAutoencoder:
    """The VQ autoencoder of run directory `path` (without its discriminator), checked against this dataset."""
    run = Path(path)
    missing = f"model.first_stage={path!r} is not a run directory (no config.json); train mnist-vqgan first"
    saved = read_json(run / "config.json", "first-stage config", missing=missing)
    model = saved.get("model") or {}
    if saved.get("task") != "autoencoders" or model.get("kind") != "vq":
        raise UserError(f"model.first_stage={path!r} is not a VQ autoencoder run (task {saved.get('task')!r}, "
                        f"kind {model.get('kind')!r})")
    shape = tuple(read_json(run / "data_info.json", "first-stage data info").get("shape", ()))
    if shape != tuple(data_info["shape"]):
        raise UserError(f"model.first_stage={path!r} was trained on images {shape}, this run's data are "
                        f"{tuple(data_info['shape'])}")
    names = {f.name for f in dataclasses.fields(AutoencoderConfig)}
    m = AutoencoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model.items() if k in names})
    m.disc_weight = 0.0
    net = build_autoencoder(m, data_info)
    if not (run / "model.safetensors").exists():
        raise UserError(f"model.first_stage={path!r} has no model.safetensors (training did not finish)")
    state = {k: v for k, v in load_file(str(run / "model.safetensors")).items() if not k.startswith("discriminator.")}
    net.load_state_dict(state)
    return net.eval()


def code_sequence(prior: CodePrior, batch: dict[str, Tensor]) -> Tensor:
    """(B, 1 + h w): the conditioning token, then the first stage's codes of batch["x"] in raster order."""
    with torch.no_grad():
        k = prior.first_stage.codes(batch["x"]).flatten(1)                    # (B, h w)
    return torch.cat([prior.cond_tokens(batch.get("y"), len(k)), k], 1)


def prior_token_nll(prior: CodePrior, seq: Tensor, t: Tensor | None = None) -> Tensor:
    """Per-code negative log-likelihood terms (B, h w) in nats: exact (AR, teacher forcing), or MDLM's NELBO
    terms at times t ~ U[eps, 1] (masked prior; the conditioning token is never masked)."""
    if prior.prior == "ar":
        return ar_token_nll(lambda ids: prior.logits(ids), seq)
    keep = torch.zeros_like(seq, dtype=torch.bool)
    keep[:, 0] = True
    t = noise.sample_t(len(seq), device=seq.device) if t is None else t
    return mdlm_token_nll(lambda x_t, s: prior.logits(x_t, s), seq, t, prior.mask_id, keep=keep)[:, 1:]


def prior_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Nats per code: the AR cross-entropy, or the masked-diffusion NELBO divided by the number of codes."""
    prior = unwrap(model, CodePrior, "a code prior")
    return prior_token_nll(prior, code_sequence(prior, batch)).mean()


@torch.no_grad()
def sample_codes(prior: CodePrior, m: PriorConfig, n: int, sampler: str, steps: int, seed: int,
                 y: Tensor | None = None) -> Tensor:
    """Code grids (n, h, w): AR with top-k (sampler "default" of an AR prior), or the masked prior's MaskGIT-style
    low-confidence parallel decoding ("default" / "maskgit": discrete_diffusion's llada sampler) or MDLM's
    ancestral sampler ("mdlm"), in `steps` steps (default 12)."""
    g = torch.Generator().manual_seed(seed)
    L = prior.grid[0] * prior.grid[1]
    canvas = torch.cat([prior.cond_tokens(y, n), torch.full((n, L), prior.mask_id)], 1)
    if prior.prior == "ar":
        if sampler != "default":
            raise UserError(f"sampler {sampler!r} needs a masked prior (model.prior=mask); an AR prior samples with "
                            "'default'")
        out, _ = sample_ar(prior, canvas, mask_id=prior.mask_id, temperature=m.temperature, top_k=m.top_k or None,
                           generator=g)
    else:
        name = "mdlm" if sampler == "mdlm" else "llada"
        denoiser = MaskedDenoiser(lambda x_t, t: prior.logits(x_t, t), prior.mask_id)
        extra = {} if name == "mdlm" else {"temperature": m.temperature}
        out, _ = SAMPLERS[name](denoiser, canvas, steps=steps or 12, generator=g, **extra)
    return out[:, 1:].reshape(n, *prior.grid)


class CodePriorTask(Task):
    """Taming's second stage: a transformer prior over a trained VQ autoencoder's codes (see `PriorConfig`)."""
    model_config = PriorConfig
    samplers = ("default", "maskgit", "mdlm")

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        check_prior(cfg.model)
        first = load_first_stage(cfg.model.first_stage, data_info)
        grid = first.latent_shape(tuple(data_info["shape"]))[1:]
        return CodePrior(cfg.model, first, grid, int(data_info.get("num_classes") or 0))

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return prior_loss(model, batch)

    def sample(self, model: nn.Module, cfg: Config, *, run_dir: Path, out_dir: Path, n: int, sampler: str,
               steps: int, seed: int, **kw) -> dict[str, Any]:
        if kw:
            raise UserError(f"code-prior sampling has no option(s) {', '.join(kw)}")
        prior = unwrap(model, CodePrior, "a code prior")
        y = torch.arange(n) % prior.n_cond if prior.n_cond > 1 else None
        x = prior.first_stage.decode_codes(sample_codes(prior, cfg.model, n, sampler, steps, seed, y)).clamp(-1, 1)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {"samples": str(_save(x, out_dir / "samples.safetensors")),
                 "image": str(save_image_grid(x, out_dir / "samples.png", nrow=10))}
        return {**files, "n": n, "sampler": sampler}

    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False, n: int = 0,
                 **kw) -> dict:
        """Code NLL on the test split (quick: 500 images) in nats and bits per image dimension beside the uniform
        code baseline, and the FD of n samples (quick 200, else 1000) against the test images."""
        if kw:
            raise UserError(f"code-prior eval has no option(s) {', '.join(kw)}")
        prior = unwrap(model, CodePrior, "a code prior")
        test = load_data(cfg.data, "test")
        x = test.batch(torch.arange(min(len(test), QUICK_EVAL if quick else len(test))))
        out = evaluate.prior_bits(prior, lambda b: prior_token_nll(prior, code_sequence(prior, b)), x)
        count = n or (200 if quick else 1000)
        y = torch.arange(count) % prior.n_cond if prior.n_cond > 1 else None
        codes = sample_codes(prior, cfg.model, count, "default", 0, cfg.sample.seed, y)
        samples = torch.cat([prior.first_stage.decode_codes(codes[i:i + 250]) for i in range(0, count, 250)])
        return {**out, **{f"sample_{k}": v for k, v in evaluate.frechet(samples.clamp(-1, 1), x["x"]).items()},
                "n_samples": count}


PRIOR_TASK = CodePriorTask()
