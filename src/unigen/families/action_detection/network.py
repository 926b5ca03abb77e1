"""The online action detector: a small CNN that turns each frame into a feature, and a temporal head (TRN, IDN,
OadTR, the single-frame baseline or the offline bidirectional upper bound) over the features.

    model.features(x)        frames (B, L, C, H, W) -> features (B, L, d), each from its frame and the difference
                             to the previous frame (a stand-in for the optical-flow stream of the papers'
                             two-stream features; the first frame's difference is 0)
    model(x, n)              a training clip -> the head's outputs for its last n scored frames
    model.stream(x)          frame-by-frame inference over whole streams -> probabilities (B, L, K); online heads
                             keep a state of constant size (TRN: LSTM state; IDN / OadTR: the last T features)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unigen.errors import UserError
from unigen.families.action_detection.baselines import Bidirectional, SingleFrame
from unigen.families.action_detection.idn import IDN
from unigen.families.action_detection.oadtr import OadTR
from unigen.families.action_detection.trn import TRN

ARCHS = ("trn", "idn", "oadtr", "single", "bidirectional")


@dataclass
class DetectorConfig:
    arch: str = "trn"           # trn | idn | oadtr | single (no temporal context) | bidirectional (offline)
    window: int = 16            # T: past frames a window model sees (and the history before a clip's scored frames)
    clip_frames: int = 16       # n: frames scored per training clip
    anticipation: int = 4       # l_d: future steps TRN / OadTR anticipate (and the offline model's look-ahead)
    feature: int = 64           # d: frame feature size
    channels: int = 16          # width of the frame CNN
    hidden: int = 64            # TRN / IDN state size, baselines' width; OadTR's d_model
    heads: int = 4              # OadTR attention heads
    enc_layers: int = 2         # OadTR encoder layers
    dec_layers: int = 1         # OadTR decoder layers
    dropout: float = 0.1
    margin: float = 1.0         # IDN contrastive margin

    def check(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(f"model.arch={self.arch!r} is not one of: {', '.join(ARCHS)}")
        for key in ("window", "clip_frames", "anticipation", "feature", "channels", "hidden", "heads",
                    "enc_layers", "dec_layers"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.hidden % self.heads:
            raise UserError(f"model.hidden={self.hidden} must be divisible by model.heads={self.heads}")
        if not 0 <= self.dropout < 1 or self.margin <= 0:
            raise UserError(f"model.dropout must be in [0, 1) and model.margin > 0, got {self.dropout}, {self.margin}")

    def clip_len(self) -> int:
        """Frames of one training clip: T - 1 history, n scored, l_d ahead."""
        return self.window - 1 + self.clip_frames + self.anticipation


def frame_cnn(c_in: int, c: int) -> nn.Sequential:
    """Three 3x3 convs (the last two stride 2): receptive field 9 pixels, jump 4 (`unigen rf RUN`)."""
    return nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.ReLU())


def build_head(m: DetectorConfig, K: int) -> nn.Module:
    d, h = m.feature, m.hidden
    return {"trn": lambda: TRN(d, h, K, m.anticipation, m.dropout),
            "idn": lambda: IDN(d, h, K, m.window),
            "oadtr": lambda: OadTR(d, h, K, m.window, m.anticipation, m.heads, m.enc_layers, m.dec_layers, m.dropout),
            "single": lambda: SingleFrame(d, h, K),
            "bidirectional": lambda: Bidirectional(d, h, K, m.anticipation)}[m.arch]()


class OnlineDetector(nn.Module):
    def __init__(self, m: DetectorConfig, shape: tuple[int, int, int], K: int):
        super().__init__()
        c, H, W = shape
        self.frames = frame_cnn(2 * c, m.channels)                                  # [frame, frame - previous]
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(2 * m.channels * ((H + 3) // 4) * ((W + 3) // 4),
                                                          m.feature), nn.ReLU())
        self.frame_head = nn.Linear(m.feature, K)    # per-frame classifier: trains the CNN on single frames
        self.head = build_head(m, K)
        self.arch, self.window, self.K = m.arch, m.window, K

    @property
    def offline(self) -> bool:
        return getattr(self.head, "offline", False)

    def frame_feature(self, x_t: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        """Frame x_t (N, C, H, W) and the one before it -> feature (N, d)."""
        return self.proj(self.frames(torch.cat([x_t, x_t - x_prev], 1)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Frames x (B, L, C, H, W) -> features (B, L, d); frame t sees frames t and t - 1 only."""
        B, L = x.shape[:2]
        prev = torch.cat([x[:, :1], x[:, :-1]], 1)                                  # (B, L, C, H, W)
        return self.frame_feature(x.flatten(0, 1), prev.flatten(0, 1)).reshape(B, L, -1)

    def forward(self, x: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """The head's outputs for the last n scored frames of clip x, and "frame": the per-frame classifier's
        scores (B, T - 1 + n, K) of the history and scored frames (never of look-ahead frames)."""
        f = self.features(x)
        return {**self.head.clip(f, n), "frame": self.frame_head(f[:, : self.window - 1 + n])}

    @torch.no_grad()
    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities (B, L, K) of every frame of streams x (B, L, C, H, W): online heads one frame at a time
        (frame t's output depends on frames <= t only), the offline head over the whole stream at once."""
        if x.shape[1] < self.window:
            raise UserError(f"a stream of {x.shape[1]} frames is shorter than the model's window of {self.window}")
        if self.offline:
            return torch.softmax(self.head.whole(self.features(x)), -1)
        state = self.head.init_state(x.shape[0], x.new_zeros(1, self.proj[1].out_features))
        out = []
        for t in range(x.shape[1]):
            f_t = self.frame_feature(x[:, t], x[:, max(t - 1, 0)])                   # (B, d): one frame kept
            s, _, state = self.head.step(f_t, state)
            out.append(torch.softmax(s, -1))
        return torch.stack(out, 1)
