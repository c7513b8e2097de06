"""The encoder contract is open: a backbone of a new kind, defined here outside the package,
trains through the one loop, saves, reloads, embeds and passes the HEAR validator without
any library change. And encoder folders written before the contract load and embed alike."""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import audiorep
from audiorep.backbones import BackboneOutput, register_backbone
from audiorep.backbones.base import unsupported
from audiorep.encoder import EmbedConfig, Encoder, EncoderConfig
from audiorep.frontends import FbankConfig

FIXTURES = Path(__file__).parent / "fixtures" / "encoders_v0_1"


@dataclass(frozen=True)
class FrameMLPConfig:
    kind: str = "test_frame_mlp"
    in_features: int = 32
    dim: int = 24
    max_frames: int = 300


class FrameMLP(nn.Module):
    """One token per fbank frame: a 2-layer MLP, a cls token that is the mean of the frames."""

    def __init__(self, cfg: FrameMLPConfig, hop_s: float):
        super().__init__()
        self.cfg, self.hop_s = cfg, hop_s
        self.dim, self.in_features, self.num_layers = cfg.dim, cfg.in_features, 2
        self.frames = (1, cfg.max_frames)
        self.blocks = nn.ModuleList([nn.Linear(cfg.in_features, cfg.dim), nn.Linear(cfg.dim, cfg.dim)])
        self.norm = nn.LayerNorm(cfg.dim)

    def layer_id(self, name: str) -> int:
        return int(name.split(".")[1]) + 1 if name.startswith("blocks.") else self.num_layers + 1

    def no_weight_decay(self) -> set[str]:
        return set()

    def forward(self, feats, keep=None, mask=None, padding=None, layers=None) -> BackboneOutput:
        unsupported(self.cfg.kind, keep=keep, mask=mask, padding=padding)
        x = feats.transpose(1, 2)  # [B, T, C]
        hidden = []
        for i, block in enumerate(self.blocks):
            x = F.gelu(block(x))
            if layers is not None and i in layers:
                hidden.append(torch.cat([x.mean(1, keepdim=True), x], 1))
        tokens = self.norm(torch.cat([x.mean(1, keepdim=True), x], dim=1))  # [B, 1 + T, D]
        times = torch.arange(feats.shape[-1], device=feats.device) * self.hop_s  # frame i starts at i hops
        return BackboneOutput(tokens, 1, times, hidden=hidden if layers is not None else None)


register_backbone(FrameMLPConfig, FrameMLP)
CONFIG = EncoderConfig(name="frame-mlp", frontend=FbankConfig(n_mels=32), backbone=FrameMLPConfig(), pool="tokens",
                       embed=EmbedConfig(timestamps="tokens", scene_hop_s=1.0))


def tones(folder: Path, sr: int = 16000) -> Path:
    """A labelled manifest of 8 one-second tones (two classes)."""
    t = np.arange(sr) / sr
    rows = ["path,labels"]
    for i in range(8):
        label = "low" if i % 2 else "high"
        wave = 0.3 * np.sin(2 * np.pi * (300 if label == "low" else 3000) * t) + 0.01 * np.random.default_rng(i).standard_normal(sr)
        audiorep.audio.write(folder / f"{i}.wav", wave.astype(np.float32), sr)
        rows.append(f"{i}.wav,{label}")
    (folder / "clips.csv").write_text("\n".join(rows) + "\n")
    return folder / "clips.csv"


