"""Token index samplers shared by objectives. Tokens are time-major: k = t * F' + f.

Each sampler returns `keep` indices [B, K] (same K for every row) into the
N = T' * F' patch tokens; `masked_from_keep` gives the complementary boolean mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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


RECTS = 64  # rectangles drawn per crop in one round of gmml_blocks: the bits of an int64


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
    multiples of `align` (1: not aligned to patches). All crops at once on x's device
    (`gmml_blocks`); the random numbers come from the CPU (`generator`, or torch's global one),
    so a seed gives the same masks on any device, as `time_gap_mask`.
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
    target = (torch.rand(B, generator=generator) * (top - low) + low) * (Fq * T)  # [B] pixels
    if alien_self:
        donor = torch.randint(0, B, (B,), generator=generator)
    else:
        donor = (torch.arange(B) + torch.randint(1, max(B, 2), (B,), generator=generator)) % B
    mask = gmml_blocks(target.to(x.device), Fq, T, max_block, align, generator)
    alien, donor = alien.to(x.device)[:, None, None], donor.to(x.device)  # [B, 1, 1], [B]
    corrupted = torch.where(mask & alien, x[donor], x).masked_fill(mask & ~alien, 0.0)
    return corrupted, mask


def gmml_blocks(target: torch.Tensor, Fq: int, T: int, max_block: float = 0.3, align: int = 1,
                generator=None) -> torch.Tensor:
    """Rectangles painted until their union covers target [B] pixels of each [F, T] crop -> mask [B, F, T] bool.

    The same law as painting them one at a time (the release): rectangle r of a crop is drawn
    whether or not the crop needs it, so the mask is the union of rectangles 0..k, k the first
    whose union reaches the target. In a round every crop still short of its target draws
    RECTS rectangles, bit r of an int64 standing for rectangle r. Their edges cut the crop into
    at most (2R + 1)^2 cells that no edge crosses; a cell's bits (row bits & column bits) say
    which rectangles cover it, its lowest bit which paints it first, so a histogram of lowest
    bits weighted by the cells' unpainted pixels gives the painted count after each rectangle.
    Rounds: about (rectangles a crop needs) / RECTS, whatever the batch size.
    """
    B, device = len(target), target.device
    bit = torch.ones(RECTS, dtype=torch.long, device=device) << torch.arange(RECTS, device=device)  # bit 63 < 0
    longest_t, longest_f = max(int(T * max_block), align + 1), max(int(Fq * max_block), align + 1)
    mask = torch.zeros(B, Fq, T, dtype=torch.bool, device=device)
    covered = torch.zeros(B, dtype=torch.long, device=device)  # pixels painted in earlier rounds
    todo = torch.arange(B, device=device)  # crops short of their target
    later = False  # a round after the first
    while len(todo):
        n, rows = len(todo), torch.arange(len(todo), device=device)
        t0, f0, length, height = torch.stack([torch.randint(low, high, (n, RECTS), generator=generator)
                                              for low, high in ((0, max(T - align, 1)), (0, max(Fq - align, 1)),
                                                                (align, longest_t), (align, longest_f))]).to(device)
        t0, f0 = t0 // align * align, f0 // align * align
        t1 = t0 + ((torch.minimum(length, T - t0) / align).round() * align).long()  # [n, R] exclusive ends
        f1 = f0 + ((torch.minimum(height, Fq - f0) / align).round() * align).long()
        f_edges, t_edges = cut(f0, f1, Fq), cut(t0, t1, T)  # [n, S + 1]: S segments per axis
        f_bits, t_bits = span_bits(f0, f1, f_edges[:, :-1], bit), span_bits(t0, t1, t_edges[:, :-1], bit)  # [n, S]
        cells = f_bits[:, :, None] & t_bits[:, None, :]  # [n, Sf, St]
        before = mask[todo]
        fresh = f_edges.diff(dim=1)[:, :, None] * t_edges.diff(dim=1)[:, None, :]  # [n, Sf, St] pixels per cell
        if later:  # less what earlier rounds painted
            fresh -= pixels_in_cells(before, f_edges, t_edges)
        first = lowest_bit(cells)  # [n, Sf, St]: 1 + the first rectangle covering the cell, 0 none
        counts = fresh.new_zeros(n, RECTS + 1).scatter_add_(1, first.flatten(1), fresh.flatten(1))[:, 1:]  # [n, R]
        total = covered[todo, None] + counts.cumsum(1)  # [n, R] pixels painted after rectangle r
        reached = total.double() >= target[todo, None].double()
        done = reached.any(1)
        last = torch.where(done, reached.int().argmax(1), RECTS - 1)  # [n] the last rectangle painted
        painted = (first > 0) & (first <= last[:, None, None] + 1)  # [n, Sf, St]
        f_cell, t_cell = cell_of(f_edges, Fq), cell_of(t_edges, T)  # [n, F], [n, T]
        painted = painted.gather(1, f_cell[:, :, None].expand(-1, -1, painted.shape[2]))  # [n, F, St]
        mask[todo] = before | painted.gather(2, t_cell[:, None, :].expand(-1, Fq, -1))  # [n, F, T]
        covered[todo] = total[rows, last]
        todo, later = todo[~done], True
    return mask


def cut(start: torch.Tensor, end: torch.Tensor, extent: int) -> torch.Tensor:
    """Spans [start, end) [n, R] on an axis of `extent` -> their sorted edges with 0 and extent [n, 2R + 2]."""
    ends = start.new_tensor([0, extent]).expand(len(start), -1)
    return torch.cat([start, end, ends], 1).sort(1).values


def cell_of(edges: torch.Tensor, extent: int) -> torch.Tensor:
    """Sorted edges [n, S + 1] (0 to extent) -> [n, extent]: the segment holding each pixel (never an empty one)."""
    at = torch.arange(extent, device=edges.device).expand(len(edges), -1).contiguous()
    return torch.searchsorted(edges, at, right=True) - 1


def span_bits(start: torch.Tensor, end: torch.Tensor, at: torch.Tensor, bit: torch.Tensor) -> torch.Tensor:
    """Spans [start, end) [n, R], positions at [n, P] -> [n, P] int64, bit r set where span r holds the position
    (a segment between edges lies inside a span or outside it, so its first pixel decides)."""
    inside = (start[:, :, None] <= at[:, None]) & (at[:, None] < end[:, :, None])  # [n, R, P]
    return (inside * bit[:, None]).sum(1)  # distinct bits: the sum is their OR


def lowest_bit(bits: torch.Tensor) -> torch.Tensor:
    """int64 [...] -> int64 [...]: 1 + the index of the lowest set bit, 0 where none is set (the
    exponent of the isolated bit as a float32; bit 63, the sign, has the exponent of 2^63)."""
    isolated = (bits & -bits).float()  # a power of two (or -2^63), exact
    return (((isolated.view(torch.int32) >> 23) & 255).clamp(min=126) - 126).long()


def pixels_in_cells(pixels: torch.Tensor, f_edges: torch.Tensor, t_edges: torch.Tensor) -> torch.Tensor:
    """pixels [n, F, T] bool, cell edges [n, Sf + 1], [n, St + 1] -> [n, Sf, St] true pixels per cell
    (differences of the summed-area table at the cell corners)."""
    table = F.pad(pixels.int().cumsum(2, dtype=torch.int32).cumsum(1, dtype=torch.int32), (1, 0, 1, 0))  # [n, F+1, T+1]
    rows = torch.arange(len(pixels), device=pixels.device)[:, None, None]
    corner = table[rows, f_edges[:, :, None], t_edges[:, None, :]]  # [n, Sf + 1, St + 1]
    return corner[:, 1:, 1:] - corner[:, :-1, 1:] - corner[:, 1:, :-1] + corner[:, :-1, :-1]
