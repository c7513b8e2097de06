"""Embeddings: batched == one forward per window, long audio, rates, channels, bad files, CLI."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

import audiorep
from audiorep import cli
from audiorep.audio import AudioError, read
from audiorep.embed import EmbedConfig, embed_file, window_embeddings


@pytest.fixture(scope="module")
def passt():
    torch.manual_seed(0)
    return audiorep.load("passt-tiny")


def tone(seconds, sr, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_batched_timestamps_equal_one_forward_per_window(passt):
    cfg = EmbedConfig(levels=("L", "M", "H"), rf_ms=(160.0, 640.0))
    wave = torch.from_numpy(tone(1.3, 32000))[None]
    emb, ts = audiorep.timestamp_embeddings(passt, wave, 32000, cfg)
    hop = 1600
    for j, rf in enumerate(cfg.rf_ms):  # the released PaSST way: pad, then one window at a time
        size = int(rf * 32)
        padded = F.pad(wave[:, None], (size // 2, size - size // 2), mode="reflect")[:, 0]
        width = emb.shape[-1] // 2
        for k in range(emb.shape[1]):
            with torch.no_grad():
                ref = window_embeddings(passt, padded[:, k * hop:k * hop + size], cfg)
            torch.testing.assert_close(emb[0, k, j * width:(j + 1) * width], ref[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(ts[0], torch.arange(emb.shape[1]) * 50.0)


def test_long_audio_scene_is_the_mean_of_overlapping_windows(passt):
    """Our own windowing (by config): windows of the model's span ending at the clip end."""
    sr = 32000
    wave = torch.from_numpy(tone(23.0, sr, 300.0) + 0.01 * np.random.default_rng(0).standard_normal(23 * sr).astype(np.float32))
    cfg = EmbedConfig(levels=("H", "M"), scene_hop_s=2.5)
    emb = audiorep.scene_embeddings(passt, wave, sr, cfg)
    span, hop = passt.span_samples, int(2.5 * sr)
    starts = list(range(0, len(wave) - span + 1, hop)) + [len(wave) - span]
    with torch.no_grad():
        ref = torch.stack([window_embeddings(passt, wave[None, s:s + span], passt.config.embed)[0] for s in starts]).mean(0)
    torch.testing.assert_close(emb[0], ref, atol=1e-5, rtol=1e-5)


def test_token_timestamps_follow_time_local_tokens():
    enc = audiorep.load("audiomae-tiny")
    wave = np.concatenate([np.zeros(16000 * 2, np.float32), tone(2.0, 16000, 1000.0)])
    emb, ts = audiorep.timestamp_embeddings(enc, wave, 16000)
    assert emb.shape == (1, 81, 64) and float(ts[0, -1]) == 4000.0
    # patch columns are 160 ms wide, centred at 80, 240, ... ms: 0-150 ms map to the first
    assert all(torch.equal(emb[0, 0], emb[0, k]) for k in range(4)) and not torch.equal(emb[0, 0], emb[0, 4])
    silent, loud = emb[0, 20], emb[0, 60]  # 1 s (silence) vs 3 s (tone): tokens see their own time
    assert (loud - silent).abs().max() > 10 * (emb[0, 21] - silent).abs().max()


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
def test_any_sample_rate_and_stereo_file(passt, tmp_path, sr):
    x = tone(0.2, sr)
    sf.write(tmp_path / "stereo.wav", np.stack([x, 0.5 * x], 1), sr)
    wave, rate = read(tmp_path / "stereo.wav")
    assert wave.ndim == 1 and rate == sr
    emb, ts = audiorep.timestamp_embeddings(passt, wave, rate)
    assert emb.shape == (1, 5, 74) and torch.isfinite(emb).all()
    assert audiorep.scene_embeddings(passt, wave, rate).shape == (1, 74)


def test_ten_minutes_streams_in_blocks_with_seamless_timestamps(passt, tmp_path):
    sr = 16000
    x = np.tile(tone(1.0, sr), 600)
    sf.write(tmp_path / "long.flac", x, sr)
    emb, ts = embed_file(passt, tmp_path / "long.flac", "timestamp", passt.config.embed, block_s=120.0)
    assert emb.shape == (12001, 74) and np.allclose(np.diff(ts), 50.0)
    scene, _ = embed_file(passt, tmp_path / "long.flac", "scene", passt.config.embed, block_s=120.0)
    assert scene.shape == (74,) and np.isfinite(scene).all()


@pytest.mark.parametrize("content,problem", [
    (b"", "cannot read audio"), (b"RIFF\x00\x00garbage", "cannot read audio")])
