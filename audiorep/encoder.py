"""Encoder = frontend + backbone (+ optional classifier head): the unit that is saved,
loaded, embedded and shipped. Its frozen config travels with its weights.

Any registered frontend and backbone kind goes (frontends/__init__.py, backbones/base.py);
the encoder checks that they fit, pools tokens to one vector and knows how many samples
its backbone takes at most (its span) and at least.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from .backbones import BACKBONES, BackboneOutput, ViTConfig, build_backbone
from .config import dumps, from_dict
from .files import write_text
from .frontends import FRONTENDS, PasstMelConfig, build_frontend

POOLS = ("prefix", "tokens")
POOL_ALIASES = {"patches": "tokens"}  # the name configs written before 0.2 use
LEVELS = ("L", "M", "H")
TIMESTAMP_METHODS = ("window", "tokens")
SCENE_PADS = ("none", "reflect")


@dataclass(frozen=True)
class EmbedConfig:
    """How embeddings are taken (embed.py); part of the encoder's config so presets carry it."""
    levels: tuple[str, ...] = ("M",)    # any of L (frontend), M (features), H (logits), concatenated in this order
    layers: tuple[int, ...] = ()        # M from these blocks (mean of their pooled outputs); () = final norm
    timestamps: str = "window"          # "window": a receptive field per timestamp; "tokens": token times
    rf_ms: tuple[float, ...] = (160.0,)  # receptive fields of "window" timestamps; (160, 640) = 2RF
    hop_ms: float = 50.0                # timestamp hop
    scene_hop_s: float = 2.5            # hop between windows of audio longer than one window
    scene_window_s: float = 0.0         # window for long audio; 0 = the model's span
    scene_pad: str = "none"             # long audio: "reflect" pads half a window at each end (hear21passt)
    batch_size: int = 32                # windows per forward

    def __post_init__(self):
        for level in self.levels:
            if level not in LEVELS:
                raise ValueError(f"EmbedConfig.levels: {level!r} is not one of {LEVELS}")
        if self.timestamps not in TIMESTAMP_METHODS:
            raise ValueError(f"EmbedConfig.timestamps={self.timestamps!r}: expected one of {TIMESTAMP_METHODS}")
        if self.scene_pad not in SCENE_PADS:
            raise ValueError(f"EmbedConfig.scene_pad={self.scene_pad!r}: expected one of {SCENE_PADS}")


@dataclass(frozen=True)
class EncoderConfig:
    name: str = "custom"
    frontend: Annotated[object, FRONTENDS] = field(default_factory=PasstMelConfig)
    backbone: Annotated[object, BACKBONES] = field(default_factory=ViTConfig)
    num_classes: int = 0     # > 0: a classifier head on the pooled features (HEAR level H)
    head_norm: bool = True   # the head is LayerNorm + Linear (PaSST) or Linear alone (EAT)
    pool: str = "prefix"     # "prefix": mean of the cls-like tokens; "tokens": mean of the other tokens
    embed: EmbedConfig = field(default_factory=EmbedConfig)

    def __post_init__(self):
        object.__setattr__(self, "pool", POOL_ALIASES.get(self.pool, self.pool))
        if self.pool not in POOLS:
            raise ValueError(f"EncoderConfig.pool={self.pool!r}: expected one of {POOLS}")


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.frontend = build_frontend(config.frontend)
        self.backbone = build_backbone(config.backbone, self.frontend.hop_s)
        expected = self.backbone.in_features
        if expected is not None and expected != self.frontend.features:
            raise ValueError(f"encoder {config.name!r}: the frontend gives {self.frontend.features} feature channels, "
                             f"the backbone expects {expected}")
        if config.num_classes:
            dim = self.backbone.dim
            norm = [nn.LayerNorm(dim)] if config.head_norm else []
            self.head = nn.Sequential(*norm, nn.Linear(dim, config.num_classes))
        self.sample_rate = self.frontend.sample_rate
        min_frames, max_frames = self.backbone.frames
        self.min_samples = self.frontend.samples_for(min_frames)
        self.span_samples = self.frontend.samples_for(max_frames + 1) - 1  # most samples the backbone takes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def crop_samples(self, frames: int) -> int:
        """Most samples that give at most `frames` frames (training crops)."""
        return max(self.min_samples, self.frontend.samples_for(frames + 1) - 1)

    def pad_short(self, waves: torch.Tensor) -> torch.Tensor:
        """Zero-pad [B, S] audio shorter than the backbone's shortest input."""
        short = self.min_samples - waves.shape[-1]
        return nn.functional.pad(waves, (0, short)) if short > 0 else waves

    def pool(self, out: BackboneOutput, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """-> [B, D]: mean of the prefix tokens, or of the other tokens (padding excluded).
        `tokens` [B, P + K, D]: pool these (e.g. a hidden layer) instead of out.tokens."""
        tokens = out.tokens if tokens is None else tokens
        if self.config.pool == "prefix":
            if out.prefix == 0:
                raise ValueError(f"encoder {self.config.name!r}: pool='prefix' needs a backbone with prefix tokens")
            return tokens[:, :out.prefix].mean(1)
        rest = tokens[:, out.prefix:]  # [B, K, D]
        if out.padding is None:
            return rest.mean(1)
        weight = (~out.padding).to(rest.dtype)[..., None]  # [B, K, 1]
        return (rest * weight).sum(1) / weight.sum(1).clamp_min(1)

    def forward(self, wave: torch.Tensor, keep=None, mask=None, padding=None, layers=None) -> BackboneOutput:
        """[B, S] waveform -> BackboneOutput (backbones/base.py)."""
        return self.backbone(self.frontend(wave), keep=keep, mask=mask, padding=padding, layers=layers)

    def with_head(self, num_classes: int) -> "Encoder":
        """A new encoder with the same weights and a fresh head of `num_classes` outputs
        (this one unchanged; the same encoder back when its head already fits)."""
        if num_classes == self.config.num_classes:
            return self
        new = Encoder(replace(self.config, num_classes=num_classes)).to(self.device)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("head.")}
        new.load_state_dict(state, strict=False)
        return new

    def level_dims(self) -> dict[str, int]:
        return {"L": self.frontend.features, "M": self.backbone.dim, "H": self.config.num_classes}

    def embedding_size(self, kind: str) -> int:
        cfg = self.config.embed
        width = sum(self.level_dims()[level] for level in cfg.levels)
        return width * len(cfg.rf_ms) if kind == "timestamp" and cfg.timestamps == "window" else width

    def save(self, path: str | Path) -> None:
        """Write `model.safetensors` + `config.json` into folder `path` (atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = path / ".model.safetensors.tmp"
        save_file(tensors, str(tmp), metadata={"format": "audiorep"})
        tmp.replace(path / "model.safetensors")
        write_text(path / "config.json", dumps(self.config))

    @classmethod
    def load(cls, path: str | Path) -> "Encoder":
        path = Path(path)
        for name in ("config.json", "model.safetensors"):
            if not (path / name).exists():
                raise FileNotFoundError(f"{path}: not a saved encoder ({name} missing)")
        encoder = cls(from_dict(EncoderConfig, json.loads((path / "config.json").read_text())))
        encoder.load_state_dict(load_file(str(path / "model.safetensors")))
        return encoder.eval()
