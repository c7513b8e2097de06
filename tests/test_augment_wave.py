"""Waveform augmentations and EAT mixes: each one's defining property, on tiny batches."""
import math

import pytest
import torch

from audiorep.augment import (MIXES, NOISES, SIGNAL_AUGMENTS, WaveAugmentConfig, energy_mixup, freq_mix, mixed_targets,
                              phase_mix, time_mix, wave_augment)
from audiorep.augment import wave as W

pytest.importorskip("julius")

SR = 22050


def tone(freqs, S=SR, amps=None):
    """[1, S]: a sum of sines at `freqs` Hz."""
    t = torch.arange(S, dtype=torch.float64) / SR
    amps = amps or [1.0] * len(freqs)
    return sum(a * torch.sin(2 * math.pi * f * t) for f, a in zip(freqs, amps))[None].float()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def long_term_db(x, n_fft=1024):
    """[B, F] dB: RMS magnitude of each STFT bin over time."""
    return 20 * torch.log10(W.stft(x, n_fft).abs().pow(2).mean(-1).sqrt() + 1e-3)


@pytest.mark.parametrize("kind, slope", [("white", 0), ("pink", -3), ("red", -6), ("blue", 3), ("violet", 6)])
def test_noise_colour_has_its_spectral_slope(one_thread, kind, slope):
    S = 2 ** 15
    w = W.unit_noise(torch.zeros(16, S), kind, SR, gen())
    power = torch.fft.rfft(w.double()).abs().pow(2).mean(0)  # [S // 2 + 1]
    k = torch.arange(len(power), dtype=torch.float64)
    band = (k >= 100) & (k < 12000)  # ~70 Hz to ~8 kHz
    x, y = torch.log2(k[band]), 10 * torch.log10(power[band])
    fit = ((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).pow(2).sum()  # dB per octave
    assert abs(float(fit) - slope * 10 * math.log10(2) / 3) < 0.3
    assert torch.allclose(w.mean(1), torch.zeros(16), atol=1e-5) and torch.allclose(w.std(1), torch.ones(16))


@pytest.mark.parametrize("kind", ["white", "pink", "red", "blue", "violet", "uniform"])
def test_additive_noise_sits_at_the_drawn_snr(one_thread, kind):
    tol = 0.15 if kind == "uniform" else 1e-3  # uniform noise has unit RMS in expectation only
    x = torch.randn(4, 8000) * torch.tensor([[0.01], [0.1], [0.5], [1.0]])
    y = W.add_noise(x, kind, SR, snr_db=(20.0, 40.0), generator=gen())
    snr = 20 * torch.log10(x.pow(2).mean(1).sqrt() / (y - x).pow(2).mean(1).sqrt())
    assert ((snr > 20 - tol) & (snr < 40 + tol)).all() and snr.std() > 0.1
    fixed = W.add_noise(x, kind, SR, snr_db=(30.0, 30.0), generator=gen())
    assert torch.allclose(20 * torch.log10(x.pow(2).mean(1).sqrt() / (fixed - x).pow(2).mean(1).sqrt()),
                          torch.full((4,), 30.0), atol=tol)


def test_uniform_noise_is_bounded_and_hum_is_low(one_thread):
    u = W.unit_noise(torch.zeros(2, 20000), "uniform", SR, gen())
    assert u.abs().max() <= math.sqrt(3) and u.abs().max() > 1.7
    hum = W.unit_noise(torch.zeros(2, 2 * SR), "sine", SR, gen())
    power = torch.fft.rfft(hum).abs().pow(2)  # 0.5 Hz bins
    assert (power[:, :140].sum(1) / power.sum(1) > 0.99).all()  # below 70 Hz


def test_silence_gets_no_noise(one_thread):
    x = torch.zeros(2, 4000)
    for kind in W.ADDITIVE_NOISES:
        assert torch.equal(W.add_noise(x, kind, SR, generator=gen()), x)


@pytest.mark.parametrize("apply", [
    lambda x: W.gain(x, 1.0, 1.0, gen()),
    lambda x: W.segment_gain(x, 500, 1.0, 1.0, gen()),
    lambda x: W.delay(x, torch.zeros(x.shape[0]), cyclic=False),
    lambda x: W.delay(x, torch.zeros(x.shape[0]), cyclic=True),
    lambda x: W.time_mask(x, 0, gen()),
    lambda x: W.resample(x, 1.0),
    lambda x: energy_mixup(x, lam=torch.ones(3), generator=gen())[0],
    lambda x: time_mix(x, lam=torch.ones(3), generator=gen())[0],
], ids=["gain", "segment_gain", "shift", "cyclic_shift", "mask", "resample", "mixup", "timemix"])
def test_identity_at_zero_strength(one_thread, apply):
    x = torch.randn(3, 3000)
    assert torch.equal(apply(x), x)


@pytest.mark.parametrize("apply", [
    lambda x: freq_mix(x, 512, lam=torch.ones(3), generator=gen())[0],
    lambda x: phase_mix(x, 512, lam=torch.ones(3), generator=gen())[0],
    lambda x: W.phase_noise(x, 512, 0.0, 0.0, gen()),
], ids=["freqmix", "phasemix", "phase_noise"])
def test_spectral_augments_at_zero_strength_are_the_stft_round_trip(one_thread, apply):
    x = torch.randn(3, 3000)
    assert torch.allclose(apply(x), x, atol=1e-5)


def test_pipeline_with_nothing_enabled_is_identity(one_thread):
    cfg = WaveAugmentConfig(signal=(), noises=(), mixes=(), resample_p=0.0)
    x, target = torch.randn(2, 3000), torch.eye(2)
    y, t, mixed = wave_augment(x, target, cfg, SR, gen())
    assert torch.equal(y, x) and torch.equal(t, target) and not mixed


def test_gains_stay_in_range_and_segments_have_their_length(one_thread):
    x = torch.ones(64, 2000)
    g = W.gain(x, 0.5, 1.3, gen())[:, 0]
    assert ((g >= 0.5) & (g < 1.3)).all()
    y = W.segment_gain(x, 300, 0.5, 1.3, gen())
    changed = y != 1
    assert (changed.sum(1) == 300).all()
    starts = changed.float().argmax(1)
    assert all(changed[b, s:s + 300].all() for b, s in enumerate(starts.tolist()))
    assert starts.max() > 1000  # the segment may start anywhere, not only early in the clip
    masked = W.time_mask(x, 200, gen())
    assert ((masked.abs() < 1e-4).sum(1) == 200).all()


def test_linear_shift_fills_zeros_and_cyclic_shift_rolls(one_thread):
    x = torch.randn(2, 1000)
    y = W.delay(x, torch.tensor([30.0, -20.0]), cyclic=False)
    assert torch.equal(y[0, 30:], x[0, :-30]) and (y[0, :30] == 0).all()
    assert torch.equal(y[1, :-20], x[1, 20:]) and (y[1, -20:] == 0).all()
    rolled = W.cyclic_shift(x, gen())
    assert all(any(torch.equal(rolled[b], x[b].roll(d)) for d in range(1000)) for b in range(2))
    shifted = W.time_shift(x, 100, gen())
    assert shifted.shape == x.shape and not torch.equal(shifted, x)


def test_fractional_delay_of_a_periodic_tone(one_thread):
    S = 1000
    n = torch.arange(S, dtype=torch.float64)
    x = torch.sin(2 * math.pi * 7 * n / S)[None].float()  # whole cycles: the circular delay is exact
    y = W.delay(x, torch.tensor([12.25]), cyclic=True)
    assert torch.allclose(y[0], torch.sin(2 * math.pi * 7 * (n - 12.25) / S).float(), atol=1e-5)


def test_filters_pass_and_stop(one_thread):
    low, high = tone([0.02 * SR], 4000), tone([0.3 * SR], 4000)
    x = torch.cat([low, high])
    lp = W.lowpass(x, 0.1, 0.1, gen())
    hp = W.highpass(x, 0.1, 0.1, gen())
    rms = lambda y: y[:, 500:-500].pow(2).mean(1).sqrt() / math.sqrt(0.5)  # away from the edges
    assert rms(lp)[0] > 0.95 and rms(lp)[1] < 0.02
    assert rms(hp)[0] < 0.02 and rms(hp)[1] > 0.95


def test_quantization_levels(one_thread):
    x = torch.rand(4, 5000) * 2 - 1
    q = W.quantize(x, 4)
    assert torch.equal(q * 8, (q * 8).round()) and len(q.unique()) <= 17 and (q - x).abs().max() <= 1 / 16 + 1e-6
    m = W.mu_law(x, 256)
    codes = W.mu_law(torch.linspace(-1, 1, 20001)[None], 256).unique()
    assert len(codes) == 256 and torch.isclose(m.reshape(-1, 1), codes[None]).any(1).all()
    quiet = x * 0.01  # mu-law is finer near zero than an 8-bit linear grid
    assert (W.mu_law(quiet) - quiet).abs().max() < (W.quantize(quiet, 8) - quiet).abs().max() / 4


def test_polarity_inverts(one_thread):
    x = torch.randn(2, 100)
    assert torch.equal(SIGNAL_AUGMENTS["polarity"](x, WaveAugmentConfig(), SR, None), -x)
    y, _, _ = wave_augment(x, None, WaveAugmentConfig(signal=("polarity",), noises=(), mixes=(), p=1.0,
                                                       resample_p=0.0), SR, gen())
    assert torch.equal(y, -x)


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.2])
def test_resample_keeps_length_and_scales_pitch(one_thread, factor):
    x = tone([441.0])
    y = W.resample(x, factor)
    assert y.shape == x.shape
    part = y[0, : int(SR * min(factor, 1.0)) - 200]
    peak = torch.fft.rfft(part * torch.hann_window(len(part))).abs().argmax() * SR / len(part)
    assert abs(float(peak) - 441.0 / factor) < 3
    if factor < 1:
        assert (y[0, int(SR * factor) + 1:] == 0).all()


