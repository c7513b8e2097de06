"""`load()`: an encoder from a preset name, a saved encoder folder or a training run folder."""
from __future__ import annotations

from pathlib import Path

from . import config, convert, presets
from .encoder import Encoder


def preset_weights(name: str, tag: str | None) -> presets.Weights | None:
    tag = tag or presets.DEFAULT_TAG.get(name)
    return presets.WEIGHTS.get((name, tag)) if tag else None


def load(name_or_path: str, weights: str | None = None, random_init: bool = False, tag: str | None = None,
         overrides: list[str] | None = None, part: str | None = None) -> Encoder:
    """Presets load their released weights (tag, or the default release) unless `weights`
    (a path or URL, in the preset's official format or audiorep's) is given or `random_init`
    is set; presets without released weights start at random init. `part`: the entry of a
    teacher/student checkpoint to read (default: the teacher)."""
    path = Path(name_or_path)
    for folder in (path, path / "encoder"):
        if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
            encoder = Encoder.load(folder)
            if random_init:  # the same architecture, fresh weights
                return Encoder(encoder.config).eval()
            if weights:
                convert.load_weights(encoder, weights, presets.FORMATS.get(encoder.config.name), part)
            return encoder
    cfg = config.override(presets.get(name_or_path), overrides or [])
    encoder = Encoder(cfg)
    release = None if (weights or random_init) else preset_weights(name_or_path, tag)
    if weights:
        convert.load_weights(encoder, weights, presets.FORMATS.get(name_or_path), part)
    elif release:
        convert.load_weights(encoder, convert.fetch(release.url, release.sha256), release.format, part)
    return encoder.eval()
