"""Our PaSST encoder against the official implementation (parity/passt_s_small + passt_frontend).

The fixture's official-named weights are saved as a released `.pt` would be and go
through `audiorep.load(preset, weights=...)`, the same conversion as a real checkpoint.
"""
import pytest
import torch

import audiorep
from conftest import load_fixture

SMALL = ["backbone.dim=64", "backbone.depth=2", "backbone.heads=4"]
TOL = dict(atol=1e-4, rtol=1e-4)


def passt_small(tmp_path):
    sd, inp, out, _ = load_fixture("passt_s_small")
    ckpt = tmp_path / "passt-small-official.pt"
    torch.save(sd, ckpt)
    return audiorep.load("passt-s", weights=str(ckpt), overrides=SMALL), inp, out


def test_passt_backbone_head_and_hear_embedding_match_official(tmp_path):
    enc, inp, out = passt_small(tmp_path)
    for name in ("full", "short"):
        mel = inp[f"x_{name}"][:, 0]  # [B, 1, F, T] -> [B, F, T]
        with torch.no_grad():
            o = enc.backbone(mel)
            features = enc.pool(o)
            logits = enc.head(features)
        torch.testing.assert_close(features, out[f"features_{name}"], **TOL)
        torch.testing.assert_close(logits, out[f"logits_{name}"], **TOL)
        torch.testing.assert_close(torch.cat([logits, features], 1), out[f"hear_embed_all_{name}"], **TOL)


def test_passt_tokens_match_official_order_and_grid(tmp_path):
    enc, inp, out = passt_small(tmp_path)
    mel = inp["x_short"][:, 0]
    with torch.no_grad():
        o = enc.backbone(mel)
        grid = enc.backbone.patch_embed(mel)  # [B, D, F', T']
    assert o.grid == (19, 12)
    torch.testing.assert_close(grid, out["patch_embed_short"], **TOL)
    official = out["final_norm_tokens_short"]  # cls, dist, then freq-major patches (f * T' + t)
    ours = o.patches.unflatten(1, o.grid).transpose(1, 2).flatten(1, 2)  # time-major -> freq-major
    torch.testing.assert_close(o.tokens[:, :2], official[:, :2], **TOL)
    torch.testing.assert_close(ours, official[:, 2:], **TOL)


def test_waveform_to_logits_matches_official_frontend_then_model(tmp_path):
    """Frontend + model chained: waveform in, official log-mel through official-weights model."""
    enc, _, _ = passt_small(tmp_path)
    _, finp, fout, _ = load_fixture("passt_frontend")
    with torch.no_grad():
        ours = enc(finp["waveform"])
        ref = enc.backbone(fout["logmel"])
    torch.testing.assert_close(ours.tokens, ref.tokens, atol=2e-3, rtol=1e-3)


def test_checkpoint_with_wrong_geometry_is_rejected_with_a_clear_error(tmp_path):
    sd, _, _, _ = load_fixture("passt_s_small")
    ckpt = tmp_path / "official.pt"
    torch.save(sd, ckpt)
    try:
        audiorep.load("passt-s", weights=str(ckpt))  # full-size preset, small weights
    except ValueError as e:
        assert "does not fit preset 'passt-s'" in str(e) and "shape" in str(e)
    else:
        raise AssertionError("a mismatched checkpoint loaded silently")


def test_conversion_roundtrip_through_cli_and_save(tmp_path):
    from audiorep.convert import read_state_dict
    sd, inp, out, _ = load_fixture("passt_s_small")
    ckpt = tmp_path / "official.pt"
    torch.save({"model": {f"net.{k}": v for k, v in sd.items()}}, ckpt)  # wrapped as hear21passt saves
    assert set(read_state_dict(ckpt)) == set(sd)
    enc, _, _ = passt_small(tmp_path)
    enc.save(tmp_path / "converted")
    again = audiorep.load(str(tmp_path / "converted"))
    assert again.config == enc.config
    with torch.no_grad():
        torch.testing.assert_close(again.backbone(inp["x_short"][:, 0]).tokens, enc.backbone(inp["x_short"][:, 0]).tokens)


def test_file_url_weights_load_in_place_and_a_published_hash_is_checked(tmp_path, monkeypatch):
    """A file:// release loads the official weights, read in place (not copied into the cache:
    convert/download.py; the http cache is tested in test_safety_downloads.py)."""
    from audiorep.convert import fetch
    monkeypatch.setenv("AUDIOREP_CACHE", str(tmp_path / "cache"))
    sd, inp, out, _ = load_fixture("passt_s_small")
    release = tmp_path / "release" / "passt-small.pt"
    release.parent.mkdir()
    torch.save(sd, release)
    url = release.as_uri()
    enc = audiorep.load("passt-s", weights=url, overrides=SMALL)
    with torch.no_grad():
        torch.testing.assert_close(enc.head(enc.pool(enc.backbone(inp["x_short"][:, 0]))), out["logits_short"], **TOL)
    assert fetch(url) == release and not (tmp_path / "cache" / "downloads").exists()
    with pytest.raises(RuntimeError, match="does not match"):
        fetch(url, sha256="0" * 64)


