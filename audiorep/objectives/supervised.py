"""Supervised training and fine-tuning: the PaSST recipe, and Audio-MAE fine-tuning.

features -> SpecAugment -> mixup -> patchout -> backbone -> pool -> head -> BCE or CE.

Augmentation and patchout happen in training mode only; in eval mode the same forward
gives the clean validation loss. Patchout drops tokens before the transformer, so it also
makes training cheaper: structured (whole time columns and freq rows: PaSST's s_patchout,
Audio-MAE's 2-D fine-tuning masks) and unstructured (random tokens) can be combined.
The head is LayerNorm + Linear on the pooled features (`encoder.config.pool`: mean of the
cls/dist tokens or of the patch tokens). An encoder with its own `head` (PaSST presets)
trains that head, so the saved encoder keeps its logits (HEAR level H).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import mixup, spec_augment
from ..masking import time_freq_keep

LOSSES = ("bce", "ce")


@dataclass(frozen=True)
class SupervisedConfig:
    loss: str = "bce"              # "bce": multi-label (sigmoid per class); "ce": multi-class (softmax)
    label_smoothing: float = 0.0   # "ce" only
    mixup_alpha: float = 0.3       # mixup on spectrograms, lam ~ Beta(a, a) folded to >= 0.5; 0 = off
    freq_mask: int = 48            # SpecAugment: max masked mel bins per example; 0 = off
    time_mask: int = 192           # SpecAugment: max masked frames per example; 0 = off
    patchout_time: float = 0.4     # structured: fraction of time columns dropped (rounded; PaSST 40 of 99)
    patchout_freq: float = 0.33    # structured: fraction of freq rows dropped (PaSST 4 of 12)
    patchout_random: float = 0.0   # unstructured: fraction of the remaining patch tokens dropped


def classifier(dim: int, num_classes: int) -> nn.Sequential:
    head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
    nn.init.trunc_normal_(head[1].weight, std=0.02)
    nn.init.zeros_(head[1].bias)
    return head


class Supervised(nn.Module):
    def __init__(self, encoder: nn.Module, cfg: SupervisedConfig = SupervisedConfig(), num_classes: int = 0):
        super().__init__()
        if cfg.loss not in LOSSES:
            raise ValueError(f"SupervisedConfig.loss={cfg.loss!r}: expected one of {LOSSES}")
        self.encoder, self.cfg = encoder, cfg
        dim = encoder.config.backbone.dim
        if hasattr(encoder, "head"):
            self.head = None  # the encoder's own head is trained (refitted to the task's classes)
            if num_classes and num_classes != encoder.config.num_classes:
                encoder.head = classifier(dim, num_classes)
                encoder.config = replace(encoder.config, num_classes=num_classes)
        elif num_classes > 0:
            self.head = classifier(dim, num_classes)
        else:
            raise ValueError("Supervised needs num_classes > 0 (or an encoder with a head)")

    def augment(self, feats: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, F, T], [B, C] -> SpecAugment, then mixup (soft targets)."""
        feats = spec_augment(feats, self.cfg.freq_mask, self.cfg.time_mask)
        if self.cfg.mixup_alpha > 0:
            feats, target = mixup(feats, target, self.cfg.mixup_alpha)
        return feats, target

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

    def logits(self, feats: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """[B, F, T] -> [B, C]."""
        out = self.encoder.backbone(feats, keep=keep)
        head = self.head if self.head is not None else self.encoder.head
        return head(self.encoder.pool(out.tokens, out.prefix))

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            feats = self.encoder.frontend(batch["wave"])  # [B, F, T]
        target = batch["target"].to(feats.dtype)  # [B, C], multi-hot or one-hot
        grid = self.encoder.backbone.grid(feats.shape[-1])
        keep = None
        if self.training:
            feats, target = self.augment(feats, target)
            keep = self.patchout(feats.shape[0], grid, feats.device)
        logits = self.logits(feats, keep)
        if logits.shape[1] != target.shape[1]:
            raise ValueError(f"targets have {target.shape[1]} classes, the head {logits.shape[1]}")
        if self.cfg.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, target)
        else:
            loss = F.cross_entropy(logits, target, label_smoothing=self.cfg.label_smoothing)
        return loss, {"patch_tokens": float(keep.shape[1] if keep is not None else grid[0] * grid[1])}
