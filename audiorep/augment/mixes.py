"""EAT's label-mixing augmentations: (wave [B, S], target [B, C]) -> (wave, target).

Each clip b is mixed with clip partner[b] (a random permutation, so a clip may meet itself),
and its target becomes w * target + (1 - w) * target[partner] with the mix's own weight w, so
one-hot targets stay distributions. `partner` and `lam` may be given to fix the draw; otherwise
they come from `generator` (or torch's global generator). Algorithms: Gazneli et al. 2022
("End-to-end audio strikes back"), Algorithms 1 and 2, and datasets/batch_augs.py of
Alibaba-MIIL/AudioClassfication.
"""
from __future__ import annotations

import torch

from .spectrogram import mix
from .wave import istft, stft, uniform


def pairing(wave: torch.Tensor, partner, lam, low: float, high: float, generator=None):
    """-> (partner [B] long, lam [B] ~ U[low, high)), keeping what is given."""
    B = wave.shape[0]
    if partner is None:
        partner = torch.randperm(B, generator=generator, device=wave.device)
    if lam is None:
        lam = uniform(B, low, high, wave, generator)
    return partner, lam.to(wave.dtype)


def sides(wave: torch.Tensor, generator=None) -> torch.Tensor:
    """[B] bool: True = the partner's piece goes at the end (late samples, high bins)."""
    return torch.rand(wave.shape[0], generator=generator, device=wave.device) < 0.5


def energy_mixup(wave, target, *, partner=None, lam=None, generator=None):
    """Energy-aware mixup (between-class learning, Tokozume et al. 2018), lam ~ U[0.1, 1).
    The amplitude weight p = 1 / (1 + (rms / rms_partner) * (1 - lam) / lam) makes the two parts'
    RMS ratio lam : (1 - lam) whatever their levels (powers floored at 1e-5, i.e. -50 dB); the sum
    is divided by sqrt(p^2 + (1 - p)^2). Targets are weighted by p, as the EAT code does."""
    partner, lam = pairing(wave, partner, lam, 0.1, 1.0, generator)
    level = 10 * torch.log10(wave.pow(2).mean(dim=1).clamp(min=1e-5))  # [B] dB
    p = 1 / (1 + 10 ** ((level - level[partner]) / 20) * (1 - lam) / lam)
    out = mix(wave, partner, p) / torch.sqrt(p ** 2 + (1 - p) ** 2)[:, None]
    return out, mix(target, partner, p)


def time_mix(wave, target, *, partner=None, lam=None, generator=None):
    """TimeMix (cut-mix in time), lam ~ U[0.5, 1): the last (or, at random, the first)
    int((1 - lam) * S) samples come from the partner; targets weighted by lam."""
    partner, lam = pairing(wave, partner, lam, 0.5, 1.0, generator)
    S = wave.shape[1]
    n = ((1 - lam) * S).long()[:, None]  # [B, 1] samples taken from the partner
    pos = torch.arange(S, device=wave.device)
    taken = torch.where(sides(wave, generator)[:, None], pos >= S - n, pos < n)  # [B, S]
    return torch.where(taken, wave[partner], wave), mix(target, partner, lam)


def freq_mix(wave, target, n_fft: int = 1024, *, partner=None, lam=None, generator=None):
    """FreqMix (Algorithm 1), lam ~ U[0.5, 1): in the STFT, a clip keeps int(lam * bins) bins at
    the bottom of the spectrum (or, at random, at the top) and takes the other bins from its
    partner; targets weighted by lam."""
    partner, lam = pairing(wave, partner, lam, 0.5, 1.0, generator)
    X = stft(wave, n_fft)  # [B, F, T]
    bins = X.shape[1]
    keep = (lam * bins).long()[:, None]  # [B, 1] own bins
    k = torch.arange(bins, device=wave.device)
    own = torch.where(sides(wave, generator)[:, None], k < keep, k >= bins - keep)  # [B, F]
    X = torch.where(own[:, :, None], X, X[partner])
    return istft(X, n_fft, wave.shape[1]), mix(target, partner, lam)


def phase_mix(wave, target, n_fft: int = 1024, *, partner=None, lam=None, generator=None):
    """PhaseMix (Algorithm 2), lam ~ U[0, 1): the STFT magnitude of the clip with the phase
    lam * phase + (1 - lam) * phase_partner; targets weighted by 0.5 * lam + 0.5."""
    partner, lam = pairing(wave, partner, lam, 0.0, 1.0, generator)
    X = stft(wave, n_fft)  # [B, F, T]
    phase = X.angle()
    phase = lam[:, None, None] * phase + (1 - lam[:, None, None]) * phase[partner]
    out = istft(torch.polar(X.abs(), phase), n_fft, wave.shape[1])
    return out, mix(target, partner, 0.5 * lam + 0.5)
