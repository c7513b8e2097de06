"""Every preset, at tiny size: forward, backward, keep/mask paths, lengths, save/load."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import audiorep
from audiorep.config import from_dict, override, to_dict
from audiorep.encoder import Encoder, EncoderConfig
from audiorep.masking import masked_from_keep, random_keep, restore_ids, time_freq_keep
from audiorep.presets import PRESETS

TINY = ["backbone.dim=32", "backbone.depth=2", "backbone.heads=2"]


def tiny(name):
    return Encoder(override(PRESETS[name], TINY))


@pytest.mark.parametrize("name", list(PRESETS))
def test_forward_backward_and_variable_length(name):
    """Any backbone kind: the shortest input it takes and a longer one; one token time per token."""
    enc = tiny(name)
    sr = enc.sample_rate
    for samples in (max(int(0.3 * sr), enc.min_samples), min(max(int(2.0 * sr), enc.min_samples), enc.span_samples)):
        wave = torch.randn(2, samples) * 0.1
        out = enc(wave)
        assert out.tokens.shape == (2, out.prefix + out.times.shape[-1], 32)
        step = float(out.times.unique()[1:2].sum() - out.times.min()) if out.times.numel() > 1 else 0.0
        assert bool((out.times >= 0).all()) and float(out.times.max()) <= samples / sr + step  # a token past the end: padding
        if out.grid is not None:
            assert out.times.shape[-1] == out.grid[0] * out.grid[1]
    out.tokens.sum().backward()
    assert all(p.grad is not None for n, p in enc.backbone.named_parameters() if n.startswith("blocks.0."))


VIT_PRESETS = [name for name, cfg in PRESETS.items() if cfg.backbone.kind == "vit"]


@pytest.mark.parametrize("name", VIT_PRESETS)
def test_keep_and_mask_paths(name):
    enc = tiny(name)
    wave = torch.randn(2, enc.sample_rate) * 0.1
    feats = enc.frontend(wave)
    full = enc.backbone(feats)
    T, F = full.grid
    keep = time_freq_keep(2, full.grid, drop_time=T // 2, drop_freq=1)
    assert keep.shape == (2, (T - T // 2) * (F - 1))
    part = enc.backbone(feats, keep=keep)
    assert part.tokens.shape[1] == enc.config.backbone.prefix + keep.shape[1]
    if enc.config.backbone.mask_token:
        masked = enc.backbone(feats, mask=masked_from_keep(keep, T * F))
        assert masked.tokens.shape == full.tokens.shape


def test_mask_token_replaces_exactly_the_masked_tokens():
    enc = Encoder(override(PRESETS["audiomae-tiny"], TINY + ["backbone.mask_token=true", "backbone.depth=0"]))
    feats = enc.frontend(torch.randn(1, 16000) * 0.1)
    n = enc.backbone.grid(feats.shape[-1])
    mask = torch.zeros(1, n[0] * n[1], dtype=torch.bool)
    mask[0, ::3] = True
    a = enc.backbone(feats).patches
    b = enc.backbone(feats, mask=mask).patches
    changed = (a - b).abs().amax(-1) > 1e-6
    assert torch.equal(changed[0], mask[0])


def test_samplers_keep_the_tokens_they_claim():
    keep, ids_restore = random_keep(3, (8, 4), 0.75)
    assert keep.shape == (3, 8) and len(set(keep[0].tolist())) == 8
    assert torch.equal(masked_from_keep(keep, 32).sum(1), torch.full((3,), 24))
    order = torch.cat([keep, masked_from_keep(keep, 32).nonzero()[:, 1].view(3, -1)], 1)
    assert torch.equal(order.gather(1, restore_ids(keep, 32)), torch.arange(32).expand(3, -1))
    kept = time_freq_keep(2, (6, 4), drop_time=2, drop_freq=1)
    times, freqs = kept // 4, kept % 4
    for b in range(2):  # whole columns/rows: 4 times x 3 freqs
        assert len(set(times[b].tolist())) == 4 and len(set(freqs[b].tolist())) == 3


def test_save_load_roundtrip_and_config_json(tmp_path):
    enc = tiny("passt-tiny")
    enc.save(tmp_path / "enc")
    again = audiorep.load(str(tmp_path / "enc"))
    assert again.config == enc.config
    wave = torch.randn(1, 16000)
    torch.testing.assert_close(again(wave).tokens, enc.eval()(wave).tokens)
    assert from_dict(EncoderConfig, to_dict(enc.config)) == enc.config


def test_config_overrides_are_typed_and_reject_unknown_fields():
    cfg = override(PRESETS["passt-s"], ["embed.rf_ms=160,640", "backbone.depth=3", "embed.levels=L,M"])
    assert cfg.embed.rf_ms == (160.0, 640.0) and cfg.backbone.depth == 3 and cfg.embed.levels == ("L", "M")
    with pytest.raises(ValueError, match="has no field 'deepth'"):
        override(cfg, ["backbone.deepth=3"])
    with pytest.raises(ValueError, match="field=value"):
        override(cfg, ["backbone.depth"])


def test_span_is_the_longest_audio_the_positions_cover():
    enc = tiny("passt-tiny")
    frames = enc.frontend.num_frames(enc.span_samples)
    assert frames == 1005 < enc.frontend.num_frames(enc.span_samples + 1)  # 99 time patches of stride 10
    assert enc(torch.zeros(1, enc.span_samples)).grid == (99, 12)
    assert enc.span_samples >= 10 * 32000  # a 10 s clip goes through in one pass, as the released model does
    with pytest.raises(ValueError, match="covers"):
        enc(torch.zeros(1, enc.span_samples + 20 * 320))


def test_unknown_preset_and_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown preset 'passt-xl'"):
        audiorep.load("passt-xl")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        audiorep.load("passt-tiny", weights=str(bad))


def test_pickled_code_in_a_checkpoint_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open('" + str(tmp_path / "pwned") + "', 'w').write('x')",))
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(ValueError):
        audiorep.load("passt-tiny", weights=str(path))
    assert not (tmp_path / "pwned").exists()


def test_presets_are_plain_data():
    for name, cfg in PRESETS.items():
        assert cfg.name == name and dataclasses.is_dataclass(cfg)


def test_cli_presets_and_unknown_command(capsys):
    from audiorep import cli
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS) and "passt-s-f128-p16" not in out  # notes, not URLs
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    run = subprocess.run([sys.executable, "-m", "audiorep", "frobnicate"], capture_output=True, text=True,
                         cwd=Path(audiorep.__file__).parents[1])
    assert run.returncode == 2 and "unknown command 'frobnicate'" in run.stderr


def test_passt_time_positions_cropped_at_a_random_offset_in_training_only():
    """kkoutini/PaSST issue #42: training crops the time table at a random offset, inference from 0."""
    vit = audiorep.load("passt-tiny", random_init=True).backbone
    table = vit.pos_embed.time  # [99, D]
    vit.eval()
    torch.testing.assert_close(vit.positions(20)[:, 0] - vit.pos_embed.freq[0], table[:20])
    vit.train()
    torch.manual_seed(0)
    offsets = set()
    for _ in range(30):
        pos = vit.positions(20)[:, 0] - vit.pos_embed.freq[0]  # [20, D]
        offset = int((pos[0] - table).abs().sum(1).argmin())
        torch.testing.assert_close(pos, table[offset:offset + 20])
        offsets.add(offset)
    assert len(offsets) > 5 and max(offsets) <= 99 - 20
    torch.testing.assert_close(vit.positions(99)[:, 0] - vit.pos_embed.freq[0], table)  # full length: no room to move


@pytest.mark.parametrize("name, frames", [("audiomae-tiny", 1024), ("passt-tiny", 998), ("asit-tiny", 592)])
def test_default_training_crop_is_what_the_positions_were_built_for(name, frames):
    """Training crops default to the frames a ViT's positions were built for (not its longest input)."""
    from audiorep.data import DataConfig
    from audiorep.runs import crop_samples
    enc = tiny(name)
    assert enc.frontend.num_frames(crop_samples(enc, DataConfig())) == frames
