"""Evaluation of an online action detector on the test streams: per-frame mAP and calibrated mAP over the action
classes (ambiguous frames out), per-frame accuracy, onset latency, streaming speed, and a picture of one stream."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from unigen.errors import UserError
from unigen.families.action_detection.ap import frame_map, onset_latency
from unigen.families.action_detection.network import OnlineDetector
from unigen.plot import figure


def check_labels(y: torch.Tensor, K: int) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= K):
        raise UserError(f"frame labels must be class ids in [0, {K}), got values in [{int(y.min())}, {int(y.max())}]")


def stream_probs(net: OnlineDetector, x: torch.Tensor, chunk: int = 16) -> tuple[torch.Tensor, float]:
    """Probabilities (N, L, K) of test streams x (N, L, C, H, W), `chunk` streams at a time, and frames/s."""
    net.eval()
    device = next(net.parameters()).device
    t0 = time.perf_counter()
    probs = torch.cat([net.stream(x[i: i + chunk].to(device)).cpu() for i in range(0, len(x), chunk)])
    return probs, x.shape[0] * x.shape[1] / (time.perf_counter() - t0)


def scores(probs: torch.Tensor, y: torch.Tensor, amb: torch.Tensor) -> dict[str, float]:
    """mAP, cAP, accuracy on unambiguous frames, mean onset latency (frames) and the share of detected onsets."""
    K = probs.shape[-1]
    check_labels(y, K)
    m = frame_map(probs.reshape(-1, K).double(), y.reshape(-1), amb.reshape(-1))
    pred = probs.argmax(-1)
    keep = ~amb
    lat, n = [], 0
    for p, t in zip(pred, y):
        ls, k = onset_latency(p, t)
        lat += ls
        n += k
    return {"mAP": m["mAP"], "cAP": m["cAP"], "frame_accuracy": float((pred[keep] == y[keep]).float().mean()),
            "onset_latency": sum(lat) / max(len(lat), 1), "onsets_detected": len(lat) / max(n, 1)}


def plot_stream(probs: torch.Tensor, y: torch.Tensor, classes: list[str], path: Path, frames: int = 200) -> None:
    """Ground truth (coloured bands) and the predicted probability of each action class over one stream."""
    with figure(path, size=(10, 3.5)) as ax:
        colours = [None, "C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]
        for k in range(1, probs.shape[-1]):
            c = colours[k % len(colours)] or "C9"
            ax.plot(probs[:frames, k], color=c, lw=1, label=classes[k] if k < len(classes) else str(k))
            on = (y[:frames] == k).float()
            ax.fill_between(range(len(on)), 0, on * 1.05, color=c, alpha=0.15, step="mid")
        ax.set_xlabel("frame")
        ax.set_ylabel("p(class)  (bands: ground truth)")
        ax.set_ylim(0, 1.08)
        ax.legend(loc="upper right", ncol=len(classes), fontsize=7)
