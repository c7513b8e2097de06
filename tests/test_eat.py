"""EAT: waveform frontend, conv backbone, converter parity with the official SoundNetRaw,
presets against the paper's Table 9, lengths, token times, and bad input."""
import math

import pytest
import torch

import audiorep
from audiorep import presets
from audiorep.backbones.conv import ConvConfig
from audiorep.convert import eat as eat_convert
from audiorep.encoder import Encoder, EncoderConfig
from audiorep.frontends.waveform import Waveform, WaveformConfig

SR = 22050
SMALL = ConvConfig(channels=4, dim=64, depth=2, heads=4, ff=128, clip_tokens=32)  # the fixture's constructor
TINY = ConvConfig(channels=2, dim=16, depth=1, heads=2, ff=32, clip_tokens=40)

pytestmark = pytest.mark.usefixtures("one_thread")


def encoder(backbone=TINY, num_classes=0, peak=0.95):
    return Encoder(EncoderConfig(name="eat-test", frontend=WaveformConfig(peak=peak), backbone=backbone,
                                 num_classes=num_classes, head_norm=False, pool="prefix")).eval()


def test_parity_with_official_soundnetraw(fixture_loader):
    sd, inp, out, meta = fixture_loader("eat_small")
    assert meta["constructor_args"]["clip_length"] == SMALL.clip_tokens
    enc = encoder(SMALL, num_classes=10, peak=0)  # the official model takes the waveform as given
    assert eat_convert.matches(sd)
    enc.load_state_dict(eat_convert.to_audiorep(sd, enc), strict=True)
    wave = inp["waveform"]  # [2, 1, 32768]
    with torch.no_grad():
        result = enc(wave[:, 0])
        torch.testing.assert_close(enc.head(enc.pool(result)), out["logits"], atol=2e-4, rtol=2e-4)
        bb = enc.backbone
        torch.testing.assert_close(bb.conv_tokens(wave), out["project_out"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(bb.down(bb.stem(wave)), out["down_out"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(bb.stem(wave)[..., :256], out["start_out_first256"], atol=1e-4, rtol=1e-4)
    assert torch.equal(bb.down[0].filt[0, 0] * 25, torch.tensor([1., 2, 3, 4, 5, 4, 3, 2, 1]))


def test_official_checkpoint_file_loads_through_the_preset(fixture_loader, tmp_path):
    sd, inp, out, _ = fixture_loader("eat_small")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "best_model.pt")  # DataParallel names
    enc = audiorep.load("eat-tiny", weights=str(tmp_path / "best_model.pt"),
                        overrides=["backbone.clip_tokens=32", "num_classes=10", "frontend.peak=0"])
    with torch.no_grad():
        logits = enc.head(enc.pool(enc(inp["waveform"][:, 0])))
    torch.testing.assert_close(logits, out["logits"], atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("name, paper_m", [("eat-s", 5.3), ("eat-m", 25.5)])
def test_preset_parameter_counts_match_table_9(name, paper_m):
    """The paper counts the AudioSet models: 10 s of positions (the presets') and 527 classes."""
    enc = Encoder(presets.get(name)).with_head(527)
    assert round(sum(p.numel() for p in enc.parameters()) / 1e6, 1) == paper_m
    assert enc.sample_rate == SR and presets.FORMATS[name] == "eat" and enc.span_samples == 216 * 1024


def test_converter_refuses_what_does_not_fit(fixture_loader):
    sd = fixture_loader("eat_small")[0]
    with pytest.raises(ValueError, match="clip_tokens=32"):
        eat_convert.to_audiorep(sd, encoder(SMALL.__class__(**{**SMALL.__dict__, "clip_tokens": 33})))
    with_norm = Encoder(EncoderConfig(frontend=WaveformConfig(), backbone=SMALL, num_classes=10, head_norm=True))
    with pytest.raises(ValueError, match="head_norm=False"):
        eat_convert.to_audiorep(sd, with_norm)
    headless = encoder(SMALL)
    headless.load_state_dict(eat_convert.to_audiorep(sd, headless), strict=True)  # tf.fc dropped


def test_token_count_times_and_minimum_length():
    enc = encoder()
    bb = enc.backbone
    lo, hi = bb.frames
    assert (lo, hi) == (32257, 40 * 1024)  # [4, 4, 4, 4]: the dilated stages' 63-sample reflections
    for samples in (lo, 33000, hi):
        out = enc(torch.randn(1, samples))
        K = math.ceil(samples / 1024)
        assert out.tokens.shape == (1, 1 + K, 16) and out.prefix == 1 and out.grid is None
        torch.testing.assert_close(out.times, (torch.arange(K) + 0.5) * 1024 / SR)
    wave = torch.randn(1, 1, lo - 1)
    with pytest.raises(RuntimeError):  # the minimum is tight: one sample less breaks a reflection pad
        bb.dilated(bb.down(bb.stem(wave)))
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ValueError, match="conv backbone takes 32257 to 40960 samples"):
            bb(torch.randn(1, 1, bad))
    assert enc.min_samples == lo and enc.span_samples == hi


def test_keep_padding_layers_and_refused_mask():
    enc = encoder()
    bb = enc.backbone
    feats = enc.frontend(torch.randn(2, 34 * 1024))
    full = bb(feats, layers=[0])
    assert len(full.hidden) == 1 and full.hidden[0].shape == full.tokens.shape
    keep = torch.tensor([[0, 5, 9], [1, 2, 33]])
    part = bb(feats, keep=keep)
    assert part.tokens.shape == (2, 4, 16)
    torch.testing.assert_close(part.times, full.times[keep])
    padding = torch.zeros(2, feats.shape[-1], dtype=torch.bool)
    padding[1, 20 * 1024 + 1:] = True  # clip 1 ends inside token 20: tokens 21.. are padding
    out = bb(feats, padding=padding)
    assert out.padding[0].sum() == 0 and out.padding[1].nonzero().flatten().tolist() == list(range(21, 34))
    torch.testing.assert_close(out.tokens[0], full.tokens[0])
    # padded tokens are out of attention: the real ones are those of the sequence without them
    alone = bb(feats[1:], keep=torch.arange(21)[None])
    torch.testing.assert_close(out.tokens[1, :22], alone.tokens[0])
    with torch.no_grad():  # torch's fused inference path of the transformer layers agrees
        torch.testing.assert_close(bb(feats, padding=padding).tokens[1, :22], alone.tokens[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="mask"):
        bb(feats, mask=torch.zeros(2, 34, dtype=torch.bool))


def test_train_mode_batch_norm_and_gradients():
    enc = encoder(num_classes=3).train()
    before = enc.backbone.stem.bn.running_mean.clone()
    logits = enc.head(enc.pool(enc(torch.randn(2, 32768))))
    logits.sum().backward()
    assert not torch.equal(before, enc.backbone.stem.bn.running_mean)  # batch statistics, as the official model
    assert all(p.grad is not None for p in enc.parameters())
    assert enc.backbone.layer_id("blocks.0.linear1.weight") == 1
    assert enc.backbone.layer_id("norm.weight") == 2 and enc.backbone.layer_id("down.0.conv.weight") == 0
    assert enc.backbone.no_weight_decay() == set()  # the official optimizer decays cls token and positions too


def test_waveform_frontend_normalizes_and_refuses_bad_input():
    fe = Waveform(WaveformConfig())
    wave = torch.randn(3, 500) * torch.tensor([[0.01], [3.0], [0.0]])
    x = fe(wave)
    assert x.shape == (3, 1, 500) and fe.hop_s == 1 / SR and fe.features == 1
    torch.testing.assert_close(x[:2].abs().amax(-1).flatten(), torch.full((2,), 0.95))
    assert torch.equal(x[2], torch.zeros(1, 500))  # silence stays silence, no NaN
    assert fe.num_frames(500) == 500 and fe.samples_for(7) == 7
    wave[1, 10] = float("nan")
    with pytest.raises(ValueError, match=r"clips \[1\].*NaN"):
        fe(wave)
    with pytest.raises(ValueError, match="no level L"):
        fe.level_l(x)
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        fe(torch.randn(500))
    with pytest.raises(ValueError, match="at least 1 sample"):
        fe.num_frames(0)


def test_short_clip_is_zero_padded_to_the_minimum():
    enc = encoder()
    short = torch.randn(1, 500)  # shorter than one token
    out = enc(enc.pad_short(short))
    assert out.tokens.shape[1] == 1 + 32


def test_scene_and_timestamp_embeddings_from_token_times():
    from audiorep import embed
    from audiorep.encoder import EmbedConfig

    enc = encoder()
    cfg = EmbedConfig(levels=("M",), timestamps="tokens", hop_ms=50.0, scene_hop_s=1.0)
    audio = 0.1 * torch.randn(2, 3 * 16000)  # 3 s at 16 kHz, longer than the span (40 tokens = 1.86 s)
    scene = embed.scene_embeddings(enc, audio, 16000, cfg)
    emb, ts = embed.timestamp_embeddings(enc, audio, 16000, cfg)
    assert scene.shape == (2, 16) and torch.isfinite(scene).all()
    assert emb.shape == (2, 61, 16) and ts.shape == (2, 61)
    torch.testing.assert_close(ts[0, :3], torch.tensor([0.0, 50.0, 100.0]), atol=0.1, rtol=0)  # 1102-sample hop
    short = embed.scene_embeddings(enc, 0.1 * torch.randn(1, 400), 16000, cfg)  # 25 ms: padded to 1.46 s
    silent = embed.scene_embeddings(enc, torch.zeros(1, 16000), 16000, cfg)
    assert torch.isfinite(short).all() and torch.isfinite(silent).all()


# ---------------------------------------------------------------- the recipe's loss, targets and mix gate


def eat_objective(**changes):
    from audiorep.augment import WaveAugmentConfig
    from audiorep.objectives import EATConfig, Supervised

    wave = WaveAugmentConfig(signal=(), noises=(), resample_p=0.0, mixes=("timemix",), mix_targets="union")
    return Supervised(encoder().train(), EATConfig(wave=wave, **changes), num_classes=4)


def test_eat_loss_is_the_releases_summed_smoothed_ce_and_union_bce():
    import torch.nn.functional as F

    objective = eat_objective()
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    smooth = torch.full((5, 4), 0.1 / 3).scatter_(1, labels[:, None], 0.9)  # LabelSmoothCrossEntropyLoss(0.1, 'sum')
    release = -(smooth * logits.log_softmax(-1)).sum()
    torch.testing.assert_close(objective.loss(logits, torch.eye(4)[labels], mixed=False), release)
    union = torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    torch.testing.assert_close(objective.loss(logits, union, mixed=True),
                               F.binary_cross_entropy_with_logits(logits, union, reduction="sum"))
    torch_rule = eat_objective(smoothing_others=False, reduction="mean")  # torch's smoothing, the mean
    torch.testing.assert_close(torch_rule.loss(logits, torch.eye(4)[labels], mixed=False),
                               F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_eat_mixes_start_after_the_epochs_and_give_union_targets():
    from audiorep.augment import wave_augment
    from audiorep.objectives import EATConfig

    assert EATConfig().wave.mix_targets == "union" and EATConfig().reduction == "sum"
    wave, target, mixed = wave_augment(torch.randn(8, 4000), torch.eye(8), EATConfig().wave, SR)
    assert mixed and set(target.unique().tolist()) <= {0.0, 1.0} and (target.diagonal() == 1).all()
    objective = eat_objective(wave_mix_after_epochs=2)
    batch = {"wave": 0.1 * torch.randn(4, 32768), "target": torch.eye(4)}
    with pytest.raises(ValueError, match="wave_mix_after_epochs=2.*epoch length"):
        objective(batch)
    objective.set_epoch_steps(3.0)  # 2 epochs = 6 steps
    objective.step.fill_(5)
    loss, logs = objective(batch)
    assert logs["mixed"] == 0.0 and {"emb_std", "emb_rank"} <= set(logs) and logs["emb_std"] > 0
    objective.step.fill_(6)
    assert objective(batch)[1]["mixed"] == 1.0
