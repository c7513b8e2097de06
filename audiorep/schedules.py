"""Schedules of the training loop, each a pure function of the step and the TrainConfig
(train.py), so a resumed run gets the same values: learning rate (linear warm-up then
cosine/linear/constant, or torch's OneCycleLR), AdamW's beta1 (OneCycle's momentum cycle),
weight decay (constant or cosine) and the EMA momentum (per step, or stated per epoch).
"""
from __future__ import annotations

import math

SHORT_EMA = 0.01  # EMA momentum per epoch of the first `ema_short_epochs` (the EAT release's "ultra short" EMA)


def peak_lr(cfg) -> float:
    return cfg.blr * cfg.batch_size / 256 if cfg.blr > 0 else cfg.lr


def cosine(start: float, end: float, progress: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def warmup_of(cfg) -> int:
    """Warm-up steps: round(warmup_frac * steps) when warmup_frac > 0, else warmup_steps."""
    return round(cfg.warmup_frac * cfg.steps) if cfg.warmup_frac > 0 else cfg.warmup_steps


def onecycle_phase(step: int, cfg) -> tuple[bool, float]:
    """(rising, progress in [0, 1] of that phase) of torch's OneCycleLR at `step`: the rise
    ends at step warmup - 1, the fall at step steps - 1."""
    up = max(warmup_of(cfg) - 1, 1)
    if step <= up:
        return True, step / up
    return False, (step - up) / max(cfg.steps - 1 - up, 1)


def lr_at(step: int, cfg) -> float:
    """Linear warmup over the warm-up steps (`warmup_of`), then cosine/linear decay to `min_lr`
    at `steps`. "onecycle" is torch's OneCycleLR (EAT): a cosine rise from lr / 25 over the
    warm-up, then a cosine fall to lr / 25 / 1e4 (min_lr is not used)."""
    lr = peak_lr(cfg)
    warmup = warmup_of(cfg)
    if cfg.schedule == "onecycle":
        rising, progress = onecycle_phase(step, cfg)
        return cosine(lr / 25, lr, progress) if rising else cosine(lr, lr / 25 / 1e4, progress)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    if cfg.schedule == "cosine":
        return cosine(lr, cfg.min_lr, progress)
    if cfg.schedule == "linear":
        return lr - (lr - cfg.min_lr) * progress
    return lr


def beta1_at(step: int, cfg) -> float:
    """AdamW's beta1: betas[0], or with cycle_beta1 = (high, low) torch's OneCycleLR momentum
    cycle: cosine from high to low over the rise, back to high over the fall."""
    if cfg.cycle_beta1 is None:
        return cfg.betas[0]
    high, low = cfg.cycle_beta1
    rising, progress = onecycle_phase(step, cfg)
    return cosine(high, low, progress) if rising else cosine(low, high, progress)


def ema_momentum(step: int, cfg, steps_per_epoch: float | None) -> float:
    """EMA momentum of step `step`: `ema` per step, or `ema_per_epoch` (SHORT_EMA during the
    first `ema_short_epochs`) spread over the steps of an epoch."""
    if cfg.ema_per_epoch <= 0:
        return cfg.ema
    per_epoch = SHORT_EMA if step < cfg.ema_short_epochs * steps_per_epoch else cfg.ema_per_epoch
    return per_epoch ** (1 / steps_per_epoch)


def weight_decay_at(step: int, cfg) -> float:
    """Constant, or cosine from weight_decay (step 0) to weight_decay_end (last step)."""
    if cfg.weight_decay_end is None:
        return cfg.weight_decay
    return cosine(cfg.weight_decay, cfg.weight_decay_end, step / max(1, cfg.steps - 1))
