import dataclasses
import time

import pytest
import torch

from audiorep.frontends import Fbank, FbankConfig, PasstMel, PasstMelConfig, build_frontend
from conftest import load_fixture

FLOOR = -15.942385  # log(float32 eps): Kaldi's value for mel bins that contain no FFT bin
FBANK_ATOL = 2e-3  # parity/README.md "Tolerances"
PASST_ATOL = 2e-4
BASIS_ATOL = 1e-4  # float32 rounding of log() in the slopes; observed 1.8e-5

AUDIOMAE = FbankConfig()
ASIT = FbankConfig(sample_rate=32000)
ENCODECMAE = FbankConfig(sample_rate=24000, n_mels=256, frame_length_ms=26.56, frame_shift_ms=13.28,
                         remove_mean=False, mean=-6.12, scale=4.82)
FBANKS = {  # fixture -> (config, bins that are always floored, per parity/README.md)
    "fbank_audiomae": (AUDIOMAE, [3]),
    "fbank_asit": (ASIT, []),
    "fbank_encodecmae": (ENCODECMAE, [1, 4, 9, 14, 19]),
}
FRONTENDS = {"passt": PasstMel(), "audiomae": Fbank(AUDIOMAE), "asit": Fbank(ASIT), "encodecmae": Fbank(ENCODECMAE)}


def raw(cfg, remove_mean=False):
    """The un-normalized log fbank of a preset."""
    return Fbank(dataclasses.replace(cfg, remove_mean=remove_mean, mean=0.0, scale=1.0))


def maxdiff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_passt_parity():
    _, inp, out, _ = load_fixture("passt_frontend")
    mel = PasstMel()
    d_basis = maxdiff(mel.mel_basis, out["mel_basis_padded"])
    d_logmel = maxdiff(mel(inp["waveform"]), out["logmel"])
    print(f"\nparity passt_frontend: mel_basis {d_basis:.2e}  logmel {d_logmel:.2e}")
    assert (mel.mel_basis == 0).equal(out["mel_basis_padded"] == 0)
    assert d_basis < BASIS_ATOL and d_logmel < PASST_ATOL


@pytest.mark.parametrize("name", list(FBANKS))
def test_fbank_parity(name):
    _, inp, out, _ = load_fixture(name)
    cfg, floored = FBANKS[name]
    checks = {  # fixture output prefix -> our module
        "fbank": raw(cfg),
        "fbank_meanremoved": raw(cfg, remove_mean=True),
        "fbank_meanremoved_norm": Fbank(cfg),
        "wav_features": Fbank(cfg),
    }
    diffs = {}
    for i in range(2):
        for prefix, module in checks.items():
            ref = out.get(f"{prefix}_{i}")
            if ref is None:
                continue
            ours = module(inp[f"wave_{i}"])[0].T  # [T, F] as stored
            diffs[prefix] = max(diffs.get(prefix, 0.0), maxdiff(ours, ref))
            assert diffs[prefix] < FBANK_ATOL, (prefix, i, diffs[prefix])
        ref = out[f"fbank_{i}"]
        ours = raw(cfg)(inp[f"wave_{i}"])[0].T
        assert (ref == FLOOR).all(0).nonzero().flatten().tolist() == floored
        assert (ours[:, floored] == ref[:, floored]).all()  # exactly the float32 floor
        loud = ref > -10
        diffs["fbank log>-10"] = max(diffs.get("fbank log>-10", 0.0), (ours - ref)[loud].abs().max().item())
    print(f"\nparity {name}: " + "  ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


@pytest.mark.parametrize("name", list(FRONTENDS))
def test_padded_batch_matches_single(name):
    frontend = FRONTENDS[name]
    g = torch.Generator().manual_seed(0)
    long, short = torch.randn(2 * frontend.sample_rate // 5, generator=g), torch.randn(frontend.sample_rate // 7, generator=g)
    batch = torch.stack([long, torch.nn.functional.pad(short, (0, len(long) - len(short)))])
    out = frontend(batch)  # [2, F, T]
    assert torch.allclose(out[0], frontend(long[None])[0], atol=1e-5)
    alone = frontend(short[None])[0]
    if isinstance(frontend, PasstMel):  # the centred STFT reflects at the end: keep frames that never reach it
        cfg = frontend.cfg
        valid = sum(t * cfg.hop_length + cfg.n_fft // 2 <= len(short) - 2 for t in range(alone.shape[-1]))
    else:  # snip_edges: every frame lies inside the signal
        valid = alone.shape[-1]
    assert valid > 0
    assert torch.allclose(out[1, :, :valid], alone[:, :valid], atol=1e-4)


@pytest.mark.parametrize("name", list(FRONTENDS))
def test_num_frames_and_short_inputs(name):
    frontend = FRONTENDS[name]
    n = frontend.min_samples
    for length in [n, n + 1, n + 317, n + 318, n + 320, 3 * n + 5, frontend.sample_rate]:
        out = frontend(torch.randn(2, length))
        assert out.shape == (2, frontend.features, frontend.num_frames(length))
    assert frontend.num_frames(n) == 1 or isinstance(frontend, PasstMel)
    for length in [0, 1, n - 1]:
        with pytest.raises(ValueError, match="at least"):
            frontend.num_frames(length)
        with pytest.raises(ValueError, match="at least"):
            frontend(torch.randn(1, length))
    with pytest.raises(ValueError, match="batch, samples"):
        frontend(torch.randn(frontend.sample_rate))


def test_frame_rates():
    assert PasstMel().num_frames(320000) == 1000  # hear21passt: 10 s -> 1000 frames
    assert Fbank(ENCODECMAE).num_frames(72000) == 225 and Fbank(ENCODECMAE).num_frames(64000) == 200
    assert Fbank(ENCODECMAE).hop_s == 318 / 24000 and Fbank(ASIT).hop_s == 0.01 and PasstMel().hop_s == 0.01


@pytest.mark.parametrize("name", list(FRONTENDS))
def test_dtype_and_device_follow_input(name):
    frontend = FRONTENDS[name]
    wave = torch.randn(1, frontend.sample_rate // 4)
    ref = frontend(wave)
    assert ref.dtype == torch.float32
    out64 = frontend(wave.double())
    assert out64.dtype == torch.float64 and torch.allclose(out64.float(), ref, atol=2e-3)
    assert frontend(wave.bfloat16()).dtype == torch.bfloat16
    if torch.cuda.is_available():
        out = frontend(wave.cuda())
        assert out.device.type == "cuda" and torch.allclose(out.cpu(), ref, atol=2e-3)


def test_build_frontend():
    assert isinstance(build_frontend(PasstMelConfig()), PasstMel)
    assert isinstance(build_frontend(ENCODECMAE), Fbank) and build_frontend(ENCODECMAE).features == 256
    with pytest.raises(ValueError, match="unknown frontend"):
        build_frontend(dataclasses.replace(AUDIOMAE, kind="nope"))
    assert not PasstMel().state_dict()  # all buffers are derived, nothing to save


def test_speed_sanity():
    timings = []
    for name, frontend in FRONTENDS.items():
        wave = torch.randn(1, 10 * frontend.sample_rate)
        frontend(wave)  # warm-up
        start = time.perf_counter()
        out = frontend(wave)
        timings.append(f"{name} {1000 * (time.perf_counter() - start):.1f} ms {tuple(out.shape)}")
    print("\n10 s clip: " + "  ".join(timings))