def test_broken_files_name_the_file(tmp_path, content, problem):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=f"broken.wav: {problem}"):
        read(path)


def test_empty_and_nonfinite_audio(tmp_path, passt):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: audio is empty"):
        read(tmp_path / "empty.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2] * 100, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: audio contains 1?0?0 NaN/Inf"):
        read(tmp_path / "nan.wav")
    with pytest.raises(AudioError, match="NaN/Inf"):
        audiorep.scene_embeddings(passt, np.full(1000, np.inf, np.float32), 16000)


def test_embed_cli_writes_npy_skips_done_and_reports_bad_files(tmp_path, capsys):
    src = tmp_path / "audio"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "a.wav", tone(0.5, 16000), 16000)
    sf.write(src / "sub" / "b.wav", tone(0.7, 22050), 22050)
    (src / "bad.wav").write_bytes(b"RIFFnope")
    out = tmp_path / "emb"
    args = ["embed", str(src), "--model", "passt-tiny", "--out", str(out), "--kind", "timestamp"]
    assert cli.main(args) == 1
    index = json.loads((out / "index.json").read_text())
    assert set(index["files"]) == {str(src / "a.wav"), str(src / "sub" / "b.wav")}
    assert "bad.wav" in next(iter(index["errors"]))
    ts = np.load(out / "sub__b.timestamps_ms.npy")
    assert np.load(out / "sub__b.npy").shape == (len(ts), 74) and 650.0 <= ts[-1] <= 700.0
    mtime = (out / "a.npy").stat().st_mtime_ns
    cli.main(args)
    assert (out / "a.npy").stat().st_mtime_ns == mtime  # done files are skipped on rerun
    assert "bad.wav" in capsys.readouterr().err


def test_channels_last_arrays_are_refused_not_misread(passt):
    with pytest.raises(AudioError, match=r"looks like \[samples, channels\]"):
        audiorep.scene_embeddings(passt, np.zeros((32000, 2), np.float32), 32000)


def test_a_forward_holds_at_most_batch_size_seconds_of_audio(passt, monkeypatch):
    """A 60 s scene is 25 windows of 10 s: batched by batch_size windows they went through in
    one forward (1.66 GB with PaSST-S, more than hear21passt's one window at a time); now at most
    batch_size seconds of audio per forward (32: 3 windows; PaSST's 16: one), while 160 ms
    timestamp windows still go batch_size at a time."""
    sizes = []
    forward = passt.frontend.forward
    monkeypatch.setattr(passt.frontend, "forward", lambda w: sizes.append(tuple(w.shape)) or forward(w))
    wave = torch.randn(1, 60 * 32000, generator=torch.Generator().manual_seed(0)) * 0.1
    windows = F.pad(wave[:, None], (160000, 160000), mode="reflect")[:, 0].unfold(1, 320000, 80000)[0]
    with torch.no_grad():
        ref = torch.cat([window_embeddings(passt, w[None], passt.config.embed) for w in windows]).mean(0)
    for batch_size, batches in [(32, [3] * 8 + [1]), (16, [1] * 25)]:
        sizes.clear()
        cfg = EmbedConfig(**{**vars(passt.config.embed), "batch_size": batch_size})
        scene = audiorep.scene_embeddings(passt, wave, 32000, cfg)
        assert [s[0] for s in sizes] == batches and all(s[1] == 320000 for s in sizes)
        torch.testing.assert_close(scene[0], ref, atol=2e-5, rtol=1e-5)
    sizes.clear()
    audiorep.timestamp_embeddings(passt, wave[:, :2 * 32000], 32000, cfg)
    assert [s[0] for s in sizes] == [16, 16, 9] and sizes[0][1] == 5120


def test_tensor_audio_at_the_encoder_rate_is_checked_where_it_lies():
    """A float tensor at the encoder's rate is not copied through the host (GPU audio stays on
    the GPU) and gets the same checks and result as the numpy path."""
    import pytest
    import torch

    from audiorep.audio import AudioError
    from audiorep.embed import as_waves
    x = torch.randn(2, 4000)
    assert torch.equal(as_waves(x, 16000, 16000, "cpu"), as_waves(x.numpy(), 16000, 16000, "cpu"))
    for bad, message in [(torch.full((100,), float("nan")), "NaN/Inf"), (torch.zeros(0), "empty"),
                         (torch.zeros(16000, 2), "channels"), (torch.zeros(2, 2, 2), "mono")]:
        with pytest.raises(AudioError, match=message):
            as_waves(bad, 16000, 16000, "cpu")
