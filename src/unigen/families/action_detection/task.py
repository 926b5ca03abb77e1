"""Online action detection: TRN, IDN, OadTR, a single-frame baseline and an offline bidirectional upper bound on
the procedural action streams (build / loss / evaluate / detect).

Training samples one clip per stream of the batch, at a random offset: T - 1 frames of history, n scored frames
and l_d frames whose labels train the anticipation (online models never see those frames; the offline model
does). Evaluation runs each model over the whole test streams frame by frame (`OnlineDetector.stream`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from unigen.config import Config
from unigen.data import load as load_data
from unigen.errors import UserError
from unigen.families.action_detection.evaluate import check_labels, plot_stream, scores, stream_probs
from unigen.families.action_detection.losses import detection_loss
from unigen.families.action_detection.network import DetectorConfig, OnlineDetector
from unigen.task import Task, unwrap


def crop(t: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """Clips t[b, start_b : start_b + length] of every stream of t (B, L, ...) -> (B, length, ...)."""
    idx = start[:, None] + torch.arange(length, device=t.device)                  # (B, length)
    return t[torch.arange(t.shape[0], device=t.device)[:, None], idx]


class ActionDetectionTask(Task):
    model_config = DetectorConfig

    def build(self, cfg: Config, data_info: dict) -> nn.Module:
        m: DetectorConfig = cfg.model
        m.check()
        if "stream_len" not in data_info:
            raise UserError(f"dataset {cfg.data.name!r} has no streams; action detection needs data.name=stream")
        if data_info["stream_len"] < m.clip_len():
            raise UserError(f"a stream of {data_info['stream_len']} frames is shorter than the model's training clip "
                            f"of {m.clip_len()} (window - 1 + clip_frames + anticipation)")
        net = OnlineDetector(m, tuple(data_info["shape"]), data_info["num_classes"])
        net.clip_spec = (m.window, m.clip_frames, m.anticipation, m.margin)  # read by `loss`; not weights
        return net

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        net = unwrap(model, OnlineDetector, "an online action detector")
        T, n, l_d, margin = net.clip_spec
        x, y, amb = batch["x"], batch["y"], batch["ambiguous"]
        check_labels(y, net.K)
        length = T - 1 + n + l_d
        start = torch.randint(0, x.shape[1] - length + 1, (x.shape[0],), device=x.device)
        x, y, amb = crop(x, start, length), crop(y, start, length), crop(amb, start, length)
        seen = x if net.offline else x[:, : T - 1 + n]                                # online: no future frames
        return detection_loss(model(seen, n), y, amb, T, n, l_d, margin)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, cfg: Config, *, run_dir: Path, quick: bool = False, **kw) -> dict:
        """Per-frame mAP / cAP etc. on the test streams (quick: the first 4), and (not quick)
        RUN/figures/stream.png: the first test stream's probabilities against its labels."""
        if kw:
            raise UserError(f"action detection eval has no option(s) {', '.join(kw)}")
        data = load_data(cfg.data, "test")
        b = data.batch(torch.arange(min(4, len(data)) if quick else len(data)))
        net = unwrap(model, OnlineDetector, "an online action detector")
        probs, fps = stream_probs(net, b["x"])
        out = {**scores(probs, b["y"], b["ambiguous"]), "frames_per_s": fps}
        if not quick:
            plot_stream(probs[0], b["y"][0], data.info["classes"], Path(run_dir) / "figures" / "stream.png")
        return out

    @torch.no_grad()
    def detect(self, model: nn.Module, cfg: Config, batch: dict) -> list[dict]:
        """Action segments of each stream in batch["x"] (B, L, C, H, W): runs of one predicted action class, with
        their mean probability."""
        net = unwrap(model, OnlineDetector, "an online action detector")
        probs, _ = stream_probs(net, batch["x"])
        found = []
        for i, p in enumerate(probs):
            pred = p.argmax(-1)
            start = 0
            for t in range(1, len(pred) + 1):
                if t == len(pred) or pred[t] != pred[start]:
                    if pred[start] != 0:
                        c = int(pred[start])
                        found.append({"stream": i, "start": start, "end": t, "class": c,
                                      "score": float(p[start:t, c].mean())})
                    start = t
        return found


TASK = ActionDetectionTask()
