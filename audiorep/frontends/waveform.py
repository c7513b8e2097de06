"""Normalized raw waveform for end-to-end conv backbones (EAT): [B, S] -> [B, 1, S].

Every sample is a frame (hop 1 / sample_rate). Each clip is scaled to a fixed peak, as
the EAT datasets do when they read a file (0.95 * x / max|x|): the network never sees the
recording level. A silent clip stays silent (the official division would give NaN), and a
waveform with NaN or infinite samples is refused. There is no level L: a waveform has no
frequency channels to average.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

SILENCE = 1e-8  # peaks at or below this are silence: left as they are


@dataclass(frozen=True)
class WaveformConfig:
    kind: str = "waveform"
    sample_rate: int = 22050
    peak: float = 0.95  # every clip is scaled to this peak; 0 = the waveform as given


class Waveform(nn.Module):
    def __init__(self, cfg: WaveformConfig = WaveformConfig()):
        super().__init__()
        if cfg.peak < 0:
            raise ValueError(f"WaveformConfig.peak={cfg.peak}: expected >= 0 (0 = no normalization)")
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.hop_s = 1.0 / cfg.sample_rate
        self.features = 1
        self.min_samples = 1

    def num_frames(self, num_samples: int) -> int:
        if num_samples < self.min_samples:
            raise ValueError(f"Waveform needs at least {self.min_samples} sample, got {num_samples}")
        return num_samples

    def samples_for(self, frames: int) -> int:
        return max(self.min_samples, frames)

    def level_l(self, feats: torch.Tensor) -> torch.Tensor:
        raise ValueError("the waveform frontend has no level L (no frequency channels); use levels M and H")

    def normalize(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, S] -> [B, S] scaled to peak `cfg.peak` per clip (silence unchanged)."""
        if self.cfg.peak == 0:
            return wave
        peak = wave.abs().amax(dim=-1, keepdim=True)  # [B, 1]
        return wave * torch.where(peak > SILENCE, self.cfg.peak / peak, torch.ones_like(peak))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.ndim != 2:
            raise ValueError(f"Waveform expects a waveform [batch, samples], got shape {tuple(wave.shape)}")
        self.num_frames(wave.shape[-1])
        bad = ~torch.isfinite(wave).all(dim=-1)  # [B]
        if bad.any():
            rows = bad.nonzero().flatten().tolist()
            raise ValueError(f"Waveform: clips {rows[:8]} of the batch hold NaN or infinite samples")
        return self.normalize(wave).unsqueeze(1)  # [B, 1, S]
