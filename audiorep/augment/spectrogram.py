"""Spectrogram masks and mixup (the PaSST recipe), applied by objectives (never inside a frontend).

Two families, both plain functions with the batch dimension first:
  - masks on a spectrogram [B, F, T] -> [B, F, T] (SpecAugment);
  - mixes of two examples (x, target) -> (x, target), where the target is mixed with the
    same weights, so multi-hot and one-hot targets become soft targets (mixup).
Waveform augmentations are in wave.py and mixes.py beside this file.
Randomness comes from torch's global generator: a run is deterministic for a seed.
"""
from __future__ import annotations

import torch


def band_mask(B: int, size: int, max_width: int, device=None) -> torch.Tensor:
    """[B, size] bool: one band per example, width ~ U[0, max_width), start ~ U[0, size - width)
    (torchaudio's iid mask_along_axis draw)."""
    width = torch.rand(B, 1, device=device) * min(max_width, size)
    start = torch.rand(B, 1, device=device) * (size - width)
    pos = torch.arange(size, device=device)
    return (pos >= start.long()) & (pos < (start + width).long())


def spec_augment(x: torch.Tensor, freq_width: int, time_width: int, value: float = 0.0) -> torch.Tensor:
    """SpecAugment on [B, F, T]: per example one frequency band of < freq_width bins and one
    time band of < time_width frames set to `value` (PaSST: 48 and 192, value 0)."""
    B, Fq, T = x.shape
    masked = torch.zeros(B, Fq, T, dtype=torch.bool, device=x.device)
    if freq_width > 0:
        masked |= band_mask(B, Fq, freq_width, x.device)[:, :, None]
    if time_width > 0:
        masked |= band_mask(B, T, time_width, x.device)[:, None, :]
    return x.masked_fill(masked, value)


def mix_weights(B: int, alpha: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (partner [B] indices, lam [B]): a random pairing and lam ~ Beta(alpha, alpha)
    folded to >= 0.5 so each example stays the larger part (PaSST's mixup)."""
    partner = torch.randperm(B, device=device)
    lam = torch.distributions.Beta(alpha, alpha).sample((B,)).to(device)
    return partner, torch.maximum(lam, 1 - lam)


def mix(a: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """lam * a + (1 - lam) * a[partner], lam broadcast over the non-batch dims (integer `a`,
    e.g. one-hot targets, becomes float)."""
    a = a if a.is_floating_point() else a.float()
    lam = lam.view(-1, *([1] * (a.ndim - 1))).to(a.dtype)
    return lam * a + (1 - lam) * a[partner]


def mixup(x: torch.Tensor, target: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup of inputs (spectrograms or waveforms) and their targets [B, C]."""
    partner, lam = mix_weights(x.shape[0], alpha, x.device)
    return mix(x, partner, lam), mix(target, partner, lam)
