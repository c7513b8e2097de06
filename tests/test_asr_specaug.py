"""s3prl's ASR training schedule: SpecAugment on the features, length buckets; the off-switches."""
import argparse

import numpy as np
import pytest
import torch

from audiorep.evaluate import asr
from audiorep.evaluate.asr_head import AsrConfig, batches, buckets, train_asr
from audiorep.evaluate.asr_specaug import SpecAugConfig, band_masks, heavy, spec_augment, time_warp

from test_asr import TINY, VOCAB, ids, toy_clip, toy_words

NO_WARP = SpecAugConfig(warp_window=0)
ONLY_WARP = SpecAugConfig(freq_masks=0, time_masks=0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def padded(lengths, T=None, D=16, pad=0.0):
    """[B, T, D]: ones inside each length, `pad` past it."""
    T = T or max(lengths)
    valid = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    return torch.where(valid[:, :, None], 1.0, pad).expand(-1, -1, D).clone(), torch.tensor(lengths)


def runs(mask: torch.Tensor) -> int:
    """Number of contiguous True runs in a 1-D bool mask."""
    m = mask.int()
    return int(m[0]) + int((m[1:] - m[:-1] == 1).sum())


def test_masks_stay_inside_lengths_and_padding_is_untouched():
    x, lengths = padded([120, 37, 5, 80], T=130, pad=7.0)
    g = gen()
    for _ in range(50):
        y = spec_augment(x, lengths, NO_WARP, g)
        for i, n in enumerate(lengths.tolist()):
            assert (y[i, n:] == 7.0).all()  # padding never masked
            assert set(y[i, :n].unique().tolist()) <= {0.0, 1.0}
        assert (y == 0).any()


def test_widths_counts_and_start_rule_as_configured():
    g = gen()
    width = torch.stack([band_masks(1, 1, 40, 1000, g)[0].sum() for _ in range(3000)]).float()
    assert width.min() == 0 and width.max() == 39  # widths 0 .. 39
    assert width.mean() == pytest.approx(19.5, abs=0.8)
    two = [runs(m) for m in band_masks(2000, 2, 40, 5000, g)]
    assert max(two) == 2 and np.mean(np.array(two) == 2) > 0.9  # two bands (rarely overlapping or empty)
    # the start is drawn below size - (the batch's widest band): no band starts in the last `widest` dims
    for _ in range(200):
        m = band_masks(8, 4, 50, 64, g)
        starts = [int(np.flatnonzero(np.diff(np.r_[0, r.int().numpy()]) == 1).max()) for r in m if r.any()]
        assert not starts or max(starts) < max(1, 64 - 14)  # widest >= 14 with 32 draws of U{0..49}, p > 0.999
    # the feature masks: the same dims in every valid frame, at most 4 bands; the time masks: at most 2
    x, lengths = padded([400] * 3, D=256)
    y = spec_augment(x, lengths, SpecAugConfig(warp_window=0, time_masks=0), g)
    for i in range(3):
        dims = y[i] == 0  # [T, D]
        assert (dims == dims[0]).all() and runs(dims[0]) <= 4
    y = spec_augment(x, lengths, SpecAugConfig(warp_window=0, freq_masks=0), g)
    assert all(runs((y[i] == 0).all(1)) <= 2 for i in range(3))


def test_time_warp_keeps_length_and_window_zero_is_identity():
    ramp = torch.arange(50.0)[:, None].expand(-1, 3).clone()  # [50, 3]
    g = gen()
    assert torch.equal(time_warp(ramp, 0, g), ramp)
    assert torch.equal(time_warp(ramp[:10], 5, g), ramp[:10])  # n <= 2 W: unchanged
    moved = 0
    for _ in range(30):
        y = time_warp(ramp, 5, g)
        assert y.shape == ramp.shape and (y[1:] - y[:-1] >= -1e-4).all()  # a warp of a ramp stays monotone
        assert torch.equal(y[:, 0], y[:, 1])  # along features nothing is interpolated
        moved += not torch.allclose(y, ramp, atol=1e-4)
    assert moved > 20  # w == c leaves it unchanged, 1 in 10


def test_warp_reads_only_inside_lengths():
    x, lengths = padded([60, 23, 11], T=64)
    y = spec_augment(x, lengths, ONLY_WARP, gen())
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(y[i, :n], torch.ones(n, 16)) and (y[i, n:] == 0).all()  # no zero warped in


def test_same_seed_same_augmentation_and_gradients_flow():
    x = torch.randn(4, 90, 256, requires_grad=True)  # D >> 50: feature masks leave most dims
    lengths = torch.tensor([90, 70, 31, 8])
    a = spec_augment(x, lengths, SpecAugConfig(), gen(3))
    assert torch.equal(a, spec_augment(x, lengths, SpecAugConfig(), gen(3)))
    assert not torch.equal(a, spec_augment(x, lengths, SpecAugConfig(), gen(4)))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_buckets_are_length_runs_covering_every_utterance_once():
    rng = np.random.default_rng(0)
    seconds = rng.uniform(0.5, 15, 103).tolist()
    keep = [i for i in range(103) if i != 7]  # 102 kept
    cfg = AsrConfig(batch_size=8)
    fixed = buckets(seconds, keep, cfg)
    # 12 full runs of 8, each split in two halves of 4 (longest > 0.125 s); the last run of 6 whole
    assert [len(b) for b in fixed] == [4] * 24 + [6]
    flat = [i for b in fixed for i in b]
    assert sorted(flat) == keep
    assert [seconds[i] for i in flat] == sorted((seconds[i] for i in keep), reverse=True)  # longest first
    short = [0.1] * 17
    assert [len(b) for b in buckets(short, list(range(17)), cfg)] == [8, 8]  # not halved; a single leftover dropped
    epochs = batches(keep, seconds, cfg, np.random.default_rng(1))
    first, second = [next(epochs) for _ in fixed], [next(epochs) for _ in fixed]
    assert sorted(map(tuple, first)) == sorted(map(tuple, fixed)) == sorted(map(tuple, second))
    assert first != second  # the buckets' order is shuffled every epoch
    again = batches(keep, seconds, cfg, np.random.default_rng(1))
    assert [next(again) for _ in fixed] == first  # reproducible
    with pytest.raises(ValueError, match="needs every training utterance's duration"):
        next(batches(keep, None, cfg, np.random.default_rng(1)))


def toy_run(cfg: AsrConfig, n: int = 20, with_seconds: bool = False):
    rng = np.random.default_rng(0)
    texts = toy_words(rng, n)
    clips = [toy_clip(t, rng) for t in texts]
    sums = []

    def validate(head):
        sums.append(sum(float(p.detach().double().sum()) for p in head.parameters()))
        return -len(sums)

    seconds = [len(c) / 100 for c in clips] if with_seconds else None
    trained = train_asr(lambda i: clips[i], [len(c) for c in clips], [ids(t) for t in texts],
                        [f"c{i}" for i in range(n)], len(VOCAB), validate, cfg, seconds)
    return [h[1] for h in trained.history], sums


def test_switched_off_training_is_the_earlier_training(one_thread):
    """The numbers of audiorep before SpecAugment and bucketing (commit b007c05, same toy run)."""
    losses, sums = toy_run(AsrConfig(**{**TINY, "lr": 3e-2}, steps=6, eval_every=2, specaug=None, bucketing=False))
    assert losses == pytest.approx([2.0502291917800903, 2.0208460092544556, 1.7425655126571655], rel=1e-5)
    assert sums == pytest.approx([41.96896250412101, 16.975945908372523, 22.929894071712624], rel=1e-5)
    on = toy_run(AsrConfig(**{**TINY, "lr": 3e-2}, steps=6, eval_every=2), with_seconds=True)
    assert on[0] != pytest.approx(losses, rel=1e-5)  # the defaults change training


def test_flags_reach_the_config_and_the_result_settings():
    p = argparse.ArgumentParser()
    asr.add_arguments(p)
    common = dict(seed=0, device="cpu", bootstrap=0)
    on = asr.run_from_args(argparse.Namespace(**vars(p.parse_args([])), **common))
    off = asr.run_from_args(argparse.Namespace(**vars(p.parse_args(["--asr-no-specaug", "--asr-no-bucketing"])),
                                               **common))
    assert on.head.specaug == SpecAugConfig() and on.head.bucketing
    assert off.head.specaug is None and not off.head.bucketing
    with pytest.raises(ValueError, match="SpecAugConfig.time_masks=-1"):
        SpecAugConfig(time_masks=-1)
    scaled = asr.run_from_args(argparse.Namespace(**vars(p.parse_args(["--asr-specaug-max", "5", "8"])), **common))
    assert scaled.head.specaug == SpecAugConfig(freq_mask_max=5, time_mask_max=8)
    with pytest.raises(ValueError, match="--asr-specaug-max -1 8"):
        asr.run_from_args(argparse.Namespace(**vars(p.parse_args(["--asr-specaug-max", "-1", "8"])), **common))


def test_widths_that_hide_most_features_are_named():
    """s3prl's widths on SUPERB-size features pass quietly; on 128-dim features or short clips they are named."""
    assert heavy(SpecAugConfig(), 768, 600) is None
    why = heavy(SpecAugConfig(), 128, 600)
    assert why is not None and "77% of the 128 feature dims" in why and "of the 600 frames" not in why
    assert "of the 40 frames" in heavy(SpecAugConfig(), 768, 40)
    assert heavy(SpecAugConfig(freq_mask_max=5, time_mask_max=8), 64, 40) is None


def test_training_with_heavy_masks_warns(one_thread, capsys):
    toy_run(AsrConfig(**{**TINY, "lr": 3e-2}, steps=2, eval_every=2), with_seconds=True)
    assert "warning: SpecAugment's widths" in capsys.readouterr().err

