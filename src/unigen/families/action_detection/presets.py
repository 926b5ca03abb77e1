"""The online action detection presets, one per model, on the same procedural streams and budget."""
from __future__ import annotations

from unigen.config import Config, SampleConfig, TrainConfig
from unigen.data.stream import StreamData
from unigen.families.action_detection.network import DetectorConfig

STEPS = 800


def _stream(preset: str, arch: str, **model) -> Config:
    return Config(task="action_detection", preset=preset, data=StreamData(), model=DetectorConfig(arch=arch, **model),
                  train=TrainConfig(steps=STEPS, batch_size=16, lr=2e-3, warmup_steps=50, weight_decay=0.01,
                                    ema_decay=0.0, ckpt_every=STEPS, log_every=50),
                  sample=SampleConfig())


def stream_trn() -> Config:
    """TRN (Xu et al. 2019): LSTM encoder + 4-step anticipating decoder, on the procedural action streams."""
    return _stream("stream-trn", "trn")


def stream_idn() -> Config:
    """IDN (Eun et al. 2020): information discrimination units over 16 past frames, on the action streams."""
    return _stream("stream-idn", "idn")


def stream_oadtr() -> Config:
    """OadTR (Wang et al. 2021): transformer over 16 past frames + task token, 4 future queries, action streams."""
    return _stream("stream-oadtr", "oadtr")


def stream_single() -> Config:
    """Single-frame baseline (no temporal context) on the procedural action streams: the lower bound."""
    return _stream("stream-single", "single")


def stream_offline() -> Config:
    """Offline bidirectional GRU that sees the future, on the procedural action streams: the upper bound."""
    return _stream("stream-offline", "bidirectional")


PRESETS = {"stream-trn": stream_trn, "stream-idn": stream_idn, "stream-oadtr": stream_oadtr,
           "stream-single": stream_single, "stream-offline": stream_offline}
