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