def test_phase_noise_keeps_the_magnitudes(one_thread):
    x = torch.randn(2, 6000)
    y = W.phase_noise(x, 512, 0.01, 0.02, gen())
    assert not torch.allclose(y, x, atol=1e-5)
    assert (long_term_db(y, 512) - long_term_db(x, 512)).abs().max() < 0.1


def test_energy_mixup_sets_the_energy_ratio(one_thread):
    a, b = tone([440.0], amps=[0.5]), tone([1000.0], amps=[0.02])  # whole cycles: orthogonal
    x, lam = torch.cat([a, b]), torch.tensor([0.7, 0.2])
    y, partner, weight = energy_mixup(x, partner=torch.tensor([1, 0]), lam=lam)
    target = mixed_targets(torch.eye(2), partner, weight)
    for row, own, other in ((0, a, b), (1, b, a)):
        ca = float((y[row] * own[0]).sum() / own[0].pow(2).sum())  # weight on the clip's own signal
        cb = float((y[row] * other[0]).sum() / other[0].pow(2).sum())
        ratio = ca * own.pow(2).mean().sqrt() / (cb * other.pow(2).mean().sqrt())
        assert ratio == pytest.approx(float(lam[row] / (1 - lam[row])), rel=1e-3)
        assert ca ** 2 + cb ** 2 == pytest.approx(1.0, rel=1e-3)
        assert float(target[row, row]) == pytest.approx(ca / (ca + cb), rel=1e-3)