@pytest.mark.usefixtures("one_thread")
def test_a_backbone_kind_defined_outside_the_package_trains_embeds_and_passes_hear(tmp_path, monkeypatch):
    from audiorep.objectives import RECIPES
    from audiorep.runs import run_recipe

    manifest = tones(tmp_path)
    run = tmp_path / "run"
    overrides = ["steps=20", "batch_size=4", "lr=3e-3", "warmup_steps=2", "log_every=1", "data.crop_s=1.0",
                 "data.workers=0", "data.balanced=false", "layer_decay=0.8", "objective.loss=ce",
                 "objective.mixup_alpha=0", "objective.time_mask=0", "objective.freq_mask=0",
                 "objective.patchout_time=0", "objective.patchout_freq=0"]
    run_recipe(RECIPES["passt"], CONFIG, str(manifest), run, overrides)
    losses = [float(r.split(",")[2]) for r in (run / "log.csv").read_text().splitlines()[1:]]
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses

    enc = audiorep.load(str(run))  # config.json names the kind; the registry builds it
    assert isinstance(enc.backbone, FrameMLP) and enc.config.num_classes == 2
    from audiorep.objectives import Supervised, SupervisedConfig
    from audiorep.runs import init_objective
    fresh = Supervised(Encoder(CONFIG), SupervisedConfig(patchout_time=0, patchout_freq=0), num_classes=2)
    init_objective(fresh, run)  # `audiorep pretrain ... --init RUN`
    for name, value in enc.state_dict().items():
        assert torch.equal(fresh.encoder.state_dict()[name], value), name
    wave = np.sin(2 * np.pi * 300 * np.arange(int(2.5 * 16000)) / 16000).astype(np.float32)
    assert audiorep.scene_embeddings(enc, wave, 16000).shape == (1, 24)
    emb, ts = audiorep.timestamp_embeddings(enc, wave, 16000)
    # 50 ms timestamps map to the nearest frame: frame i starts at i * 10 ms, so every
    # timestamp lands exactly on a frame and takes that frame's token
    frames = enc.frontend.num_frames(len(wave))
    with torch.no_grad():
        tokens = enc(torch.from_numpy(wave)[None]).patches[0]  # [T, D], one window (2.5 s < 3 s span)
    for k in (0, 7, 30):
        assert float(ts[0, k]) == 50.0 * k
        torch.testing.assert_close(emb[0, k], tokens[min(5 * k, frames - 1)])

    tf = types.ModuleType("tensorflow")
    tf.Module = type("Module", (), {})
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    from hearvalidator.validate import ValidateModel
    ValidateModel("audiorep.hear", str(run / "encoder"), device="cpu")()


@pytest.mark.parametrize("name", ["passt-tiny", "audiomae-tiny"])
def test_encoders_saved_before_the_contract_load_and_embed_identically(name):
    """Folders written by audiorep 0.1 (no `kind` in the backbone config, pool="patches",
    embeddings [features, logits]) with the embeddings that code computed."""
    enc = audiorep.load(str(FIXTURES / name))
    ref = np.load(FIXTURES / name / "embeddings.npz")
    sr = enc.sample_rate
    rng = np.random.default_rng(0)
    t = np.arange(int(3.3 * sr)) / sr
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    np.testing.assert_allclose(audiorep.scene_embeddings(enc, wave, sr).numpy(), ref["scene"], atol=1e-5, rtol=1e-5)
    emb, ts = audiorep.timestamp_embeddings(enc, wave, sr)
    np.testing.assert_allclose(emb.numpy(), ref["timestamp"], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(ts.numpy(), ref["ts"])


def test_unknown_kinds_and_misfit_parts_are_refused():
    with pytest.raises(ValueError, match="unknown backbone kind 'nope'"):
        audiorep.config.from_dict(EncoderConfig, {"backbone": {"kind": "nope"}})
    with pytest.raises(ValueError, match="frontend gives 128 feature channels, the backbone expects 32"):
        Encoder(EncoderConfig(frontend=FbankConfig(), backbone=FrameMLPConfig(), pool="tokens"))
    with pytest.raises(ValueError, match="does not take keep"):
        Encoder(CONFIG)(torch.zeros(1, 16000), keep=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="patchout needs a backbone with a token grid"):
        from audiorep.objectives import Supervised, SupervisedConfig
        Supervised(Encoder(CONFIG), SupervisedConfig(), num_classes=2)
