"""The multi-scale flow that every architecture is an instance of (Dinh et al. 2017, Sec. 3.6; Kingma & Dhariwal
2018, Fig. 2b): scales of invertible layers; after each scale but the last, half of the channels are factored out
as a latent z_i with its own prior and the other half h_i carries on.

    x --scale 0--> [h_0 | z_0] --scale 1--> [h_1 | z_1] ... --scale L-1--> z_{L-1}
    log p(x) = sum_i log p_i(z_i | h_i) + log p_{L-1}(z_{L-1}) + sum of every layer's log|det|

NICE and the toy2d flows are the one-scale case. `forward(x) -> (z, logdet)` is the whole bijection with the
latents flattened and concatenated (what the Jacobian tests check); `inverse(z)` undoes it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from unigen.errors import UserError


class FlowModel(nn.Module):
    def __init__(self, scales: list[list[nn.Module]], priors: list[nn.Module], shape: tuple[int, ...]):
        super().__init__()
        if len(priors) != len(scales):
            raise UserError(f"{len(scales)} scales need {len(scales)} priors, got {len(priors)}")
        self.scales = nn.ModuleList(nn.ModuleList(s) for s in scales)
        self.priors = nn.ModuleList(priors)
        self.shape = tuple(shape)
        was = self.training
        with torch.no_grad():                          # eval mode: no actnorm initialisation on this probe
            zs, _, _ = self.eval().transform(torch.zeros(1, *self.shape))
        self.train(was)
        self.latent_shapes = [tuple(z.shape[1:]) for z in zs]

    @property
    def dims(self) -> int:
        """D, the number of entries of one example."""
        return int(torch.Size(self.shape).numel())

    def transform(self, x: Tensor, watch=None) -> tuple[list[Tensor], list[Tensor | None], Tensor]:
        """x -> (latents z_0..z_{L-1}, the halves h_i each z_i is conditioned on (None for the last), logdet (B,)).
        `watch(name, h, logdet)`, if given, sees every layer's output."""
        h, logdet = x, x.new_zeros(x.shape[0])
        zs, conds = [], []
        for i, layers in enumerate(self.scales):
            for j, layer in enumerate(layers):
                h, ld = layer(h)
                logdet = logdet + ld
                if watch is not None:
                    watch(f"scales.{i}.{j} ({type(layer).__name__})", h, ld)
            if i < len(self.scales) - 1:
                keep = h.shape[1] // 2
                h, z = h[:, :keep], h[:, keep:]                            # (B, C/2, H, W) each
                zs.append(z)
                conds.append(h)
        zs.append(h)
        conds.append(None)
        return zs, conds, logdet

    def untransform(self, zs: list[Tensor]) -> Tensor:
        """The inverse of `transform`: latents -> x."""
        h = zs[-1]
        for i in reversed(range(len(self.scales))):
            if i < len(self.scales) - 1:
                h = torch.cat([h, zs[i]], 1)
            for layer in reversed(self.scales[i]):
                h = layer.inverse(h)
        return h

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) (B,) in nats: the priors of every latent plus the log-determinants (change of variables)."""
        zs, conds, logdet = self.transform(x)
        return logdet + sum(p.log_prob(z, c) for p, z, c in zip(self.priors, zs, conds))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        zs, _, logdet = self.transform(x)
        return torch.cat([z.flatten(1) for z in zs], 1), logdet                 # (B, D), (B,)

    def unflatten(self, z: Tensor) -> list[Tensor]:
        sizes = [int(torch.Size(s).numel()) for s in self.latent_shapes]
        return [p.view(z.shape[0], *s) for p, s in zip(z.split(sizes, 1), self.latent_shapes)]

    def inverse(self, z: Tensor) -> Tensor:
        return self.untransform(self.unflatten(z))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """n draws of x: the top latent from its prior, then each factored-out latent from its prior given the
        half already decoded, every prior's spread scaled by `temperature`."""
        device = next(self.parameters()).device
        last = len(self.scales) - 1
        h = self.priors[last].sample(n, self.latent_shapes[last], temperature, generator, device=device)
        for i in reversed(range(len(self.scales))):
            if i < last:
                z = self.priors[i].sample(n, self.latent_shapes[i], temperature, generator, cond=h, device=device)
                h = torch.cat([h, z], 1)
            for layer in reversed(self.scales[i]):
                h = layer.inverse(h)
        return h

    @torch.no_grad()
    def first_nonfinite(self, x: Tensor) -> str | None:
        """The name of the first layer (or prior) whose output or log-determinant is not finite on x, else None:
        what the training loss reports when log p(x) is NaN/Inf (a singular 1x1 convolution gives -inf)."""
        def watch(name: str, h: Tensor, ld: Tensor) -> None:
            if not (torch.isfinite(h).all() and torch.isfinite(ld).all()):
                raise _Found(name)
        try:
            zs, conds, _ = self.transform(x, watch)
        except _Found as e:
            return str(e)
        for i, (p, z, c) in enumerate(zip(self.priors, zs, conds)):
            if not torch.isfinite(p.log_prob(z, c)).all():
                return f"priors.{i} ({type(p).__name__})"
        return None


class _Found(Exception):
    """Raised by `first_nonfinite`'s watch to stop at the first non-finite layer."""
