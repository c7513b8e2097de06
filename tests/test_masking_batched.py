"""Per-clip loops of the training step made batched, against the loops they replaced (kept
here as references): masking.gmml_corrupt (ASiT's corruption, all crops at once on the input's
device) draws masks from the loop's law, and the same masks where the two draw the same random
numbers in the same order; CodecMAE.frame_padding gives the loop's frame counts."""
import math

import numpy as np
import pytest
import torch

from audiorep.masking import gmml_corrupt

pytestmark = pytest.mark.usefixtures("one_thread")


def loop_corrupt(x: torch.Tensor, ratio: float = 0.7, alien_prob: float = 0.5, alien_ratio: float = 0.3,
                 max_block: float = 0.3, align: int = 1, alien_self: bool = False,
                 generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: audiorep 0.x's gmml_corrupt (one crop at a time, rectangles painted one
    by one through a numpy view until their union reaches the crop's share, as the release)."""
    B, Fq, T = x.shape
    alien = torch.rand(B, generator=generator) < alien_prob  # [B] this clip's kind
    top = torch.where(alien, alien_ratio, ratio)  # [B]
    low = top.clamp(max=0.5)
    target = ((torch.rand(B, generator=generator) * (top - low) + low) * (Fq * T)).tolist()
    if alien_self:
        donor = torch.randint(0, B, (B,), generator=generator)
    else:
        donor = (torch.arange(B) + torch.randint(1, max(B, 2), (B,), generator=generator)) % B
    mask = torch.zeros(B, Fq, T, dtype=torch.bool)
    pixels = mask.numpy()
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
    alien = alien[:, None, None]  # [B, 1, 1]
    corrupted = torch.where(mask & alien, x[donor], x).masked_fill(mask & ~alien, 0.0)
    return corrupted, mask


# ------------------------------------------------------------------ the same numbers


@pytest.mark.parametrize("shape, align, max_block", [((1, 24, 80), 1, 0.3), ((1, 128, 592), 16, 0.3),
                                                     ((1, 17, 45), 3, 0.3), ((1, 32, 64), 1, 0.05)])
@pytest.mark.parametrize("kind", [dict(alien_prob=0.0), dict(alien_prob=1.0, alien_self=True)])
def test_one_crop_is_the_loops_for_a_fixed_generator(shape, align, max_block, kind):
    """With one crop both draw the same numbers in the same order: its kind, share and donor,
    then rectangles 64 at a time (64 corners t0, 64 f0, 64 lengths, 64 heights; max_block 0.05
    needs several such rounds), so they give the same mask and corruption. With more crops
    they cannot: the loop draws crop 0's rectangles, then crop 1's, while the batched version
    draws a round of rectangles for every unfinished crop at once ([B, 64] per field), so the
    same generator hands the numbers to other rectangles (the law is the same, tested below)."""
    for seed in range(6):
        x = torch.randn(*shape)
        want = loop_corrupt(x, align=align, max_block=max_block, generator=torch.Generator().manual_seed(seed), **kind)
        got = gmml_corrupt(x, align=align, max_block=max_block, generator=torch.Generator().manual_seed(seed), **kind)
        assert torch.equal(got[1], want[1]), f"seed {seed}: masks differ"
        assert torch.equal(got[0], want[0]), f"seed {seed}: corruptions differ"


# -------------------------------------------------------------------- the same law

BUCKETS = (1, 2, 3, 5, 9, 17)  # run lengths [1], [2], [3, 4], [5, 8], [9, 16], [17, ...)
Z = 4.5  # |difference of means| / its standard error: p = 7e-6 per comparison for equal laws


def run_lengths(mask: np.ndarray) -> np.ndarray:
    """[F, T] bool -> lengths of the runs of True along each row."""
    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8).ravel()  # a False between rows
    edges = np.diff(padded)
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def crop_features(x: torch.Tensor, corrupted: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    """Per crop: its kind (alien: the corrupted pixels hold another clip's value, x being clip
    i + 1 everywhere), the masked share, mean run lengths along time and frequency, and the
    share of time runs in each BUCKETS range (block sizes)."""
    rows = []
    for i in range(len(mask)):
        values = corrupted[i][mask[i]].unique()
        assert len(values) == 1, f"crop {i}: zeroed or pasted from one donor, never both"
        m = mask[i].numpy()
        along_t, along_f = run_lengths(m), run_lengths(m.T)
        buckets = np.histogram(along_t, bins=[*BUCKETS, m.shape[1] + 1])[0] / len(along_t)
        rows.append({"alien": float(values.item() != 0), "share": float(m.mean()), "run_t": along_t.mean(),
                     "run_f": along_f.mean(), **{f"runs_t>={b}": float(v) for b, v in zip(BUCKETS, buckets)}})
        assert values.item() != x[i, 0, 0], f"crop {i}: an alien crop's pixels come from another clip"
    return rows


def draw(corrupt, shape: tuple[int, int, int], batches: int, seed: int, **kwargs) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    x = (1.0 + torch.arange(float(shape[0])))[:, None, None].expand(shape)
    return [row for _ in range(batches) for row in crop_features(x, *corrupt(x, generator=generator, **kwargs))]


def z_mean(a: np.ndarray, b: np.ndarray) -> float:
    return ratio(abs(a.mean() - b.mean()), math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))


def z_spread(a: np.ndarray, b: np.ndarray) -> float:
    """Difference of variances / its standard error (var of a sample variance: (m4 - s^4) / n)."""
    def se2(v):
        return (((v - v.mean()) ** 4).mean() - v.var() ** 2) / len(v)
    return ratio(abs(a.var(ddof=1) - b.var(ddof=1)), math.sqrt(se2(a) + se2(b)))