def test_convert_command_writes_a_loadable_encoder(tmp_path, capsys):
    from audiorep import cli
    sd, _, _, _ = load_fixture("passt_s_small")
    torch.save(sd, tmp_path / "official.pt")
    # the small fixture fits the preset only with the small geometry (--set)
    assert cli.main(["convert", str(tmp_path / "official.pt"), "--preset", "passt-s", "--out", str(tmp_path / "out")]) == 2
    assert "audiorep convert: error:" in capsys.readouterr().err  # one line naming the mismatch, no traceback
    assert cli.main(["convert", str(tmp_path / "official.pt"), "--preset", "passt-s", "--out", str(tmp_path / "out"),
                     "--set", *SMALL]) == 0
    enc = audiorep.load(str(tmp_path / "out"))
    assert enc.config.backbone.dim == 64 and "converted" in capsys.readouterr().out


def test_checkpoint_format_is_declared_never_guessed(tmp_path):
    """An Audio-MAE checkpoint given for a PaSST preset (and the reverse) is refused, naming both
    formats; the usual containers are unwrapped (DDP `module.`, Lightning `state_dict` + `model.`)."""
    sd, inp, out, _ = load_fixture("passt_s_small")
    mae, _, _, _ = load_fixture("audiomae_small")
    torch.save({"model": mae}, tmp_path / "mae.pth")
    with pytest.raises(ValueError, match="is not a passt checkpoint.*looks like audiomae"):
        audiorep.load("passt-s", weights=str(tmp_path / "mae.pth"), overrides=SMALL)
    torch.save(sd, tmp_path / "passt.pt")
    with pytest.raises(ValueError, match="is not a audiomae checkpoint.*looks like passt"):
        audiorep.load("audiomae-tiny", weights=str(tmp_path / "passt.pt"))
    for wrapped in ({"module." + k: v for k, v in sd.items()},
                    {"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 3}):
        torch.save(wrapped, tmp_path / "wrapped.pt")
        enc = audiorep.load("passt-s", weights=str(tmp_path / "wrapped.pt"), overrides=SMALL)
        with torch.no_grad():
            torch.testing.assert_close(enc.head(enc.pool(enc.backbone(inp["x_short"][:, 0]))), out["logits_short"], **TOL)


def test_hf_urls_go_through_huggingface_hub_with_revision_and_recorded_hash(tmp_path, monkeypatch):
    """`hf://owner/repo/path[@rev]` is fetched by huggingface_hub.hf_hub_download (its cache and
    revision pinning); the first file's sha256 is recorded and a changed file is caught."""
    import huggingface_hub

    from audiorep.convert import fetch
    monkeypatch.setenv("AUDIOREP_CACHE", str(tmp_path / "cache"))
    sd, inp, out, _ = load_fixture("passt_s_small")
    hub_file = tmp_path / "hub" / "passt.pt"
    hub_file.parent.mkdir()
    torch.save(sd, hub_file)
    calls = []

    def download(repo_id, filename, revision=None):
        calls.append((repo_id, filename, revision))
        return str(hub_file)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    enc = audiorep.load("passt-s", weights="hf://someone/passt-repo/ckpts/passt.pt@v1", overrides=SMALL)
    assert calls == [("someone/passt-repo", "ckpts/passt.pt", "v1")]
    with torch.no_grad():
        torch.testing.assert_close(enc.head(enc.pool(enc.backbone(inp["x_short"][:, 0]))), out["logits_short"], **TOL)
    hub_file.write_bytes(hub_file.read_bytes() + b"changed")
    with pytest.raises(RuntimeError, match="does not match"):
        fetch("hf://someone/passt-repo/ckpts/passt.pt@v1")

    def offline(repo_id, filename, revision=None):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(RuntimeError, match="cannot download hf://someone/passt-repo/other.pt"):
        fetch("hf://someone/passt-repo/other.pt")


def test_hear21passt_module_takes_a_wrapper_checkpoint_as_model_path(tmp_path):
    """`load_model(model_path)` of a hear21passt module: a torch.save of the released wrapper's
    state_dict (`device_proxy`, `net.*`) loads the official weights; the module's scene
    embedding of a mel spectrogram path equals the official [logits, features]."""
    import audiorep.hear.passt.base as base
    sd, inp, out, _ = load_fixture("passt_s_small")
    ckpt = tmp_path / "wrapper.pt"
    torch.save({"device_proxy": torch.zeros(1), **{f"net.{k}": v for k, v in sd.items()}}, ckpt)
    model = base.load_model(str(ckpt), overrides=SMALL, device="cpu")
    enc = model.encoder
    with torch.no_grad():
        o = enc.backbone(inp["x_full"][:, 0])
        features = enc.pool(o)
        embed = torch.cat([enc.head(features), features], 1)
    torch.testing.assert_close(embed, out["hear_embed_all_full"], **TOL)
    assert model.scene_embedding_size == 527 + 64
