"""Train-time augmentation, applied by objectives (never inside a frontend).

  spectrogram.py  masks on [B, F, T] (SpecAugment) and mixup of any tensor with its targets
  wave.py         one waveform [B, S] -> [B, S] each: gains, shifts, masks, filters, quantization,
                  coloured noises, phase noise, resampling (EAT's label-preserving set)
  mixes.py        wave [B, S] -> (wave, partner, weight): energy-aware mixup, TimeMix, FreqMix,
                  PhaseMix (EAT's label-mixing set); mixed_targets: soft or union targets
  pipeline.py     WaveAugmentConfig and wave_augment: the per-step policy of the EAT recipe

Randomness comes from torch's global generator or an explicit `generator` (on the data's
device), so a run is deterministic for a seed. docs/augment.md has the table.
"""
from .mixes import TARGET_RULES, energy_mixup, freq_mix, mixed_targets, phase_mix, time_mix
from .pipeline import MIXES, NOISES, SIGNAL_AUGMENTS, WaveAugmentConfig, wave_augment
from .spectrogram import band_mask, mix, mix_weights, mixup, spec_augment

__all__ = [
    "band_mask", "spec_augment", "mix_weights", "mix", "mixup",
    "energy_mixup", "time_mix", "freq_mix", "phase_mix", "mixed_targets", "TARGET_RULES", "MIXES",
    "NOISES", "SIGNAL_AUGMENTS", "WaveAugmentConfig", "wave_augment",
]
