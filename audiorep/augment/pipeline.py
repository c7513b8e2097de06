"""The EAT augmentation policy for one training step on a batch of waveforms.

Per step, in this order (EAT code: datasets/audio_augs.py `AudioAugs`, datasets/batch_augs.py
`BatchAugs`):
  1. every signal augmentation in `signal`, in a random order, each reaching a clip with
     probability p;
  2. one noise type drawn for the step from `noises`, reaching a clip with probability p;
  3. with probability resample_p, the batch resampled by one factor from resample_factors
     (length kept);
  4. with probability mix_p, one mix drawn for the step from `mixes`: targets by the rule
     `mix_targets` (mixes.mixed_targets), and the caller switches to BCE (`mixed` is True).
The EAT code draws steps 1-2 per clip in its data loader; here they run batched on the
training device with one noise type per step. Gradients are never needed (no_grad).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .mixes import TARGET_RULES, energy_mixup, freq_mix, mixed_targets, phase_mix, time_mix
from .wave import (ADDITIVE_NOISES, add_noise, cyclic_shift, gain, highpass, lowpass, mu_law, phase_noise, quantize,
                   resample, segment_gain, time_mask, time_shift)


def _pick(options, like: torch.Tensor, generator=None):
    return options[int(torch.randint(len(options), (1,), generator=generator, device=like.device))]


def _chance(p: float, like: torch.Tensor, generator=None) -> bool:
    return bool(torch.rand(1, generator=generator, device=like.device) < p)


def _n_fft(x: torch.Tensor, cfg: "WaveAugmentConfig", generator=None) -> int:
    """One STFT size for the step among those the clip length allows."""
    fits = [n for n in cfg.stft_sizes if n // 2 < x.shape[-1]]
    if not fits:
        raise ValueError(f"WaveAugmentConfig.stft_sizes={cfg.stft_sizes}: clips of {x.shape[-1]} samples are too "
                         f"short (an STFT of size n needs more than n / 2 samples)")
    return _pick(fits, x, generator)


# name -> f(x [B, S], cfg, sample_rate, generator) -> [B, S]
SIGNAL_AUGMENTS = {
    "gain": lambda x, c, sr, g: gain(x, *c.gain, generator=g),
    "segment_gain": lambda x, c, sr, g: segment_gain(x, round(c.segment_s * sr), *c.gain, generator=g),
    "shift": lambda x, c, sr, g: time_shift(x, round(c.shift_s * sr), generator=g),
    "cyclic_shift": lambda x, c, sr, g: cyclic_shift(x, generator=g),
    "mask": lambda x, c, sr, g: time_mask(x, round(c.mask_s * sr), generator=g),
    "polarity": lambda x, c, sr, g: -x,
    "lowpass": lambda x, c, sr, g: lowpass(x, *c.lowpass, generator=g),
    "highpass": lambda x, c, sr, g: highpass(x, *c.highpass, generator=g),
    "mulaw": lambda x, c, sr, g: mu_law(x, c.mu_law_channels),
    "quantize": lambda x, c, sr, g: quantize(x, c.quantize_bits),
}
NOISES = {
    **{kind: (lambda x, c, sr, g, kind=kind: add_noise(x, kind, sr, c.snr_db, g)) for kind in ADDITIVE_NOISES},
    "sine": lambda x, c, sr, g: add_noise(x, "sine", sr, c.sine_snr_db, g),
    "phase": lambda x, c, sr, g: phase_noise(x, _n_fft(x, c, g), *c.phase_sigma, generator=g),
}
# name -> f(x [B, S], cfg, generator) -> (x, partner [B], own weight [B])
MIXES = {
    "mixup": lambda x, c, g: energy_mixup(x, generator=g),
    "timemix": lambda x, c, g: time_mix(x, generator=g),
    "freqmix": lambda x, c, g: freq_mix(x, _n_fft(x, c, g), generator=g),
    "phasemix": lambda x, c, g: phase_mix(x, _n_fft(x, c, g), generator=g),
}


@dataclass(frozen=True)
class WaveAugmentConfig:
    signal: tuple[str, ...] = ("gain", "polarity", "shift", "mask", "segment_gain", "cyclic_shift")
    noises: tuple[str, ...] = ("white", "blue", "pink", "red", "violet", "uniform", "phase", "sine")
    mixes: tuple[str, ...] = ("mixup", "timemix", "freqmix", "phasemix")  # () = never mix
    p: float = 0.5                      # chance that each signal augmentation, and the noise, reaches a clip
    mix_p: float = 1.0                  # chance that a step mixes (EAT: mix_ratio 1)
    mix_targets: str = "soft"           # TARGET_RULES: "soft" (weighted) or "union" (the EAT release's BCE target)
    resample_p: float = 0.5             # chance that a step resamples the batch
    resample_factors: tuple[float, ...] = (0.8, 0.9, 1.1, 1.2)
    gain: tuple[float, float] = (0.5, 1.3)         # gain and segment gain range
    segment_s: float = 0.1              # segment gain length (seconds)
    shift_s: float = 0.1                # largest linear shift (seconds)
    mask_s: float = 0.1                 # time mask length (seconds)
    snr_db: tuple[float, float] = (30.0, 30.0)     # additive noise SNR range (EAT: always 30 dB) ...
    sine_snr_db: tuple[float, float] = (30.0, 35.0)  # ... except the sine hum (EAT: U[30, 35) dB)
    phase_sigma: tuple[float, float] = (0.01, 0.02)  # phase noise scale range (radians)
    lowpass: tuple[float, float] = (0.25, 0.375)   # cutoff range, fractions of the sample rate
    highpass: tuple[float, float] = (0.005, 0.125)
    mu_law_channels: int = 256
    quantize_bits: int = 8
    stft_sizes: tuple[int, ...] = (512, 1024, 2048)  # FreqMix, PhaseMix, phase noise: one per call, hop n / 4

    def __post_init__(self):
        for field, table in (("signal", SIGNAL_AUGMENTS), ("noises", NOISES), ("mixes", MIXES)):
            unknown = [n for n in getattr(self, field) if n not in table]
            if unknown:
                raise ValueError(f"WaveAugmentConfig.{field}: unknown {unknown}; expected names from {sorted(table)}")
        for field in ("p", "mix_p", "resample_p"):
            if not 0 <= getattr(self, field) <= 1:
                raise ValueError(f"WaveAugmentConfig.{field}={getattr(self, field)}: a probability must be in [0, 1]")
        if self.mix_targets not in TARGET_RULES:
            raise ValueError(f"WaveAugmentConfig.mix_targets={self.mix_targets!r}: expected one of {TARGET_RULES}")
        for field in ("gain", "snr_db", "sine_snr_db", "phase_sigma", "lowpass", "highpass"):
            low, high = getattr(self, field)
            if low > high:
                raise ValueError(f"WaveAugmentConfig.{field}={getattr(self, field)}: expected (low, high) with low <= high")
        if not (0 < self.lowpass[0] and self.lowpass[1] <= 0.5 and 0 < self.highpass[0] and self.highpass[1] <= 0.5):
            raise ValueError("WaveAugmentConfig.lowpass/highpass: cutoffs are fractions of the sample rate in (0, 0.5]")
        if any(f <= 0 for f in self.resample_factors) or any(n < 4 for n in self.stft_sizes):
            raise ValueError("WaveAugmentConfig.resample_factors must be > 0 and stft_sizes >= 4")


def some(x: torch.Tensor, p: float, fn, generator=None) -> torch.Tensor:
    """fn applied to each clip (row) with probability p, the other clips unchanged."""
    rows = (torch.rand(x.shape[0], generator=generator, device=x.device) < p).nonzero().squeeze(1)
    if len(rows) == x.shape[0]:
        return fn(x)
    if len(rows) == 0:
        return x
    out = x.clone()
    out[rows] = fn(x[rows])
    return out


def wave_augment(wave: torch.Tensor, target: torch.Tensor | None, cfg: WaveAugmentConfig = WaveAugmentConfig(),
                 sample_rate: int = 22050, generator=None) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """wave [B, S], target [B, C] (or None when cfg.mixes is empty) -> (wave, target, mixed).
    `generator` must live on wave's device; the output keeps wave's device and dtype."""
    if wave.ndim != 2 or wave.shape[1] < 2:
        raise ValueError(f"wave_augment: wave must be [B, S] with S >= 2, got shape {tuple(wave.shape)}")
    if cfg.mixes and (target is None or target.shape[0] != wave.shape[0]):
        raise ValueError(f"wave_augment: WaveAugmentConfig.mixes={cfg.mixes} needs a target [B, C] with B = "
                         f"{wave.shape[0]}, got {None if target is None else tuple(target.shape)} (mixes=() for none)")
    bad = (~torch.isfinite(wave)).any(dim=1)
    if bool(bad.any()):
        raise ValueError(f"wave_augment: clips {bad.nonzero().squeeze(1).tolist()} of the batch hold NaN or inf")
    x = wave if wave.dtype in (torch.float32, torch.float64) else wave.float()
    with torch.no_grad():
        for i in torch.randperm(len(cfg.signal), generator=generator, device=x.device).tolist():
            augment = SIGNAL_AUGMENTS[cfg.signal[i]]
            x = some(x, cfg.p, lambda rows: augment(rows, cfg, sample_rate, generator), generator)
        if cfg.noises:
            noise = NOISES[_pick(cfg.noises, x, generator)]
            x = some(x, cfg.p, lambda rows: noise(rows, cfg, sample_rate, generator), generator)
        if cfg.resample_factors and _chance(cfg.resample_p, x, generator):
            x = resample(x, _pick(cfg.resample_factors, x, generator))
        mixed = bool(cfg.mixes) and _chance(cfg.mix_p, x, generator)
        if mixed:
            x, partner, weight = MIXES[_pick(cfg.mixes, x, generator)](x, cfg, generator)
            target = mixed_targets(target.to(x.dtype), partner, weight, cfg.mix_targets)
    return x.to(wave.dtype), target, mixed
