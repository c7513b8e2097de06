"""Encoder = frontend + backbone (+ optional classifier head): the unit that is saved,
loaded, embedded and shipped. Its frozen config travels with its weights."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from . import embed
from .backbones import ViT, ViTConfig
from .config import dumps, from_dict
from .frontends import FbankConfig, PasstMelConfig, build_frontend

POOLS = ("prefix", "patches")


@dataclass(frozen=True)
class EncoderConfig:
    name: str = "custom"
    frontend: PasstMelConfig | FbankConfig = field(default_factory=PasstMelConfig)
    backbone: ViTConfig = field(default_factory=ViTConfig)
    num_classes: int = 0     # > 0: PaSST-style head LayerNorm + Linear on the pooled features
    pool: str = "prefix"     # "prefix": mean of cls/dist tokens; "patches": mean of patch tokens
    embed: embed.EmbedConfig = field(default_factory=embed.EmbedConfig)


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        if config.pool not in POOLS:
            raise ValueError(f"EncoderConfig.pool={config.pool!r}: expected one of {POOLS}")
        if config.pool == "prefix" and config.backbone.prefix == 0:
            raise ValueError("EncoderConfig.pool='prefix' needs a backbone with prefix tokens")
        if config.frontend.n_mels != config.backbone.n_mels:
            raise ValueError(f"frontend gives {config.frontend.n_mels} mel bins, backbone expects {config.backbone.n_mels}")
        self.config = config
        self.frontend = build_frontend(config.frontend)
        self.backbone = ViT(config.backbone)
        if config.num_classes:
            self.head = nn.Sequential(nn.LayerNorm(config.backbone.dim), nn.Linear(config.backbone.dim, config.num_classes))
        self.sample_rate = self.frontend.sample_rate
        self.span_samples = self._samples_for(self.backbone.max_input_frames(), at_most=True)
        self.min_samples = self._samples_for(config.backbone.patch[1], at_most=False)

    def _frames(self, n: int) -> int:
        try:
            return self.frontend.num_frames(n)
        except ValueError:  # shorter than the frontend's minimum
            return 0

    def _samples_for(self, frames: int, at_most: bool) -> int:
        """Fewest samples giving >= `frames` frames, or (at_most) most samples giving <= `frames`."""
        lo, hi = 1, 4 * frames * max(1, round(self.frontend.hop_s * self.sample_rate)) + 4096
        target = frames + 1 if at_most else frames
        while lo < hi:  # first n with _frames(n) >= target (num_frames is non-decreasing)
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if self._frames(mid) < target else (lo, mid)
        return lo - 1 if at_most else lo

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def pad_short(self, waves: torch.Tensor) -> torch.Tensor:
        """Zero-pad [B, S] audio shorter than one patch of frames."""
        short = self.min_samples - waves.shape[-1]
        return nn.functional.pad(waves, (0, short)) if short > 0 else waves

    def pool(self, tokens: torch.Tensor, prefix: int) -> torch.Tensor:
        """[B, P + K, D] -> [B, D]: mean of the prefix tokens or of the patch tokens."""
        return tokens[:, :prefix].mean(1) if self.config.pool == "prefix" else tokens[:, prefix:].mean(1)

    def forward(self, wave: torch.Tensor, keep=None, mask=None, layers=None):
        """[B, S] waveform -> BackboneOutput (see backbones/vit.py)."""
        return self.backbone(self.frontend(wave), keep=keep, mask=mask, layers=layers)

    def level_dims(self) -> dict[str, int]:
        return {"L": self.config.frontend.n_mels, "M": self.config.backbone.dim, "H": self.config.num_classes}

    def embedding_size(self, kind: str) -> int:
        cfg = self.config.embed
        width = sum(self.level_dims()[level] for level in cfg.levels)
        return width * len(cfg.rf_ms) if kind == "timestamp" and cfg.timestamps == "window" else width

    def scene_embeddings(self, audio, sample_rate: int, cfg: embed.EmbedConfig | None = None) -> torch.Tensor:
        return embed.scene_embeddings(self, audio, sample_rate, cfg)

    def timestamp_embeddings(self, audio, sample_rate: int, cfg: embed.EmbedConfig | None = None):
        return embed.timestamp_embeddings(self, audio, sample_rate, cfg)

    def save(self, path: str | Path) -> None:
        """Write `model.safetensors` + `config.json` into folder `path` (atomically)."""
        from .files import write_text

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
