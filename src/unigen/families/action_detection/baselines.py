"""The two reference points of online action detection (as in TRN's and OadTR's tables):

- `SingleFrame`: each frame classified from its own feature alone (no temporal context): the lower bound that
  tells whether the actions are temporal at all;
- `Bidirectional`: a bidirectional GRU over the whole stream, which sees the future: the offline upper bound.
  It has no streaming step.
"""
from __future__ import annotations

import torch
from torch import nn

from unigen.errors import UserError


class SingleFrame(nn.Module):
    def __init__(self, d: int, hidden: int, K: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, K))

    def clip(self, f: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        return {"scores": self.mlp(f[:, -n:])}                                      # (B, n, K)

    def init_state(self, B: int, like: torch.Tensor) -> tuple:
        return ()

    def step(self, x_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, None, tuple]:
        return self.mlp(x_t), None, state


class Bidirectional(nn.Module):
    """Trained on clips that extend `lookahead` frames past the last scored frame, so that it learns to use the
    future; evaluated on whole streams."""
    offline = True

    def __init__(self, d: int, hidden: int, K: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.gru = nn.GRU(d, hidden, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * hidden, K)

    def clip(self, f: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """Scores (B, n, K) of the n frames of f (B, L, d) that end `lookahead` frames before its end, each seeing
        the whole clip, future included."""
        end = f.shape[1] - self.lookahead
        return {"scores": self.classifier(self.gru(f)[0][:, end - n: end])}

    def whole(self, f: torch.Tensor) -> torch.Tensor:
        """Scores (B, L, K) of every frame of whole streams f (B, L, d)."""
        return self.classifier(self.gru(f)[0])

    def init_state(self, B: int, like: torch.Tensor) -> tuple:
        raise UserError("the bidirectional model sees the future: it has no frame-by-frame streaming form")

    step = init_state