def test_time_mix_takes_one_end_from_the_partner(one_thread):
    x = torch.stack([torch.full((1000,), 1.0), torch.full((1000,), 2.0)])
    lam = torch.tensor([0.7, 0.55])
    y, partner, weight = time_mix(x, partner=torch.tensor([1, 0]), lam=lam, generator=gen())
    target = mixed_targets(torch.eye(2), partner, weight)
    for row, n in ((0, 300), (1, 450)):
        taken = y[row] != x[row]
        assert taken.sum() == n and (taken[:n].all() or taken[-n:].all())
        assert float(target[row, row]) == pytest.approx(float(lam[row]))


def test_freq_mix_keeps_each_clips_band(one_thread):
    n_fft, bins = 1024, 513
    step = SR / n_fft
    own_bins, partner_bins = list(range(16, 500, 32)), list(range(32, 500, 32))
    x = torch.cat([tone([k * step for k in own_bins]), tone([k * step for k in partner_bins])])
    lam = torch.tensor([0.7, 0.6])
    y, partner, weight = freq_mix(x, n_fft, partner=torch.tensor([1, 0]), lam=lam, generator=gen())
    target = mixed_targets(torch.eye(2), partner, weight)
    level = long_term_db(y, n_fft)  # [2, F]
    for row, mine, theirs in ((0, own_bins, partner_bins), (1, partner_bins, own_bins)):
        keep = int(float(lam[row]) * bins)
        fits = []
        for own_band in (range(0, keep), range(bins - keep, bins)):  # the partner's band on top, or at the bottom
            far = [k for k in mine + theirs if min(abs(k - own_band.start), abs(k - own_band.stop)) > 2]
            present = [k in own_band if k in mine else k not in own_band for k in far]
            fits.append(all((level[row, k] > level[row].max() - 20) == p for k, p in zip(far, present)))
        assert sum(fits) == 1
        assert float(target[row, row]) == pytest.approx(float(lam[row]))


