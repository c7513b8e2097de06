"""Encoder = frontend + backbone (+ optional classifier head): the unit that is saved,
loaded, embedded and shipped. Its frozen config travels with its weights.

Any registered frontend and backbone kind goes (frontends/__init__.py, backbones/base.py);
the encoder checks that they fit, pools tokens to one vector and knows how many samples
its backbone takes at most (its span) and at least.
"""
from __future__ import annotations

import json
import math
import numbers
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
    batch_size: int = 32                # at most this many windows, and seconds of audio, per forward

    def __post_init__(self):
        for name in ("levels", "layers", "rf_ms"):  # lists from Python are fine; a string is not a tuple
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            elif not isinstance(value, tuple):
                raise ValueError(f"EmbedConfig.{name}={value!r}: expected a tuple, e.g. {EMBED_EXAMPLES[name]}")
        if not self.levels or len(set(self.levels)) != len(self.levels) or not set(self.levels) <= set(LEVELS):
            raise ValueError(f"EmbedConfig.levels={self.levels!r}: expected distinct levels out of {LEVELS}")
        for layer in self.layers:
            if not is_int(layer) or layer < 0:
                raise ValueError(f"EmbedConfig.layers={self.layers!r}: expected block indices >= 0")
        if not self.rf_ms or not all(is_positive(rf) for rf in self.rf_ms):
            raise ValueError(f"EmbedConfig.rf_ms={self.rf_ms!r}: expected one or more receptive fields > 0 ms")
        for name in ("hop_ms", "scene_hop_s"):
            if not is_positive(getattr(self, name)):
                raise ValueError(f"EmbedConfig.{name}={getattr(self, name)!r}: expected a number > 0")
        if not (is_positive(self.scene_window_s) or self.scene_window_s == 0):
            raise ValueError(f"EmbedConfig.scene_window_s={self.scene_window_s!r}: expected 0 (the model's span) "
                             "or a number of seconds > 0")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"EmbedConfig.batch_size={self.batch_size!r}: expected an integer >= 1")
        if self.timestamps not in TIMESTAMP_METHODS:
            raise ValueError(f"EmbedConfig.timestamps={self.timestamps!r}: expected one of {TIMESTAMP_METHODS}")
        if self.scene_pad not in SCENE_PADS:
            raise ValueError(f"EmbedConfig.scene_pad={self.scene_pad!r}: expected one of {SCENE_PADS}")

    def check_rate(self, sample_rate: int) -> "EmbedConfig":
        """The settings that depend on the encoder's rate: a timestamp hop of at least one sample."""
        if self.hop_ms * sample_rate < 1000:
            raise ValueError(f"EmbedConfig.hop_ms={self.hop_ms!r}: shorter than one sample at {sample_rate} Hz; "
                             f"expected >= {1000 / sample_rate:.4g} ms")
        return self


EMBED_EXAMPLES = {"levels": "('L', 'M')", "layers": "(10, 11)", "rf_ms": "(160.0, 640.0)"}


def is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_positive(x) -> bool:
    """A finite real number > 0 (not a bool, not a string)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0


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
        config.embed.check_rate(self.sample_rate)
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
        """[B, S] waveform -> BackboneOutput (backbones/base.py); layers="all": every block's output
        in `hidden` (one forward, any backbone kind)."""
        if isinstance(layers, str):
            if layers != "all":
                raise ValueError(f"layers={layers!r}: expected block indices or 'all'")
            layers = list(range(self.backbone.num_layers))
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
        """An encoder folder written by `save`; a missing, malformed or non-finite file is a
        ValueError naming it."""
        path = Path(path)
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path}: not a saved encoder ({name} missing)")
        config_path, weights_path = path / "config.json", path / "model.safetensors"
        try:
            cfg = from_dict(EncoderConfig, json.loads(config_path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{config_path}: not valid JSON ({e})") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{config_path}: not an encoder config ({e})") from None
        encoder = cls(cfg)
        try:
            state = load_file(str(weights_path))
        except Exception as e:  # safetensors raises its own error types for truncated or foreign files
            raise ValueError(f"{weights_path}: not a readable safetensors file ({e})") from None
        check_finite(state, str(weights_path))
        try:
            encoder.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{weights_path} does not fit {config_path}: {str(e).splitlines()[1].strip()}") from None
        return encoder.eval()


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or Inf (a diverged or corrupted checkpoint), naming the tensor."""
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{where}: {name} holds {bad} NaN/Inf values; refusing to load these weights")
