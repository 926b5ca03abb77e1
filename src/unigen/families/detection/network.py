"""The DETR network (Carion et al. 2020, Fig. 2 and Appendix A.3): CNN backbone -> 1x1 projection -> transformer
encoder over the H x W feature tokens with 2-D sine encodings -> decoder over N learned object queries -> per query
a class (K classes + no-object) and a box (cx, cy, w, h) = sigmoid(MLP).

As in the reference: post-norm layers (normalize_before=False); the position encodings are added to queries and
keys of every attention, never to values; decoder input tgt = 0 with the learned query embeddings as the queries'
positions; one shared LayerNorm after every decoder layer, whose outputs all go to the (shared) heads, giving the
auxiliary losses (only the copies that go to the heads are normed: the next layer gets the raw output).
Transformer matrices start Xavier-uniform, as the reference's `_reset_parameters` (`xavier_init`). The backbone is small and trained from scratch (the paper's is an ImageNet ResNet-50): stride-2
3x3 conv stages with GroupNorm. Networks hold parameters only; the loss is `losses.detr_loss`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unigen.families.detection.position import sine_position_encoding


@dataclass
class DetectorConfig:
    d_model: int = 64               # transformer width (the paper: 256)
    heads: int = 4                  # attention heads (8)
    enc_layers: int = 2             # encoder layers (6)
    dec_layers: int = 2             # decoder layers (6); each gives an auxiliary loss
    ffn: int = 256                  # feed-forward width (2048)
    queries: int = 12               # N object queries (100); must exceed the most objects in an image
    dropout: float = 0.1            # transformer dropout (0.1)
    backbone_width: int = 32        # channels of the first backbone stage, doubled at each downsampling
    backbone_stages: int = 2        # stride-2 stages: features at 1 / 2^stages of the image side
    eos_coef: float = 0.1           # weight of the no-object class in the cross-entropy
    cost_class: float = 1.0         # lambda_cls of the matching cost and the loss
    cost_bbox: float = 5.0          # lambda_L1
    cost_giou: float = 2.0          # lambda_giou
    backbone_lr_scale: float = 0.1  # backbone LR / transformer LR (1e-5 / 1e-4)
    xavier_init: bool = True        # transformer matrices Xavier-uniform (the reference); False: torch's defaults


class Backbone(nn.Module):
    """Stem 3x3 conv, then `stages` blocks of (3x3 stride-2 conv, 3x3 conv), GroupNorm + ReLU after each conv."""

    def __init__(self, in_ch: int, width: int, stages: int):
        super().__init__()
        layers, c = [nn.Conv2d(in_ch, width, 3, padding=1), nn.GroupNorm(8, width), nn.ReLU()], width
        for _ in range(stages):
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * c), nn.ReLU(),
                       nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.GroupNorm(8, 2 * c), nn.ReLU()]
            c *= 2
        self.net = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)                                                      # (B, C, H / 2^s, W / 2^s)


class Attention(nn.Module):
    """Multi-head attention with separate q, k, v, out projections (the positions are added by the caller)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, Tq, d = q.shape
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)    # (B, h, T, d / h)
        o = F.scaled_dot_product_attention(split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v)),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(o.transpose(1, 2).reshape(B, Tq, d))


class FeedForward(nn.Module):
    def __init__(self, d: int, ffn: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    """x = LN(x + SA(x + pos, x + pos, x)); x = LN(x + FFN(x))."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn, self.ff = Attention(d, heads, dropout), FeedForward(d, ffn, dropout)
        self.norm1, self.norm2, self.drop = nn.LayerNorm(d), nn.LayerNorm(d), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.self_attn(x + pos, x + pos, x)))
        return self.norm2(x + self.drop(self.ff(x)))


class DecoderLayer(nn.Module):
    """t = LN(t + SA(t + q, t + q, t)); t = LN(t + CA(t + q, m + pos, m)); t = LN(t + FFN(t))."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn, self.cross_attn = Attention(d, heads, dropout), Attention(d, heads, dropout)
        self.ff = FeedForward(d, ffn, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, t: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor):
        t = self.norm1(t + self.drop(self.self_attn(t + query_pos, t + query_pos, t)))
        t = self.norm2(t + self.drop(self.cross_attn(t + query_pos, memory + pos, memory)))
        return self.norm3(t + self.drop(self.ff(t)))


class DETR(nn.Module):
    """x (B, 3, H, W) -> {"logits": (L, B, N, K + 1), "boxes": (L, B, N, 4)}, one row per decoder layer."""

    def __init__(self, c: DetectorConfig, in_channels: int, num_classes: int):
        super().__init__()
        self.backbone = Backbone(in_channels, c.backbone_width, c.backbone_stages)
        self.input_proj = nn.Conv2d(self.backbone.out_channels, c.d_model, 1)
        self.query_embed = nn.Embedding(c.queries, c.d_model)
        self.encoder = nn.ModuleList(EncoderLayer(c.d_model, c.heads, c.ffn, c.dropout) for _ in range(c.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(c.d_model, c.heads, c.ffn, c.dropout) for _ in range(c.dec_layers))
        self.decoder_norm = nn.LayerNorm(c.d_model)
        self.class_embed = nn.Linear(c.d_model, num_classes + 1)               # + the no-object class, id K
        self.bbox_embed = nn.Sequential(nn.Linear(c.d_model, c.d_model), nn.ReLU(), nn.Linear(c.d_model, c.d_model),
                                        nn.ReLU(), nn.Linear(c.d_model, 4))
        self.d_model = c.d_model
        if c.xavier_init:                                                       # the reference's _reset_parameters
            for p in [*self.encoder.parameters(), *self.decoder.parameters()]:
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(x))

    def head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything after the backbone: features (B, C, h, w) -> per-layer logits and boxes."""
        B, _, h, w = features.shape
        valid = torch.ones(B, h, w, dtype=torch.bool, device=features.device)
        pos = sine_position_encoding(valid, self.d_model).to(features.dtype).flatten(2).transpose(1, 2)  # (B, hw, d)
        memory = self.input_proj(features).flatten(2).transpose(1, 2)           # (B, hw, d)
        for layer in self.encoder:
            memory = layer(memory, pos)
        query_pos = self.query_embed.weight[None].expand(B, -1, -1)             # (B, N, d)
        t, outs = torch.zeros_like(query_pos), []
        for layer in self.decoder:
            t = layer(t, query_pos, memory, pos)
            outs.append(self.decoder_norm(t))
        hs = torch.stack(outs)                                                  # (L, B, N, d)
        return {"logits": self.class_embed(hs), "boxes": self.bbox_embed(hs).sigmoid()}
