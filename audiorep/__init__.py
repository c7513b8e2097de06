"""audiorep: general-purpose audio representations on shared parts.

    import audiorep
    enc = audiorep.load("passt-s")                      # released weights (downloaded once)
    emb = enc.scene_embeddings(wave, sample_rate)       # [B, D]
    ts_emb, ts = enc.timestamp_embeddings(wave, sample_rate)  # [B, T, D], [B, T] ms
"""
from __future__ import annotations

from pathlib import Path

from .encoder import Encoder, EncoderConfig
from .presets import list_presets

__all__ = ["Encoder", "EncoderConfig", "load", "list_presets"]


def load(name_or_path: str, weights: str | None = None, random_init: bool = False, tag: str | None = None,
         overrides: list[str] | None = None) -> Encoder:
    """An encoder from a preset name, a saved encoder folder or a training run folder.

    Presets load their released weights (tag, or the default release) unless `weights`
    (a path or URL, official or audiorep format) is given or `random_init` is set;
    presets without released weights start at random init.
    """
    from . import config, convert, presets

    path = Path(name_or_path)
    for folder in (path, path / "encoder"):
        if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
            encoder = Encoder.load(folder)
            if random_init:  # the same architecture, fresh weights
                return Encoder(encoder.config).eval()
            if weights:
                convert.load_weights(encoder, weights)
            return encoder
    cfg = config.override(presets.get(name_or_path), overrides or [])
    encoder = Encoder(cfg)
    release = None if (weights or random_init) else convert.preset_weights(name_or_path, tag)
    if weights or release:
        convert.load_weights(encoder, weights or convert.fetch(release.url, release.sha256))
    return encoder.eval()