def test_phase_mix_keeps_the_first_clips_magnitude(one_thread):
    t = torch.arange(SR) / SR
    first = W.unit_noise(torch.zeros(1, SR), "pink", SR, gen())
    second = (torch.sin(2 * math.pi * 3000 * t) + 0.3 * torch.sin(2 * math.pi * 440 * t * (1 + t)))[None]
    x, lam = torch.cat([first, second]), torch.tensor([0.3, 0.7])
    y, partner, weight = phase_mix(x, 1024, partner=torch.tensor([1, 0]), lam=lam)
    target = mixed_targets(torch.eye(2), partner, weight)
    db_y, db_x = long_term_db(y), long_term_db(x)
    for row in (0, 1):
        assert (db_y[row] - db_x[row]).abs().median() < 6
        assert (db_y[row] - db_x[1 - row]).abs().median() > 20
    assert torch.allclose(target, torch.tensor([[0.65, 0.35], [0.15, 0.85]]))


@pytest.mark.parametrize("name", sorted(MIXES))
def test_mixed_label_weights_sum_to_one(one_thread, name):
    cfg = WaveAugmentConfig(signal=(), noises=(), mixes=(name,), resample_p=0.0, stft_sizes=(256,))
    y, target, mixed = wave_augment(torch.randn(6, 3000), torch.eye(6)[[0, 1, 2, 3, 4, 4]], cfg, SR, gen())
    assert mixed and y.shape == (6, 3000)
    assert torch.allclose(target.sum(1), torch.ones(6)) and (target >= 0).all() and (target.max(1).values < 1).any()


def test_every_named_augment_runs_through_the_pipeline(one_thread):
    x, target = torch.randn(4, 4000) * 0.1, torch.eye(4)
    for name in SIGNAL_AUGMENTS:
        y, _, _ = wave_augment(x, target, WaveAugmentConfig(signal=(name,), noises=(), mixes=(), p=1.0), SR, gen())
        assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(y, x), name
    for name in NOISES:
        y, _, _ = wave_augment(x, target, WaveAugmentConfig(signal=(), noises=(name,), mixes=(), p=1.0,
                                                            resample_p=0.0, stft_sizes=(256,)), SR, gen())
        assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(y, x), name


