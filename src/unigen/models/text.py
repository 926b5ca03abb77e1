"""A Llama-style text transformer for autoregressive and diffusion language models.

Pre-norm blocks (RMSNorm -> attention with RoPE -> residual; RMSNorm -> SwiGLU -> residual), a final RMSNorm and a
(by default tied) linear head. With `time_cond=True` every block is modulated by the noise level t through adaLN
(Peebles & Xie 2023, DiT "adaLN-Zero"): c = MLP(sinusoidal(t * time_scale)); (shift, scale, gate) x 2 =
Linear(SiLU(c)), zero-initialised, so each block starts as the identity; t may be (B,) or per token (B, T).

    B batch, T tokens, C = dim, V = vocab_size, L = depth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unigen.errors import UserError
from unigen.nn.activations import make_mlp
from unigen.nn.attention import Attention, KVCache, peeking
from unigen.nn.norm import RMSNorm, modulate
from unigen.nn.position import RotaryEmbedding, sinusoidal_embedding


@dataclass
class TextTransformerConfig:
    vocab_size: int
    dim: int = 256              # width C
    depth: int = 4              # number of blocks L
    n_heads: int = 4            # query heads H (head_dim = dim / n_heads)
    n_kv_heads: int | None = None   # key/value heads (None = n_heads; fewer = grouped-query attention)
    mlp: str = "swiglu"         # swiglu | geglu | reglu | glu | gelu | relu | silu ...
    mlp_ratio: float = 8 / 3    # hidden = mlp_ratio * dim, rounded up to a multiple of 32 ...
    mlp_hidden: int = 0         # ... unless this is > 0
    max_len: int = 1024         # default KV-cache length (RoPE itself has no length limit)
    causal: bool = False        # apply a causal mask when no explicit mask is given
    time_cond: bool = False     # adaLN conditioning on a noise level t
    time_scale: float = 1000.0  # t is multiplied by this before the sinusoidal embedding (t in [0, 1] -> [0, 1000])
    rope_base: float = 10000.0  # RoPE theta
    tie_embeddings: bool = True  # the output head shares the token embedding matrix
    qk_norm: bool = False       # RMSNorm on q and k per head
    dropout: float = 0.0
    norm_eps: float = 1e-6      # RMSNorm epsilon

    def hidden(self) -> int:
        """Width of the MLP's hidden layer."""
        return self.mlp_hidden if self.mlp_hidden > 0 else 32 * math.ceil(round(self.mlp_ratio * self.dim, 6) / 32)


TEXT_SIZES = {"tiny": 2, "small": 4, "base": 8, "medium": 12}  # the one dial: depth; width = 64 * depth


def text_config(size: str, vocab_size: int, **kw) -> TextTransformerConfig:
    """A preset on one dial (nanochat style): depth L, width 64 L, L heads of 64 channels; `kw` overrides fields."""
    if size not in TEXT_SIZES:
        raise UserError(f"unknown text model size {size!r}; choose one of {list(TEXT_SIZES)}")
    L = TEXT_SIZES[size]
    fields = dict(vocab_size=vocab_size, dim=64 * L, depth=L, n_heads=L)
    fields.update(kw)
    return TextTransformerConfig(**fields)


class Block(nn.Module):
    """One pre-norm transformer block, optionally adaLN-modulated by a condition vector."""

    def __init__(self, cfg: TextTransformerConfig):
        super().__init__()
        C = cfg.dim
        self.norm1 = RMSNorm(C, cfg.norm_eps)
        self.attn = Attention(C, cfg.n_heads, cfg.n_kv_heads, qk_norm=cfg.qk_norm, dropout=cfg.dropout)
        self.norm2 = RMSNorm(C, cfg.norm_eps)
        self.mlp = make_mlp(cfg.mlp, C, cfg.hidden(), bias=False, dropout=cfg.dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C)) if cfg.time_cond else None

    def forward(self, x: Tensor, c: Tensor | None, **attn_kw) -> Tensor:
        if self.ada is None:
            x = x + self.attn(self.norm1(x), **attn_kw)  # (B, T, C)
            return x + self.mlp(self.norm2(x))  # (B, T, C)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # (B, C) or (B, T, C) each
        if c.dim() == 2:
            gate1, gate2 = gate1[:, None], gate2[:, None]  # (B, 1, C)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), **attn_kw)  # (B, T, C)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, T, C)


