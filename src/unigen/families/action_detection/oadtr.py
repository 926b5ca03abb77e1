"""OadTR: Wang et al., "OadTR: Online Action Detection with Transformers" (ICCV 2021), Sec. 3 and Fig. 2.

The encoder reads the T past frame features (linear projection to d_model), with a learnable *task token*
appended and learned position embeddings, through a transformer encoder. The decoder runs l_d learnable queries
(self-attention among them, cross-attention to the encoder's output) and classifies each as the action at
t+1 .. t+l_d. The current frame is classified from the task token's output concatenated with the mean of the
decoder's outputs (the paper's fusion of history and anticipated future). Training is the joint loss:
cross-entropy of the current frame plus cross-entropy of the anticipated frames.
"""
from __future__ import annotations

import torch
from torch import nn

from unigen.families.action_detection.windows import push, windows


class OadTR(nn.Module):
    def __init__(self, d: int, d_model: int, K: int, T: int, l_d: int, heads: int = 4, enc_layers: int = 2,
                 dec_layers: int = 1, dropout: float = 0.1):
        super().__init__()
        self.T, self.l_d = T, l_d
        self.proj = nn.Linear(d, d_model)
        self.task_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.randn(1, T + 1, d_model) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, l_d, d_model) * 0.02)
        layer = dict(d_model=d_model, nhead=heads, dim_feedforward=4 * d_model, dropout=dropout, batch_first=True,
                     norm_first=True)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), enc_layers,
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), dec_layers)
        self.norm = nn.LayerNorm(d_model)
        self.future_head = nn.Linear(d_model, K)
        self.head = nn.Linear(2 * d_model, K)

    def windows_forward(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows w (N, T, d) -> (current scores (N, K), anticipated scores (N, l_d, K))."""
        N = w.shape[0]
        tokens = torch.cat([self.proj(w), self.task_token.expand(N, -1, -1)], 1) + self.pos   # (N, T + 1, D)
        memory = self.encoder(tokens)                                                 # (N, T + 1, D)
        future = self.norm(self.decoder(self.queries.expand(N, -1, -1), memory))      # (N, l_d, D)
        task = self.norm(memory[:, -1])                                               # (N, D)
        current = self.head(torch.cat([task, future.mean(1)], -1))
        return current, self.future_head(future)

    def clip(self, f: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """The last n frames of a clip f (B, L, d): "scores" (B, n, K), "future" (B, n, l_d, K)."""
        B = f.shape[0]
        cur, fut = self.windows_forward(windows(f, self.T, n).reshape(B * n, self.T, -1))
        return {"scores": cur.reshape(B, n, -1), "future": fut.reshape(B, n, self.l_d, -1)}

    def init_state(self, B: int, like: torch.Tensor) -> tuple[torch.Tensor]:
        return (like.new_zeros(B, self.T, like.shape[-1]),)

    def step(self, x_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        buf = push(state[0], x_t)
        cur, fut = self.windows_forward(buf)
        return cur, fut, (buf,)