def ratio(difference: float, error: float) -> float:
    """difference / error; a statistic constant in both samples is equal (0) or not (inf)."""
    return difference / error if error > 0 else (0.0 if difference == 0 else math.inf)


@pytest.mark.parametrize("align", [1, 4])
def test_batched_corruption_draws_from_the_loops_law(align):
    """1536 crops of [24, 80] from each (24 batches of 64, other seeds): the alien share, the
    masked share per kind (mean and spread) and the run lengths of the masked pixels (mean
    along time and frequency, histogram of time runs) agree within Z standard errors; crops
    are independent, so the errors come from the per-crop spread. 21 comparisons at Z = 4.5
    all pass for one law with probability > 0.999; one rectangle too many per crop, sides
    drawn from [align, 0.25 x) instead of 0.3 x, or zero shares from U(0.47, 0.7) instead of
    U(0.5, 0.7) each fail at least one (checked by hand)."""
    shape, batches = (64, 24, 80), 24
    ref = draw(loop_corrupt, shape, batches, seed=0, align=align)
    new = draw(gmml_corrupt, shape, batches, seed=1, align=align)
    column = lambda rows, key, where=lambda r: True: np.array([r[key] for r in rows if where(r)])  # noqa: E731
    failures = []
    for key in ref[0]:
        kinds = ((None, lambda r: True),) if key == "alien" else (("zeros", lambda r: not r["alien"]),
                                                                  ("alien", lambda r: r["alien"]))
        for kind, where in kinds:
            a, b = column(ref, key, where), column(new, key, where)
            tests = (("mean", z_mean),) + ((("spread", z_spread),) if key == "share" else ())
            for stat, fn in tests:
                z = fn(a, b)
                if not z < Z:
                    failures.append(f"{key} ({kind}) {stat}: loop {a.mean():.4f} +- {a.std():.4f}, "
                                    f"batched {b.mean():.4f} +- {b.std():.4f}, z = {z:.1f}")
    assert not failures, "\n".join(failures)


def test_aligned_corruption_paints_whole_blocks():
    _, mask = gmml_corrupt(torch.randn(16, 32, 64), align=8, alien_prob=0.0, generator=torch.Generator().manual_seed(0))
    blocks = mask.unflatten(1, (4, 8)).unflatten(3, (8, 8)).float().mean((2, 4))  # [B, 4, 8] share of each 8x8 block
    assert ((blocks == 0) | (blocks == 1)).all() and mask.float().mean() > 0.4


def test_each_crop_reaches_its_share_by_its_last_rectangle():
    """The union reaches the share and stops there: at most one rectangle (0.3 x 0.3 of the
    crop) beyond the top of the share's range, for either kind."""
    generator = torch.Generator().manual_seed(0)
    zeros, alien = (gmml_corrupt(torch.randn(64, 40, 100), alien_prob=p, generator=generator)[1].float().mean((1, 2))
                    for p in (0.0, 1.0))
    assert (zeros >= 0.5).all() and (zeros <= 0.7 + 0.09).all() and zeros.std() > 0.03
    assert (alien >= 0.3).all() and (alien <= 0.3 + 0.09).all()


# ------------------------------------------------------------- EnCodecMAE frame padding


def loop_frame_padding(objective, batch: dict, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: CodecMAE.frame_padding as a loop over the clips (audiorep 0.x)."""
    frontend = objective.encoder.frontend
    lengths = torch.tensor([frontend.num_frames(max(int(n), frontend.min_samples)) for n in batch["length"]])
    lengths = lengths.clamp(max=n_frames)
    return lengths, torch.arange(n_frames)[None] >= lengths[:, None]


@pytest.mark.parametrize("preset", ["encodecmae-tiny", "passt-tiny", "eat-s"])
def test_frame_padding_is_the_loops(preset):
    """Random lengths (below the shortest input, at and around every frame edge, past the crop)
    give the loop's frame counts and padding, for each kind of frontend under the frame
    backbone (fbank: EnCodecMAE's; passt_mel: its shortest input already gives several
    frames; waveform: a frame per sample)."""
    import dataclasses

    from audiorep import presets
    from audiorep.encoder import Encoder, EncoderConfig
    from audiorep.objectives.codec_mae import CodecMAE, CodecMAEConfig

    frontend = presets.get(preset).frontend
    channels = Encoder(presets.get(preset)).frontend.features
    backbone = dataclasses.replace(presets.get("encodecmae-tiny").backbone, in_features=channels)
    objective = CodecMAE(Encoder(EncoderConfig(name="padding", frontend=frontend, backbone=backbone)),
                         CodecMAEConfig(targets="fbank_kmeans", kmeans_k=8, decoder_heads=2, decoder_ff_dim=32))
    fe, n_frames = objective.encoder.frontend, 50
    edges = torch.tensor([fe.samples_for(k) for k in range(1, n_frames + 2)])
    drawn = torch.randint(0, fe.samples_for(n_frames) + 200, (200,), generator=torch.Generator().manual_seed(0))
    lengths = torch.cat([drawn, edges - 1, edges, edges + 1, torch.tensor([0, 1, fe.min_samples - 1, fe.min_samples])])
    lengths = lengths.clamp(min=0)
    batch = {"wave": torch.zeros(len(lengths), 1), "length": lengths}
    got, want = objective.frame_padding(batch, n_frames), loop_frame_padding(objective, batch, n_frames)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert len(set(want[0].tolist())) > 40  # most frame counts occur
    everything = objective.frame_padding({"wave": batch["wave"]}, n_frames)
    assert torch.equal(everything[0], torch.full((len(lengths),), n_frames)) and everything[1] is None
