"""TRN: Xu et al., "Temporal Recurrent Networks for Online Action Detection" (ICCV 2019), Sec. 3 and Fig. 2,
following the authors' `lib/models/generalized_trn.py`.

At each step t the encoder LSTM reads the frame feature x_t concatenated with the future representation that the
temporal decoder produced at step t-1, and classifies the current frame. The decoder LSTM starts from
(fc_relu(h_t), fc_relu(c_t)), runs l_d steps (its input: zeros, then fc_relu of its own previous action scores),
classifies each anticipated step t+1 .. t+l_d with the shared classifier, and averages fc_relu of its hidden
states into the future representation fed back at t+1. The paper's feature-anticipation branch is not in the
authors' code; like the code, the decoder is trained only on the future actions.
"""
from __future__ import annotations

import torch
from torch import nn


def fc_relu(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU())


class TRN(nn.Module):
    """Encoder-decoder LSTM over frame features (d,) -> current-frame and anticipated scores (K,)."""

    def __init__(self, d: int, hidden: int, K: int, l_d: int, dropout: float = 0.0):
        super().__init__()
        self.d, self.hidden, self.K, self.l_d = d, hidden, K, l_d
        self.enc_cell = nn.LSTMCell(2 * d, hidden)                 # [x_t, future representation]
        self.dec_cell = nn.LSTMCell(hidden, hidden)
        self.hx_trans, self.cx_trans = fc_relu(hidden, hidden), fc_relu(hidden, hidden)
        self.fusion_linear, self.future_linear = fc_relu(K, hidden), fc_relu(hidden, d)
        self.classifier = nn.Linear(hidden, K)
        self.drop = nn.Dropout(dropout)

    def init_state(self, B: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(h, c, future): zeros, as at the start of a stream."""
        return like.new_zeros(B, self.hidden), like.new_zeros(B, self.hidden), like.new_zeros(B, self.d)

    def step(self, x_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """One frame feature x_t (B, d): (scores (B, K), anticipated scores (B, l_d, K), new state)."""
        h, c, future = state
        h, c = self.enc_cell(self.drop(torch.cat([x_t, future], -1)), (h, c))
        score = self.classifier(self.drop(h))                                        # (B, K)
        dh, dc = self.hx_trans(h), self.cx_trans(c)
        inp, future = x_t.new_zeros(x_t.shape[0], self.hidden), x_t.new_zeros(x_t.shape[0], self.d)
        anticipated = []
        for _ in range(self.l_d):
            dh, dc = self.dec_cell(self.drop(inp), (dh, dc))
            s = self.classifier(self.drop(dh))                                       # (B, K)
            anticipated.append(s)
            inp = self.fusion_linear(s)
            future = future + self.future_linear(dh)
        return score, torch.stack(anticipated, 1), (h, c, future / self.l_d)

    def clip(self, f: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """Run over a clip f (B, L, d) from a zero state; outputs of its last n frames: "scores" (B, n, K),
        "future" (B, n, l_d, K)."""
        state = self.init_state(f.shape[0], f)
        scores, future = [], []
        for t in range(f.shape[1]):
            s, a, state = self.step(f[:, t], state)
            if t >= f.shape[1] - n:
                scores.append(s)
                future.append(a)
        return {"scores": torch.stack(scores, 1), "future": torch.stack(future, 1)}
