"""SpecAugment on a downstream's features [B, T, D], as s3prl's runner applies it during ASR training
(downstream/specaug.py with the `specaug` block of downstream/asr/config.yaml, on by default).

In this order, every utterance drawn on its own:
  1. time warp (window W = 5): an utterance of n > 2W frames is cut at a frame c ~ U{W .. n-W-1};
     its first c frames are stretched to w ~ U{c-W+1 .. c+W} frames and the rest to n - w
     (bicubic interpolation along time), so its length stays n. Shorter utterances are unchanged.
  2. 4 feature masks: width ~ U{0 .. 49} absolute dims, start ~ U{0 .. max(1, D - widest) - 1}
     where `widest` is the widest of all the batch's feature masks.
  3. 2 time masks: width ~ U{0 .. 39} absolute frames, start ~ U{0 .. max(1, T - widest) - 1},
     T the batch's longest utterance and `widest` the widest time mask of the batch; so a mask
     can fall partly or wholly past a short utterance's end, where it masks nothing.
Masked values become 0. Padding (frames past an utterance's length) is never warped into or
masked. Randomness comes from an explicit torch.Generator (CPU), so a run reproduces for a seed.

augment/spectrogram.py's `band_mask` is not reused: it draws one band of real-valued width with
the start range of each example's own width (torchaudio's draw), not s3prl's integer widths,
several bands, and a start range set by the batch's widest mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SpecAugConfig:
    warp_window: int = 5      # 0: no time warp
    freq_masks: int = 4
    freq_mask_max: int = 50   # widths 0 .. freq_mask_max - 1
    time_masks: int = 2
    time_mask_max: int = 40

    def __post_init__(self):
        for name in ("warp_window", "freq_masks", "freq_mask_max", "time_masks", "time_mask_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"SpecAugConfig.{name}={getattr(self, name)}: expected an integer >= 0")


def time_warp(x: torch.Tensor, window: int, generator: torch.Generator) -> torch.Tensor:
    """[n, D] -> [n, D]: one warp of one utterance (identity for window 0 or n <= 2 * window)."""
    n, D = x.shape
    if window == 0 or n <= 2 * window:
        return x
    c = int(torch.randint(window, n - window, (), generator=generator))
    w = int(torch.randint(c - window + 1, c + window + 1, (), generator=generator))
    grid = x[None, None]  # [1, 1, n, D]: interpolate wants an image; along D the scale is 1 (exact)
    left = F.interpolate(grid[:, :, :c], size=(w, D), mode="bicubic", align_corners=False)
    right = F.interpolate(grid[:, :, c:], size=(n - w, D), mode="bicubic", align_corners=False)
    return torch.cat([left, right], dim=2)[0, 0]


def band_masks(B: int, count: int, max_width: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """[B, size] bool: the union of `count` bands per example, width ~ U{0 .. max_width - 1},
    start ~ U{0 .. max(1, size - widest) - 1} with `widest` over the whole batch."""
    if count == 0 or max_width <= 0:
        return torch.zeros(B, size, dtype=torch.bool)
    width = torch.randint(0, max_width, (B, count, 1), generator=generator)
    start = torch.randint(0, max(1, size - int(width.max())), (B, count, 1), generator=generator)
    pos = torch.arange(size)
    return ((pos >= start) & (pos < start + width)).any(1)  # [B, count, size] -> [B, size]


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, cfg: SpecAugConfig,
                 generator: torch.Generator) -> torch.Tensor:
    """x [B, T, D] (zero past each length), lengths [B] -> [B, T, D], differentiable in x."""
    B, T, D = x.shape
    lengths = lengths.cpu()
    if cfg.warp_window:
        rows = [time_warp(x[i, :n], cfg.warp_window, generator) for i, n in enumerate(lengths.tolist())]
        x = torch.stack([F.pad(r, (0, 0, 0, T - len(r))) for r in rows])  # [B, T, D]
    valid = torch.arange(T)[None, :] < lengths[:, None]  # [B, T]
    freq = band_masks(B, cfg.freq_masks, cfg.freq_mask_max, D, generator)  # [B, D]
    time = band_masks(B, cfg.time_masks, cfg.time_mask_max, int(lengths.max()), generator)
    time = F.pad(time, (0, T - time.shape[1]))  # [B, T]
    masked = (freq[:, None, :] | time[:, :, None]) & valid[:, :, None]  # [B, T, D]
    return x.masked_fill(masked.to(x.device), 0.0)


def heavy(cfg: SpecAugConfig, dims: int, frames: float, share: float = 0.25) -> str | None:
    """Why the masks would hide more than `share` of the features or of a mean utterance's frames
    on average (s3prl's absolute widths are sized for 768-1024-dim features of ~12 s), else None."""
    hidden = {"feature dims": (cfg.freq_masks * (cfg.freq_mask_max - 1) / 2 / max(dims, 1), dims),
              "frames": (cfg.time_masks * (cfg.time_mask_max - 1) / 2 / max(frames, 1.0), frames)}
    too_much = [f"{min(1.0, h):.0%} of the {size:.0f} {what}" for what, (h, size) in hidden.items() if h > share]
    if not too_much:
        return None
    return (f"SpecAugment's widths (< {cfg.freq_mask_max} dims, < {cfg.time_mask_max} frames) hide about "
            f"{' and '.join(too_much)} on average; the head may learn nothing (--asr-specaug-max DIMS FRAMES "
            "scales them, --asr-no-specaug turns it off)")

