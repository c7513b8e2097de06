"""audiorep.hear.passt.<module>: hear21passt's twelve HEAR modules by name.

Each module runs on random weights at tiny width (the released geometry otherwise: hop,
time positions, classes, fields, mel window) and is compared with hear21passt's own
algorithm written out below from its wrapper (kkoutini/passt_hear21, 0.0.26): one window per
timestamp, reflect-padded by half a window, timestamps k * 50 ms, [logits, features] per
field, fields in order, then the mel frames of the mel window flattened.
"""
import importlib

import pytest
import torch
import torch.nn.functional as F

from audiorep.hear.passt import MODULES

TINY = ["backbone.dim=64", "backbone.depth=2", "backbone.heads=4"]
SR = 32000


def released_forward(enc, x, levels=("H", "M")):
    """hear21passt PasstBasicWrapper.forward: mel -> net -> cat([logits, features]) (mode all)."""
    out = enc.backbone(enc.frontend(x))
    features = out.tokens[:, :2].mean(1)
    parts = {"H": enc.head(features), "M": features}
    return torch.cat([parts[level] for level in levels], 1)


def released_windows(fn, audio, window, hop=1600):
    """hear21passt get_timestamp_embeddings / get_timestamp_mels: reflect pad window // 2, unfold, loop."""
    pad = window // 2
    padded = F.pad(audio[:, None], (pad, pad), mode="reflect")[:, 0]
    segments = padded.unfold(1, window, hop)  # [n, K, window]
    emb = torch.stack([fn(segments[:, k]) for k in range(segments.shape[1])], 1)
    times = torch.arange(segments.shape[1]) * hop * 1000.0 / SR
    return emb, times.expand(len(audio), -1)


def released_timestamps(enc, spec, audio):
    fields = [released_windows(lambda x: released_forward(enc, x), audio, int(f * SR / 1000))[0]
              for f in spec.fields_ms]
    if spec.mel_window:
        fields.append(released_windows(lambda x: enc.frontend(x).reshape(len(x), 128 * 6), audio, spec.mel_window)[0])
    return torch.cat(fields, -1)


@pytest.mark.parametrize("name", list(MODULES))
def test_module_matches_hear21passt_shapes_order_and_timestamps(name):
    module = importlib.import_module(f"audiorep.hear.passt.{name}")
    spec = MODULES[name]
    model = module.load_model(random_init=True, overrides=TINY)
    enc = model.encoder
    classes = 20 if name == "openmic2008" else 527
    assert enc.config.num_classes == classes and model.sample_rate == SR
    assert model.scene_embedding_size == classes + 64
    assert model.timestamp_embedding_size == len(spec.fields_ms) * (classes + 64) + (768 if spec.mel_window else 0)
    audio = (torch.rand(2, 19200, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.5  # 0.6 s
    emb, ts = module.get_timestamp_embeddings(audio, model)
    with torch.no_grad():
        ref = released_timestamps(enc, spec, audio)
    assert emb.shape == (2, 13, model.timestamp_embedding_size) and ts.shape == (2, 13)
    assert emb.dtype == ts.dtype == torch.float32
    torch.testing.assert_close(ts, torch.arange(13.0).expand(2, -1) * 50)
    torch.testing.assert_close(emb, ref, atol=2e-5, rtol=1e-5)
    scene = module.get_scene_embeddings(audio, model)
    with torch.no_grad():
        torch.testing.assert_close(scene, released_forward(enc, audio), atol=2e-5, rtol=1e-5)


def test_released_fields_by_default_and_the_paper_one_setting_away():
    import audiorep.hear.passt.base2level as base2level
    import audiorep.hear.passt.base2levelmel as base2levelmel
    assert base2level.load_model(random_init=True, overrides=TINY).encoder.config.embed.rf_ms == (160.0, 800.0)
    paper = base2level.load_model(random_init=True, overrides=TINY, paper=True)
    assert paper.encoder.config.embed.rf_ms == (160.0, 640.0)
    assert base2levelmel.load_model(random_init=True, overrides=TINY).encoder.config.embed.rf_ms == (160.0, 640.0)


@pytest.mark.parametrize("mode,levels", [("all", ("H", "M")), ("embed_only", ("M",)), ("logits", ("H",))])
def test_modes_are_hear21passt_levels(mode, levels):
    import audiorep.hear.passt.hop160base as hop160base
    model = hop160base.load_model(mode=mode, random_init=True, overrides=TINY)
    assert model.encoder.config.embed.levels == levels
    audio = torch.rand(1, 8000) - 0.5
    with torch.no_grad():
        ref = released_forward(model.encoder, audio, levels)
    torch.testing.assert_close(hop160base.get_scene_embeddings(audio, model), ref, atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="mode='both'"):
        hop160base.load_model(mode="both", random_init=True, overrides=TINY)


def test_base30sec_scene_windows_of_30_s_and_its_scene_hop():
    """Up to 30 s one forward; longer: 30 s windows every scene_hop ms over audio reflect-padded by 15 s."""
    import audiorep.hear.passt.base30sec as base30sec
    model = base30sec.load_model(random_init=True, overrides=TINY, scene_hop=15000)
    enc = model.encoder
    assert enc.config.embed.scene_hop_s == 15.0 and enc.config.backbone.max_frames == 3000
    audio = torch.randn(1, 40 * SR, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        padded = F.pad(audio[:, None], (15 * SR, 15 * SR), mode="reflect")[:, 0]
        windows = padded.unfold(1, 30 * SR, 15 * SR)[0]  # [K, 30 s]
        ref = torch.cat([released_forward(enc, w[None]) for w in windows]).mean(0)
        short = released_forward(enc, audio[:, :25 * SR])[0]
    torch.testing.assert_close(base30sec.get_scene_embeddings(audio, model)[0], ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(base30sec.get_scene_embeddings(audio[:, :25 * SR], model)[0], short,
                               atol=2e-5, rtol=1e-5)


def test_model_path_is_the_weights(tmp_path):
    """A checkpoint path (as hear21passt's load_model(model_path) is called) loads those weights
    into the module's geometry; a saved encoder folder keeps its weights and takes the module's settings."""
    import audiorep
    import audiorep.hear.passt.hop100base2lvl as hop100base2lvl
    enc = audiorep.load("passt-s-hop3", random_init=True, overrides=TINY)
    with torch.no_grad():
        enc.backbone.cls_token.add_(1.0)
    enc.save(tmp_path / "enc")
    from_file = hop100base2lvl.load_model(str(tmp_path / "enc" / "model.safetensors"), overrides=TINY)
    from_folder = hop100base2lvl.load_model(str(tmp_path / "enc"))
    for model in (from_file, from_folder):
        torch.testing.assert_close(model.encoder.backbone.cls_token, enc.backbone.cls_token)
        assert model.encoder.config.embed.rf_ms == (160.0, 800.0)
        assert model.timestamp_embedding_size == 2 * (527 + 64)


def test_full_size_declares_hear21passt_sizes():
    """At PaSST-S width the declared sizes are hear21passt's: 1295 and 768 + 2 x 1295 = 3358."""
    import audiorep.hear.passt.base2levelmel as base2levelmel
    model = base2levelmel.load_model(random_init=True, device="cpu")
    assert (model.scene_embedding_size, model.timestamp_embedding_size) == (1295, 3358)
