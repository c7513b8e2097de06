"""Supervised training and fine-tuning: the PaSST and EAT recipes, and Audio-MAE fine-tuning.

wave -> waveform augmentations -> frontend -> SpecAugment -> mixup -> patchout -> backbone
     -> pool -> the encoder's head -> BCE or CE.

Every augmentation and the token sampler come from the config, each off at zero, so one
objective serves a spectrogram ViT (SpecAugment, mixup, patchout) and a waveform network
(waveform augmentations and mixes, no patchout). They act in training mode only; in eval
mode the same forward gives the clean validation loss. Patchout drops tokens before the
transformer: structured (whole time columns and freq rows: PaSST's s_patchout, Audio-MAE's
2-D fine-tuning masks) and unstructured (random tokens); it needs a backbone with a token
grid. The head is the encoder's own (`EncoderConfig.num_classes`): an encoder without one,
or with one of another size, is replaced by `encoder.with_head(num_classes)` (the given
encoder is left as it was), so the saved encoder keeps its logits (HEAR level H).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import WaveAugmentConfig, mixup, spec_augment, wave_augment
from ..masking import time_freq_keep

LOSSES = ("bce", "ce", "auto")


@dataclass(frozen=True)
class SupervisedConfig:
    loss: str = "bce"              # "bce": multi-label; "ce": multi-class; "auto": CE for one-hot targets
                                   # that no mix touched, BCE when mixed or multi-label (EAT)
    label_smoothing: float = 0.0   # CE only
    mixup_alpha: float = 0.3       # mixup on features, lam ~ Beta(a, a) folded to >= 0.5; 0 = off
    freq_mask: int = 48            # SpecAugment: max masked feature channels per example; 0 = off
    time_mask: int = 192           # SpecAugment: max masked frames per example; 0 = off
    patchout_time: float = 0.4     # structured: fraction of time columns dropped (rounded; PaSST 40 of 99)
    patchout_freq: float = 0.33    # structured: fraction of freq rows dropped (PaSST 4 of 12)
    patchout_random: float = 0.0   # unstructured: fraction of the remaining tokens dropped
    wave: WaveAugmentConfig | None = None  # waveform augmentations and mixes (EAT); None = off
    wave_mix_after: int = 0        # steps before the waveform mixes start (EAT's epoch_mix, in steps)


@dataclass(frozen=True)
class EATConfig(SupervisedConfig):
    """The EAT recipe (Gazneli et al., official ESC-50 command): the waveform policy and its
    mixes from the 12th epoch (144 steps of 128 clips), smoothed CE or BCE when mixed, nothing
    on the features and no patchout."""
    loss: str = "auto"
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0
    freq_mask: int = 0
    time_mask: int = 0
    patchout_time: float = 0.0
    patchout_freq: float = 0.0
    wave: WaveAugmentConfig | None = field(default_factory=WaveAugmentConfig)
    wave_mix_after: int = 144


class Supervised(nn.Module):
    def __init__(self, encoder: nn.Module, cfg: SupervisedConfig = SupervisedConfig(), num_classes: int = 0):
        super().__init__()
        if cfg.loss not in LOSSES:
            raise ValueError(f"SupervisedConfig.loss={cfg.loss!r}: expected one of {LOSSES}")
        if num_classes <= 0 and not encoder.config.num_classes:
            raise ValueError("Supervised needs num_classes > 0 (or an encoder with a head)")
        self.encoder = encoder.with_head(num_classes) if num_classes > 0 else encoder
        self.cfg = cfg
        self.patchout_on = cfg.patchout_time > 0 or cfg.patchout_freq > 0 or cfg.patchout_random > 0
        if self.patchout_on and not hasattr(self.encoder.backbone, "grid"):
            raise ValueError(f"patchout needs a backbone with a token grid; {self.encoder.config.backbone.kind!r} has "
                             "none: set objective.patchout_time=0 patchout_freq=0 patchout_random=0")
        if cfg.wave_mix_after > 0:  # the step count travels with checkpoints, so a resume mixes alike
            self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def after_step(self, step: int, total_steps: int) -> None:
        if hasattr(self, "step"):
            self.step.fill_(step + 1)

    def augment_wave(self, wave: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """[B, S], [B, classes] -> the waveform policy (signal augmentations, a noise, a mix)."""
        cfg = self.cfg.wave
        if hasattr(self, "step") and int(self.step) < self.cfg.wave_mix_after:
            cfg = replace(cfg, mixes=())
        return wave_augment(wave, target, cfg, self.encoder.sample_rate)

    def augment_features(self, feats: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """[B, C, T], [B, classes] -> SpecAugment, then mixup (soft targets)."""
        if self.cfg.freq_mask or self.cfg.time_mask:
            feats = spec_augment(feats, self.cfg.freq_mask, self.cfg.time_mask)
        if self.cfg.mixup_alpha > 0:
            feats, target = mixup(feats, target, self.cfg.mixup_alpha)
        return feats, target, self.cfg.mixup_alpha > 0

    def patchout(self, B: int, grid: tuple[int, int], device=None) -> torch.Tensor | None:
        """-> keep [B, K] patch tokens in token order, or None when nothing is dropped."""
        T, Fq = grid
        drop_t = min(round(T * self.cfg.patchout_time), T - 1)
        drop_f = min(round(Fq * self.cfg.patchout_freq), Fq - 1)
        keep = time_freq_keep(B, grid, drop_t, drop_f, device=device) if drop_t or drop_f else None
        if self.cfg.patchout_random > 0:
            n = keep.shape[1] if keep is not None else T * Fq
            n_keep = max(1, n - round(n * self.cfg.patchout_random))
            some = torch.rand(B, n, device=device).argsort(dim=1)[:, :n_keep].sort(dim=1).values  # [B, K]
            keep = some if keep is None else keep.gather(1, some)
        return keep

    def head(self, feats: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Features [B, C, T] -> logits [B, classes]."""
        out = self.encoder.backbone(feats, keep=keep)
        return self.encoder.head(self.encoder.pool(out))

    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, S] waveform -> [B, classes], no augmentation (what prediction uses)."""
        return self.head(self.encoder.frontend(wave))

    def loss(self, logits: torch.Tensor, target: torch.Tensor, mixed: bool) -> torch.Tensor:
        if logits.shape[1] != target.shape[1]:
            raise ValueError(f"targets have {target.shape[1]} classes, the head {logits.shape[1]}")
        single = bool((target.sum(1) == 1).all()) and not mixed
        if self.cfg.loss == "bce" or (self.cfg.loss == "auto" and not single):
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=self.cfg.label_smoothing)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        wave = batch["wave"]  # [B, S]
        target = batch["target"].to(wave.dtype)  # [B, classes], multi-hot or one-hot
        mixed = False
        if self.training and self.cfg.wave is not None:
            wave, target, mixed = self.augment_wave(wave, target)
        with torch.no_grad():
            feats = self.encoder.frontend(wave)  # [B, C, T]
        keep = None
        if self.training:
            feats, target, mixed_features = self.augment_features(feats, target)
            mixed = mixed or mixed_features
            if self.patchout_on:
                keep = self.patchout(feats.shape[0], self.encoder.backbone.grid(feats.shape[-1]), feats.device)
        loss = self.loss(self.head(feats, keep), target, mixed)
        return loss, ({"tokens": float(keep.shape[1])} if keep is not None else {})
