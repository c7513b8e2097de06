"""EnCodecMAE embeddings of long audio: an hour streams through a tiny frame model in
blocks, with timestamps on the 13.25 ms frame grid. Separate file: it takes 20-30 s on a shared 2-core machine."""
import dataclasses

import numpy as np
import torch
from test_encodecmae import tiny_encoder

from audiorep.encoder import Encoder


def test_an_hour_embeds_in_blocks_with_timestamps_on_the_frame_grid(tmp_path, monkeypatch, one_thread):
    """1 h of 8 kHz audio streamed through a tiny model: every 13.25 ms timestamp is exactly
    k x 318 / 24000 s (no drift after 271,698 frames) and carries the frame centred there."""
    import audiorep.embed as embed
    from audiorep import audio
    from audiorep.encoder import EmbedConfig

    sr, seconds = 8000, 3600
    t = np.arange(sr * seconds, dtype=np.float32) / sr
    audio.write(tmp_path / "hour.wav", (0.2 * np.sin(2 * np.pi * 440 * t * (1 + t / seconds))).astype(np.float32), sr)
    del t
    cfg = EmbedConfig(levels=("M",), timestamps="tokens", hop_ms=13.25, batch_size=64)
    torch.manual_seed(0)
    encoder = Encoder(dataclasses.replace(tiny_encoder(max_frames=100).config, embed=cfg)).eval()  # 1.3 s windows
    seen = []
    inner = embed.timestamp_embeddings
    monkeypatch.setattr(embed, "timestamp_embeddings",
                        lambda enc, x, rate, c: seen.append(len(x)) or inner(enc, x, rate, c))
    emb, ts = embed.embed_file(encoder, tmp_path / "hour.wav", "timestamp", cfg, block_s=300.0)
    n = seconds * 24000 // 318 + 1
    assert emb.shape == (n, 64) and ts.shape == (n,)
    assert max(seen) < 2 * 300 * 24000  # never more than two 5-minute blocks in memory
    assert np.abs(ts - np.arange(n) * 318 / 24000 * 1000).max() < 0.05  # ms: multiples of the hop, no drift
    first, _ = audio.read(tmp_path / "hour.wav", 24000, duration=encoder.span_samples / 24000)  # the first window
    with torch.no_grad():
        tokens = encoder(torch.from_numpy(first)[None]).tokens[0]  # frame i centred at (i + 1) hops
    torch.testing.assert_close(torch.from_numpy(emb[1:100]), tokens[:99], atol=2e-3, rtol=0)


def test_hear_module_takes_a_hear_rate_and_returns_milliseconds(one_thread):
    from audiorep import hear
    model = hear.load_model("encodecmae-tiny", sample_rate=16000)  # resampled to 24 kHz inside
    audio = torch.randn(2, 16000 * 3) * 0.1
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (2, 3 * 24000 // 318 + 1, 64)
    assert torch.allclose(ts[0, 1:] - ts[0, :-1], torch.tensor(13.25))  # ms, the frame hop
    assert hear.get_scene_embeddings(audio, model).shape == (2, 64)


def test_embeddings_from_a_chosen_block(one_thread):
    """EmbedConfig.layers=(0,): block 0's x0 stream per frame (the released per-layer activation)."""
    from audiorep.embed import timestamp_embeddings
    from audiorep.encoder import EmbedConfig
    torch.manual_seed(0)
    cfg = EmbedConfig(levels=("M",), timestamps="tokens", hop_ms=13.25, layers=(0,))
    encoder = Encoder(dataclasses.replace(tiny_encoder().config, embed=cfg)).eval()
    wave = torch.randn(1, 24000) * 0.1
    emb, _ = timestamp_embeddings(encoder, wave, 24000)
    with torch.no_grad():
        block0 = encoder(wave, layers=[0]).hidden[0][0]  # [T, D]
    torch.testing.assert_close(emb[0, 1:block0.shape[0] + 1], block0, atol=1e-5, rtol=1e-5)