class TextTransformer(nn.Module):
    """Token ids -> logits. Llama architecture (RMSNorm pre-norm, RoPE "half" layout, SwiGLU, no biases).

    Init: every Linear and the embedding ~ N(0, 0.02^2), biases 0; the residual output projections (attn.proj,
    mlp.w_out) ~ N(0, (0.02 / sqrt(2 L))^2) (GPT-2 scaled residual init); adaLN linears 0 (adaLN-Zero).
    """

    def __init__(self, cfg: TextTransformerConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise UserError(f"vocab_size must be positive, got {cfg.vocab_size}")
        if cfg.depth <= 0:
            raise UserError(f"depth must be positive, got {cfg.depth}")
        self.cfg = cfg
        C = cfg.dim
        self.tok_emb = nn.Embedding(cfg.vocab_size, C)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        head_dim = C // cfg.n_heads
        self.rope = RotaryEmbedding(head_dim, cfg.rope_base, "half")
        self.norm = RMSNorm(C, cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size, bias=False)
        if cfg.time_cond:
            self.time_mlp = nn.Sequential(nn.Linear(256, C), nn.SiLU(), nn.Linear(C, C))
            self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))
        self.reset_parameters()
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight

    def reset_parameters(self) -> None:
        std = 0.02
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        for b in self.blocks:
            nn.init.normal_(b.attn.proj.weight, 0.0, std / math.sqrt(2 * self.cfg.depth))
            nn.init.normal_(b.mlp.w_out.weight, 0.0, std / math.sqrt(2 * self.cfg.depth))
            if b.ada is not None:
                nn.init.zeros_(b.ada[1].weight)
                nn.init.zeros_(b.ada[1].bias)
        if self.cfg.time_cond:
            nn.init.zeros_(self.final_ada[1].weight)
            nn.init.zeros_(self.final_ada[1].bias)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One empty KVCache per block (see `unigen.nn.attention` for the append / peek protocol)."""
        return [KVCache(batch_size, max_len or self.cfg.max_len) for _ in self.blocks]

    @staticmethod
    def peek(cache: list[KVCache]):
        """A context in which calls with `cache` attend to it without appending to it (`nn.attention.peeking`)."""
        return peeking(cache)

    def forward(self, ids: Tensor, t: Tensor | None = None, *, mask: Tensor | None = None,
                positions: Tensor | None = None, cache: list[KVCache] | None = None) -> Tensor:
        """ids (B, T) long -> logits (B, T, V) float32.

        t: noise level (B,) or (B, T), required iff cfg.time_cond. mask: bool, True = may attend, broadcastable to
        (B, H, T, S); it replaces the default (causal if cfg.causal, else full). positions: (T,) or (B, T), default
        arange(T) offset by the cache length. cache: from `new_cache`; k/v of this call are appended (or peeked).
        """
        cfg = self.cfg
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise UserError(f"ids must be an integer tensor of shape (B, T), got {tuple(ids.shape)} {ids.dtype}")
        B, T = ids.shape
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size):
            bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
            raise UserError(f"token id {bad} is outside the model's vocabulary 0..{cfg.vocab_size - 1}")
        if cache is not None and len(cache) != cfg.depth:
            raise UserError(f"cache has {len(cache)} layers, the model has {cfg.depth}")
        if positions is None:
            offset = cache[0].length if cache is not None else 0
            positions = torch.arange(offset, offset + T, device=ids.device)  # (T,)
        elif positions.shape[-1] != T:
            raise UserError(f"positions has {positions.shape[-1]} entries for {T} tokens")
        rope = self.rope(positions)  # (T, D) or (B, 1, T, D)
        c = self._condition(t, B, T)  # (B, C) or (B, T, C) or None
        x = self.tok_emb(ids)  # (B, T, C)
        causal = cfg.causal and mask is None
        for i, block in enumerate(self.blocks):
            layer_cache = cache[i] if cache is not None else None
            x = block(x, c, mask=mask, is_causal=causal, rope=rope, cache=layer_cache)  # (B, T, C)
        x = self.norm(x)  # (B, T, C)
        if c is not None:
            shift, scale = self.final_ada(c).chunk(2, dim=-1)  # (B, C) or (B, T, C)
            x = modulate(x, shift, scale)
        return self.head(x).float()  # (B, T, V)

    def _condition(self, t: Tensor | None, B: int, T: int) -> Tensor | None:
        if not self.cfg.time_cond:
            if t is not None:
                raise UserError("this text model has time_cond=False but was given a noise level t")
            return None
        if t is None:
            raise UserError("this text model has time_cond=True and needs a noise level t")
        if tuple(t.shape) not in ((B,), (B, T)):
            raise UserError(f"t must have shape ({B},) or ({B}, {T}), got {tuple(t.shape)}")
        emb = sinusoidal_embedding(t * self.cfg.time_scale, 256)  # (B, 256) or (B, T, 256)
        return self.time_mlp(emb.to(self.time_mlp[0].weight.dtype))  # (B, C) or (B, T, C)
