"""EAT's label-mixing augmentations: wave [B, S] -> (wave, partner [B], weight [B]).

Each clip b is mixed with clip partner[b] (a random permutation, so a clip may meet itself)
and keeps the share weight[b] of itself (the mix's own target weight); `mixed_targets` turns
that into the targets by one of TARGET_RULES. `partner` and `lam` may be given to fix the
draw; otherwise they come from `generator` (or torch's global generator). Algorithms: Gazneli
et al. 2022 ("End-to-end audio strikes back"), Algorithms 1 and 2, and datasets/batch_augs.py
of Alibaba-MIIL/AudioClassfication.
"""
from __future__ import annotations

import torch

from .spectrogram import mix
from .wave import istft, stft, uniform

TARGET_RULES = ("soft", "union")
UNION_DROP = 0.1  # union rule: a partner whose share is at most this adds no label (the release's `lam < 0.9`)


def mixed_targets(target: torch.Tensor, partner: torch.Tensor, weight: torch.Tensor, rule: str = "soft") -> torch.Tensor:
    """Targets [B, C] of mixed clips: clip b kept the share weight[b] of itself, the rest came from
    partner[b]. "soft": weight * target + (1 - weight) * target[partner] (one-hot rows still sum
    to 1). "union" (the EAT release's BCE target): the clip's own labels and its partner's, the
    partner's left out when its share 1 - weight is at most UNION_DROP."""
    if rule == "soft":
        return mix(target, partner, weight)
    if rule != "union":
        raise ValueError(f"mix target rule {rule!r}: expected one of {TARGET_RULES}")
    kept = (weight < 1 - UNION_DROP).to(target.dtype)[:, None]  # [B, 1]
    return torch.clamp(target + target[partner] * kept, max=1)


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


def energy_mixup(wave, *, partner=None, lam=None, generator=None):
    """Energy-aware mixup (between-class learning, Tokozume et al. 2018), lam ~ U[0.1, 1).
    The amplitude weight p = 1 / (1 + (rms / rms_partner) * (1 - lam) / lam) makes the two parts'
    RMS ratio lam : (1 - lam) whatever their levels (powers floored at 1e-5, i.e. -50 dB); the sum
    is divided by sqrt(p^2 + (1 - p)^2). The target weight is p, as in the EAT code."""
    partner, lam = pairing(wave, partner, lam, 0.1, 1.0, generator)
    level = 10 * torch.log10(wave.pow(2).mean(dim=1).clamp(min=1e-5))  # [B] dB
    p = 1 / (1 + 10 ** ((level - level[partner]) / 20) * (1 - lam) / lam)
    out = mix(wave, partner, p) / torch.sqrt(p ** 2 + (1 - p) ** 2)[:, None]
    return out, partner, p


def time_mix(wave, *, partner=None, lam=None, generator=None):
    """TimeMix (cut-mix in time), lam ~ U[0.5, 1): the last (or, at random, the first)
    int((1 - lam) * S) samples come from the partner; target weight lam."""
    partner, lam = pairing(wave, partner, lam, 0.5, 1.0, generator)
    S = wave.shape[1]
    n = ((1 - lam) * S).long()[:, None]  # [B, 1] samples taken from the partner
    pos = torch.arange(S, device=wave.device)
    taken = torch.where(sides(wave, generator)[:, None], pos >= S - n, pos < n)  # [B, S]
    return torch.where(taken, wave[partner], wave), partner, lam


def freq_mix(wave, n_fft: int = 1024, *, partner=None, lam=None, generator=None):
    """FreqMix (Algorithm 1), lam ~ U[0.5, 1): in the STFT, a clip keeps int(lam * bins) bins at
    the bottom of the spectrum (or, at random, at the top) and takes the other bins from its
    partner; target weight lam."""
    partner, lam = pairing(wave, partner, lam, 0.5, 1.0, generator)
    X = stft(wave, n_fft)  # [B, F, T]
    bins = X.shape[1]
    keep = (lam * bins).long()[:, None]  # [B, 1] own bins
    k = torch.arange(bins, device=wave.device)
    own = torch.where(sides(wave, generator)[:, None], k < keep, k >= bins - keep)  # [B, F]
    X = torch.where(own[:, :, None], X, X[partner])
    return istft(X, n_fft, wave.shape[1]), partner, lam


def phase_mix(wave, n_fft: int = 1024, *, partner=None, lam=None, generator=None):
    """PhaseMix (Algorithm 2), lam ~ U[0, 1): the STFT magnitude of the clip with the phase
    lam * phase + (1 - lam) * phase_partner; target weight 0.5 * lam + 0.5."""
    partner, lam = pairing(wave, partner, lam, 0.0, 1.0, generator)
    X = stft(wave, n_fft)  # [B, F, T]
    phase = X.angle()
    phase = lam[:, None, None] * phase + (1 - lam[:, None, None]) * phase[partner]
    out = istft(torch.polar(X.abs(), phase), n_fft, wave.shape[1])
    return out, partner, 0.5 * lam + 0.5
