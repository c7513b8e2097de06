"""Exponential moving average of a model's weights (EMA teachers, EMA evaluation weights).

    ema = EMA(student)                        # a frozen copy
    ema.update(student, momentum_at(step, total, 0.996, 1.0))
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn


def momentum_at(step: int, total: int, base: float, final: float = 1.0) -> float:
    """Cosine schedule from `base` (step 0) to `final` (step `total`), as BYOL/DINO/ASiT use."""
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


class EMA(nn.Module):
    """A frozen copy `self.model` of `model`, updated as p_ema = m * p_ema + (1 - m) * p.

    Floating-point buffers (BatchNorm statistics) are averaged the same way, integer ones
    (batch counters) copied.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, model: nn.Module, momentum: float) -> None:
        ema = [p for p in self.model.parameters()]
        src = [p.detach() for p in model.parameters()]
        if len(ema) != len(src):
            raise ValueError(f"EMA: model has {len(src)} parameters, its copy {len(ema)}")
        torch._foreach_mul_(ema, momentum)
        torch._foreach_add_(ema, src, alpha=1.0 - momentum)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            if b_ema.is_floating_point():  # BatchNorm statistics are averaged too (EAT's EMA)
                b_ema.mul_(momentum).add_(b, alpha=1.0 - momentum)
            else:
                b_ema.copy_(b)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def train(self, mode: bool = True) -> "EMA":
        """The copy stays in eval mode (no dropout, no drop path) whatever its owner does."""
        super().train(mode)
        self.model.eval()
        return self
