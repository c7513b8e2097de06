"""Token index samplers shared by objectives. Tokens are time-major: k = t * F' + f.

Each sampler returns `keep` indices [B, K] (same K for every row) into the
N = T' * F' patch tokens; `masked_from_keep` gives the complementary boolean mask.
"""
from __future__ import annotations

import torch


def random_keep(B: int, grid: tuple[int, int], ratio: float, generator=None, noise=None, device=None):
    """Unstructured masking (MAE): drop `ratio` of tokens, argsort of uniform noise.

    Returns (keep [B, K], ids_restore [B, N]) where keep = the K lowest-noise tokens, in
    noise order as Audio-MAE does (the encoder is permutation-equivariant).
    """
    n = grid[0] * grid[1]
    if noise is None:
        noise = torch.rand(B, n, generator=generator, device=device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    return ids_shuffle[:, : int(n * (1 - ratio))], ids_restore


def time_freq_keep(B: int, grid: tuple[int, int], drop_time: int, drop_freq: int, generator=None,
                   noise_t=None, noise_f=None, device=None) -> torch.Tensor:
    """Structured masking: drop `drop_time` whole time columns and `drop_freq` freq rows.

    PaSST's structured patchout and Audio-MAE's 2-D fine-tuning masks. Returns keep
    [B, (T'-drop_time) * (F'-drop_freq)] in token order (ascending k), as Audio-MAE's
    `random_masking_2d` gathers them (checked against the audiomae_small fixture), so
    given noise reproduces its token order; the kept times/freqs are the lowest-noise ones.
    """
    T, Fq = grid
    if noise_t is None:
        noise_t = torch.rand(B, T, generator=generator, device=device)
    if noise_f is None:
        noise_f = torch.rand(B, Fq, generator=generator, device=device)
    keep_t = noise_t.argsort(dim=1)[:, : T - drop_time]  # [B, T'']
    keep_f = noise_f.argsort(dim=1)[:, : Fq - drop_freq]  # [B, F'']
    keep = (keep_t[:, :, None] * Fq + keep_f[:, None, :]).flatten(1)  # [B, T'' * F'']
    return keep.sort(dim=1).values


def time_gap_mask(lengths: torch.Tensor, n_frames: int, ratio: float = 0.5, gap: int = 15,
                  generator=None) -> torch.Tensor:
    """EnCodecMAE's masking of whole frames: lengths [B] valid frames -> mask [B, n_frames]
    bool, True = masked. Each clip masks exactly int(length * ratio) of its own frames (so a
    different count per clip length) in spans of `gap` frames: span starts are uniform in
    [0, length - gap] and spans are added until the union reaches the count; the frames
    past the count are unmasked at the start of the first span, as the released TimeGapMask."""
    B, device = len(lengths), lengths.device
    target = (lengths * ratio).long()  # [B]
    t = torch.arange(n_frames, device=device)
    n_spans = 8 * (n_frames // gap + 1)
    while True:  # almost always one round: 8x the spans that tile a clip
        starts = (torch.rand(B, n_spans, generator=generator).to(device) *
                  ((lengths - gap).clamp(min=0) + 1)[:, None]).long()  # [B, S]
        spans = (t >= starts[..., None]) & (t < starts[..., None] + gap) & (t < lengths[:, None, None])  # [B, S, T]
        covered = spans.cumsum(1, dtype=torch.int16) > 0  # [B, S, T] union of the first s + 1 spans
        counts = covered.sum(-1)  # [B, S]
        reached = counts >= target[:, None]
        if reached[:, -1].all():
            break
        n_spans *= 2
    rows = torch.arange(B, device=device)
    last = reached.int().argmax(1)  # [B] first span that reaches the count
    excess = counts[rows, last] - target
    first = starts[:, 0]
    undo = (t >= first[:, None]) & (t < (first + excess)[:, None])  # [B, T]
    return covered[rows, last] & ~undo


def packed_keep(visible: torch.Tensor) -> torch.Tensor:
    """visible [B, T] bool -> keep [B, K]: each row's visible frames in order, packed left;
    K = the most any row keeps, shorter rows end in -1 (empty slots)."""
    counts = visible.sum(1)  # [B]
    order = (~visible).to(torch.int8).sort(dim=1, stable=True).indices[:, :int(counts.max())]  # [B, K]
    slots = torch.arange(order.shape[1], device=visible.device)
    return torch.where(slots[None] < counts[:, None], order, -1)


def restore_ids(keep: torch.Tensor, n: int) -> torch.Tensor:
    """keep [B, K] -> ids_restore [B, N]: position of each token in concat(kept, dropped)."""
    dropped = masked_from_keep(keep, n)
    rest = (dropped.float() * 2 - torch.linspace(0, 1, n, device=keep.device)).argsort(dim=1, descending=True)
    order = torch.cat([keep, rest[:, : n - keep.shape[1]]], dim=1)  # [B, N]
    return order.argsort(dim=1)


def masked_from_keep(keep: torch.Tensor, n: int) -> torch.Tensor:
    """keep [B, K] -> boolean [B, N], True where a token was dropped."""
    masked = torch.ones(keep.shape[0], n, dtype=torch.bool, device=keep.device)
    return masked.scatter(1, keep, False)


def gmml_corrupt(x: torch.Tensor, ratio: float = 0.7, alien_prob: float = 0.5, alien_ratio: float = 0.3,
                 max_block: float = 0.3, align: int = 1, alien_self: bool = False,
                 generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """GMML pixel corruption (ASiT, as released) of spectrograms x [B, F, T] -> (corrupted [B, F, T], mask [B, F, T] bool).

    Each clip is corrupted in one of two ways, never both:
      zeros  (probability 1 - alien_prob; the release's data loader, `GMML_drop_rand_patches`):
             a share U(min(0.5, ratio), ratio) of the pixels set to 0;
      alien  (probability alien_prob; the release's `collate_batch`, which replaces the zeroed
             crop by the clean one with blocks of a donor clip pasted in): a share
             U(min(0.5, alien_ratio), alien_ratio) of the pixels (released: exactly 0.3) taken
             from the same region of another clip of the batch (alien_self: any clip, itself
             included, as released; the crop then stays clean while its mask says corrupted).
    Either way rectangles of connected pixels are painted until their union reaches the share:
    corner anywhere, sides drawn from [align, max_block * frames) and [align, max_block * bins),
    multiples of `align` (1: not aligned to patches).
    """
    B, Fq, T = x.shape
    for name, value in (("ratio", ratio), ("alien_ratio", alien_ratio)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"gmml_corrupt: {name}={value} must be in [0, 1)")
    if not 0.0 <= alien_prob <= 1.0:
        raise ValueError(f"gmml_corrupt: alien_prob={alien_prob} must be in [0, 1]")
    if alien_prob > 0 and B < 2 and not alien_self:
        raise ValueError("gmml_corrupt: alien corruption copies from another clip of the batch, "
                         "which has only one (use alien_prob=0, alien_self=True or a larger batch)")
    alien = torch.rand(B, generator=generator) < alien_prob  # [B] this clip's kind
    top = torch.where(alien, alien_ratio, ratio)  # [B]
    low = top.clamp(max=0.5)
    target = ((torch.rand(B, generator=generator) * (top - low) + low) * (Fq * T)).tolist()
    if alien_self:
        donor = torch.randint(0, B, (B,), generator=generator)
    else:
        donor = (torch.arange(B) + torch.randint(1, max(B, 2), (B,), generator=generator)) % B
    mask = torch.zeros(B, Fq, T, dtype=torch.bool)
    pixels = mask.numpy()  # painted through a numpy view: one cheap slice per rectangle
    longest_t, longest_f = max(int(T * max_block), align + 1), max(int(Fq * max_block), align + 1)
    for b in range(B):
        covered = 0
        while covered < target[b]:
            draws = torch.stack([  # 64 rectangles at a time: (t0, f0, length, height)
                torch.randint(0, max(T - align, 1), (64,), generator=generator) // align * align,
                torch.randint(0, max(Fq - align, 1), (64,), generator=generator) // align * align,
                torch.randint(align, longest_t, (64,), generator=generator),
                torch.randint(align, longest_f, (64,), generator=generator)], dim=1).tolist()
            for t0, f0, length, height in draws:
                length = round(min(length, T - t0) / align) * align
                height = round(min(height, Fq - f0) / align) * align
                block = pixels[b, f0:f0 + height, t0:t0 + length]
                covered += int((~block).sum())
                block[...] = True
                if covered >= target[b]:
                    break
    mask = mask.to(x.device)
    alien = alien.to(x.device)[:, None, None]  # [B, 1, 1]
    corrupted = torch.where(mask & alien, x[donor.to(x.device)], x).masked_fill(mask & ~alien, 0.0)
    return corrupted, mask
