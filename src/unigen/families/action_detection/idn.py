"""IDN: Eun et al., "Learning to Discriminate Information for Online Action Detection" (CVPR 2020), Sec. 3,
following the authors' TensorFlow code (github.com/hjeun/idu: `IDUCell.type1` in the patched keras
`recurrent.py`, the network in `thumos14/model_IDU.py`).

An Information Discrimination Unit (IDU) is a GRU whose gates also see the *current information* x_0 (the feature
of the frame being classified), so it can decide whether each past input x_t is relevant to the ongoing action:

    early embedding   x~ = ReLU(W_xe x + b_xe),  p~ = W_ep x~ + b_ep        (the same for x_t and x_0)
    reset gate        r_t = sigmoid(W_hr h_{t-1} + W_x0r x~_0)
    update gate       z_t = sigmoid(W_xtz x~_t + W_x0z x~_0)                relevance of x_t to x_0
    candidate         h~_t = tanh(W_xh x~_t + W_hh (r_t * h_{t-1}))         reset applied before W_hh
    state             h_t = (1 - z_t) * h_{t-1} + z_t * h~_t                 z_t = how much of x_t to accumulate

run over the window x_{-T+1} .. x_0 from h = 0; the last state is classified by a ReLU layer and a linear layer
(the code's `Output` scope). As in `type1`, the six IDU matrices have no bias (the cell declares one and never
adds it) and start orthogonal (its initialisers). Two details differ from the code: the gates use the logistic
sigmoid of the paper's equations, not keras' default hard sigmoid, and there is no input dropout (the code passes
its keep probability as the dropout rate). The early embedding is trained with a cross-entropy on p~ and a
contrastive loss pulling x~_t towards x~_0 when both frames share a label and pushing them at least a margin
apart otherwise (`losses.contrastive`; the training code is not public, so the two terms' weights are 1). Every
weight is a registered nn.Linear (a popular PyTorch port builds them as `Parameter(...).div(...)`, plain tensors
the optimiser never sees).
"""
from __future__ import annotations

import torch
from torch import nn

from unigen.families.action_detection.windows import push, windows


class IDU(nn.Module):
    def __init__(self, d: int, hidden: int, K: int):
        super().__init__()
        self.embed = nn.Linear(d, hidden)                 # W_xe
        self.early = nn.Linear(hidden, K)                 # W_ep
        for name in ("W_hr", "W_x0r", "W_xtz", "W_x0z", "W_xh", "W_hh"):
            w = nn.Linear(hidden, hidden, bias=False)               # type1 adds no bias
            nn.init.orthogonal_(w.weight)                           # keras' 'orthogonal' kernel initialisers
            setattr(self, name, w)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Windows x (N, T, d), the last frame being x_0: {"h": (N, hidden), "emb": x~ (N, T, hidden),
        "early": p~ (N, T, K)}."""
        emb = torch.relu(self.embed(x))                                              # (N, T, hidden)
        e0 = emb[:, -1]
        r_x0, z_x0 = self.W_x0r(e0), self.W_x0z(e0)
        h = x.new_zeros(x.shape[0], emb.shape[-1])
        for t in range(x.shape[1]):
            r = torch.sigmoid(self.W_hr(h) + r_x0)
            z = torch.sigmoid(self.W_xtz(emb[:, t]) + z_x0)
            h_tilde = torch.tanh(self.W_xh(emb[:, t]) + self.W_hh(r * h))
            h = (1 - z) * h + z * h_tilde
        return {"h": h, "emb": emb, "early": self.early(emb)}


class IDN(nn.Module):
    """IDU over the past window of T frame features, then a 2-layer classifier of the current frame."""

    def __init__(self, d: int, hidden: int, K: int, T: int):
        super().__init__()
        self.T = T
        self.idu = IDU(d, hidden, K)
        self.classifier = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, K))

    def clip(self, f: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """The last n frames of a clip f (B, L, d): "scores" (B, n, K), "emb" (B, n, T, hidden), "early"
        (B, n, T, K) of each frame's window."""
        B = f.shape[0]
        w = windows(f, self.T, n).reshape(B * n, self.T, -1)                         # (B n, T, d)
        out = self.idu(w)
        return {"scores": self.classifier(out["h"]).reshape(B, n, -1),
                "emb": out["emb"].reshape(B, n, self.T, -1), "early": out["early"].reshape(B, n, self.T, -1)}

    def init_state(self, B: int, like: torch.Tensor) -> tuple[torch.Tensor]:
        return (like.new_zeros(B, self.T, like.shape[-1]),)

    def step(self, x_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, None, tuple]:
        buf = push(state[0], x_t)
        return self.classifier(self.idu(buf)["h"]), None, (buf,)