def test_deterministic_for_a_seed(one_thread):
    x, target = torch.randn(4, 6000), torch.eye(4)
    cfg = WaveAugmentConfig(stft_sizes=(256, 512))
    runs = [wave_augment(x, target, cfg, SR, gen(seed)) for seed in (1, 1, 2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])
    torch.manual_seed(5)
    a = wave_augment(x, target, cfg, SR)[0]
    torch.manual_seed(5)
    assert torch.equal(a, wave_augment(x, target, cfg, SR)[0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_device_and_dtype_kept(one_thread, dtype):
    x = torch.randn(3, 4000).to(dtype)
    y, target, _ = wave_augment(x, torch.eye(3), WaveAugmentConfig(stft_sizes=(256,)), SR, gen())
    assert y.dtype == dtype and y.device == x.device and y.shape == x.shape and target.shape == (3, 3)


def test_bad_input_is_refused_clearly(one_thread):
    with pytest.raises(ValueError, match="WaveAugmentConfig.mixes.*unknown"):
        WaveAugmentConfig(mixes=("cutmix",))
    with pytest.raises(ValueError, match="WaveAugmentConfig.p="):
        WaveAugmentConfig(p=1.5)
    with pytest.raises(ValueError, match="needs a target"):
        wave_augment(torch.randn(2, 3000), None, WaveAugmentConfig(), SR)
    bad = torch.randn(3, 3000)
    bad[1, 5] = float("nan")
    with pytest.raises(ValueError, match=r"clips \[1\].*NaN"):
        wave_augment(bad, torch.eye(3), WaveAugmentConfig(), SR)
    with pytest.raises(ValueError, match="stft_sizes"):
        wave_augment(torch.randn(2, 200), torch.eye(2), WaveAugmentConfig(signal=(), noises=(), mixes=("freqmix",)), SR)
    for shape in ((2, 1, 300), (2, 1)):
        with pytest.raises(ValueError, match=r"\[B, S\]"):
            wave_augment(torch.randn(shape), torch.eye(2), WaveAugmentConfig(), SR)


def test_union_targets_are_the_releases_rule():
    """Own labels always; the partner's unless its share 1 - w is at most 0.1 (`lam < 0.9`)."""
    target = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])  # the last one multi-label
    partner, weight = torch.tensor([1, 2, 0, 2]), torch.tensor([0.5, 0.9, 0.05, 0.89])
    union = mixed_targets(target, partner, weight, "union")
    assert torch.equal(union, torch.tensor([[1.0, 1, 0], [0, 1, 0], [1, 0, 1], [1, 1, 1]]))
    soft = mixed_targets(target, partner, weight)
    torch.testing.assert_close(soft[0], torch.tensor([0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="mix_targets='max'"):
        WaveAugmentConfig(mix_targets="max")


def test_sine_hum_snr_is_drawn_from_30_to_35_db(one_thread):
    x = torch.randn(200, SR)
    cfg = WaveAugmentConfig(signal=(), noises=("sine",), mixes=(), p=1.0, resample_p=0.0)
    y, _, _ = wave_augment(x, None, cfg, SR, gen())
    snr = 10 * torch.log10(x.pow(2).mean(1) / (y - x).pow(2).mean(1))  # [200] dB (a hum of a few Hz is not unit RMS)
    low, high = snr.quantile(torch.tensor([0.1, 0.9]))
    assert 29.5 < low < 31.5 and 33.5 < high < 35.5  # spread over U[30, 35), not always 30
    white = WaveAugmentConfig(signal=(), noises=("white",), mixes=(), p=1.0, resample_p=0.0)
    y, _, _ = wave_augment(x, None, white, SR, gen())
    torch.testing.assert_close(10 * torch.log10(x.pow(2).mean(1) / (y - x).pow(2).mean(1)),
                               torch.full((200,), 30.0), atol=0.05, rtol=0)
