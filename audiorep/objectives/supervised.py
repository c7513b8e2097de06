"""Supervised training and fine-tuning: the PaSST and EAT recipes, and Audio-MAE fine-tuning.

wave -> waveform augmentations -> frontend -> SpecAugment -> mixup -> patchout -> backbone
     -> pool -> the encoder's head -> BCE or CE (mean or sum over the batch).

Every augmentation and the token sampler come from the config, each off at zero, so one
objective serves a spectrogram ViT (SpecAugment, mixup, patchout) and a waveform network
(waveform augmentations and mixes, no patchout). They act in training mode only; in eval
mode the same forward gives the clean validation loss. Patchout drops tokens before the
transformer: structured (whole time columns and freq rows: PaSST's s_patchout, Audio-MAE's
2-D fine-tuning masks) and unstructured (random tokens); it needs a backbone with a token
grid. The head is the encoder's own (`EncoderConfig.num_classes`): an encoder without one,
or with one of another size, is replaced by `encoder.with_head(num_classes)` (the given
encoder is left as it was), so the saved encoder keeps its logits (HEAR level H). Logs: the
pooled embedding's spread and effective rank (`emb_std`, `emb_rank`, monitor.py) and, with
augmentations that mix, whether the step mixed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import WaveAugmentConfig, mixup, spec_augment, wave_augment
from ..masking import time_freq_keep
from ..monitor import representation_stats

LOSSES = ("bce", "ce", "auto")
REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class SupervisedConfig:
    loss: str = "bce"              # "bce": multi-label; "ce": multi-class; "auto": CE for one-hot targets
                                   # that no mix touched, BCE when mixed or multi-label (EAT)
    label_smoothing: float = 0.0   # CE only
    smoothing_others: bool = False # True: label_smoothing goes to the other classes only, each label_smoothing /
                                   # (C - 1) (the EAT release); False: torch's label_smoothing / C on every class
    reduction: str = "mean"        # over the batch: "mean", or "sum" (the EAT release; sum over the batch a process
                                   # sees: the loop averages over accumulation steps and processes)
    mixup_alpha: float = 0.3       # mixup on features, lam ~ Beta(a, a) folded to >= 0.5; 0 = off
    freq_mask: int = 48            # SpecAugment: max masked feature channels per example; 0 = off
    time_mask: int = 192           # SpecAugment: max masked frames per example; 0 = off
    patchout_time: float = 0.4     # structured: fraction of time columns dropped (rounded; PaSST 40 of 99)
    patchout_freq: float = 0.33    # structured: fraction of freq rows dropped (PaSST 4 of 12)
    patchout_random: float = 0.0   # unstructured: fraction of the remaining tokens dropped
    wave: WaveAugmentConfig | None = None  # waveform augmentations and mixes (EAT); None = off
    wave_mix_after_epochs: float = 0.0  # epochs before the waveform mixes start (EAT's epoch_mix); the loop
                                   # gives the epoch length (set_epoch_steps)


@dataclass(frozen=True)
class EATConfig(SupervisedConfig):
    """The EAT recipe (Gazneli et al., official ESC-50 command): the waveform policy and its
    mixes after 12 epochs, CE smoothed as the release smooths or, on mixed steps, BCE against
    the union of both clips' labels, summed over the batch; nothing on the features and no
    patchout."""
    loss: str = "auto"
    label_smoothing: float = 0.1
    smoothing_others: bool = True
    reduction: str = "sum"
    mixup_alpha: float = 0.0
    freq_mask: int = 0
    time_mask: int = 0
    patchout_time: float = 0.0
    patchout_freq: float = 0.0
    wave: WaveAugmentConfig | None = field(default_factory=lambda: WaveAugmentConfig(mix_targets="union"))
    wave_mix_after_epochs: float = 12.0


class Supervised(nn.Module):
    def __init__(self, encoder: nn.Module, cfg: SupervisedConfig = SupervisedConfig(), num_classes: int = 0):
        super().__init__()
        if cfg.loss not in LOSSES:
            raise ValueError(f"SupervisedConfig.loss={cfg.loss!r}: expected one of {LOSSES}")
        if cfg.reduction not in REDUCTIONS:
            raise ValueError(f"SupervisedConfig.reduction={cfg.reduction!r}: expected one of {REDUCTIONS}")
        if num_classes <= 0 and not encoder.config.num_classes:
            raise ValueError("Supervised needs num_classes > 0 (or an encoder with a head)")
        self.encoder = encoder.with_head(num_classes) if num_classes > 0 else encoder
        self.cfg = cfg
        self.patchout_on = cfg.patchout_time > 0 or cfg.patchout_freq > 0 or cfg.patchout_random > 0
        if self.patchout_on and not hasattr(self.encoder.backbone, "grid"):
            raise ValueError(f"patchout needs a backbone with a token grid; {self.encoder.config.backbone.kind!r} has "
                             "none: set objective.patchout_time=0 patchout_freq=0 patchout_random=0")
        self.epoch_steps: float | None = None
        if cfg.wave_mix_after_epochs > 0:  # the step count travels with checkpoints, so a resume mixes alike
            self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def set_epoch_steps(self, steps: float) -> None:
        """Optimizer steps per epoch (the loop calls this before training)."""
        self.epoch_steps = steps

    def after_step(self, step: int, total_steps: int) -> None:
        if hasattr(self, "step"):
            self.step.fill_(step + 1)

    def augment_wave(self, wave: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """[B, S], [B, classes] -> the waveform policy (signal augmentations, a noise, a mix)."""
        cfg = self.cfg.wave
        if hasattr(self, "step"):
            if self.epoch_steps is None:
                raise ValueError(f"SupervisedConfig.wave_mix_after_epochs={self.cfg.wave_mix_after_epochs}: the epoch "
                                 "length is unknown (train through audiorep.train, or call set_epoch_steps first)")
            if int(self.step) < self.cfg.wave_mix_after_epochs * self.epoch_steps:
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

    def embed(self, feats: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Features [B, C, T] -> pooled embeddings [B, D]."""
        return self.encoder.pool(self.encoder.backbone(feats, keep=keep))

    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, S] waveform -> [B, classes], no augmentation (what prediction uses)."""
        return self.encoder.head(self.embed(self.encoder.frontend(wave)))

    def smoothing(self, classes: int) -> float:
        """torch's label_smoothing that gives the configured targets: the release's 1 - e on the
        label and e / (C - 1) on each other class is torch's e' = e C / (C - 1)."""
        e = self.cfg.label_smoothing
        return e * classes / (classes - 1) if self.cfg.smoothing_others and classes > 1 else e

    def loss(self, logits: torch.Tensor, target: torch.Tensor, mixed: bool) -> torch.Tensor:
        if logits.shape[1] != target.shape[1]:
            raise ValueError(f"targets have {target.shape[1]} classes, the head {logits.shape[1]}")
        single = bool((target.sum(1) == 1).all()) and not mixed
        if self.cfg.loss == "bce" or (self.cfg.loss == "auto" and not single):
            return F.binary_cross_entropy_with_logits(logits, target, reduction=self.cfg.reduction)
        return F.cross_entropy(logits, target, label_smoothing=self.smoothing(logits.shape[1]),
                               reduction=self.cfg.reduction)

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
        pooled = self.embed(feats, keep)  # [B, D]
        loss = self.loss(self.encoder.head(pooled), target, mixed)
        logs = representation_stats(pooled)
        if keep is not None:
            logs["tokens"] = float(keep.shape[1])
        if self.training and (self.cfg.wave is not None and self.cfg.wave.mixes or self.cfg.mixup_alpha > 0):
            logs["mixed"] = float(mixed)
        return loss, logs
