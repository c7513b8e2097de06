"""`load()`: an encoder from a preset name, a saved encoder folder or a training run folder,
and `identity()`: what names an encoder's weights, for caches."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from . import config, convert, presets
from .encoder import Encoder

RANDOM_INIT_SEED = 0  # every random-init encoder is built from torch.manual_seed(0): one model per config


def preset_weights(name: str, tag: str | None) -> presets.Weights | None:
    tag = tag or presets.DEFAULT_TAG.get(name)
    return presets.WEIGHTS.get((name, tag)) if tag else None


def seeded(cfg) -> Encoder:
    """Encoder(cfg) at the fixed seed, leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return Encoder(cfg)


def encoder_folder(path: Path) -> Path | None:
    """The saved encoder in `path` (an encoder folder or a run folder), None when `path` is
    not a folder; a folder that is neither raises naming what is missing."""
    if not path.is_dir():
        return None
    for folder in (path, path / "encoder"):
        if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
            return folder
    if (path / "checkpoints").is_dir() or (path / "log.csv").exists() or is_run_config(path / "config.json"):
        raise FileNotFoundError(f"{path}: a training run without an encoder yet ({path / 'encoder'} is written "
                                "with the first checkpoint)")
    if (path / "config.json").exists() or (path / "model.safetensors").exists():
        return path  # Encoder.load names the missing file
    raise FileNotFoundError(f"{path}: not a saved encoder (config.json + model.safetensors) nor a run folder")


def is_run_config(path: Path) -> bool:
    """Whether `path` is a training run's config.json (it records the train settings)."""
    try:
        return "train" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def load(name_or_path: str, weights: str | None = None, random_init: bool = False, tag: str | None = None,
         overrides: list[str] | None = None, part: str | None = None) -> Encoder:
    """Presets load their released weights (tag, or the default release) unless `weights`
    (a path or URL, in the preset's official format or audiorep's) is given or `random_init`
    is set; presets without released weights start at random init, always the same one
    (RANDOM_INIT_SEED). `part`: the entry of a teacher/student checkpoint to read (default:
    the teacher)."""
    try:
        folder = encoder_folder(Path(name_or_path))
    except FileNotFoundError:
        if name_or_path not in presets.PRESETS:
            raise
        folder = None  # e.g. an output folder named like the preset
    if folder is not None:
        encoder = Encoder.load(folder)
        if random_init:  # the same architecture, fresh weights
            return seeded(encoder.config).eval()
        if weights:
            convert.load_weights(encoder, weights, presets.FORMATS.get(encoder.config.name), part)
        return encoder
    cfg = config.override(presets.get(name_or_path), overrides or [])
    encoder = seeded(cfg)
    release = None if (weights or random_init) else preset_weights(name_or_path, tag)
    if weights:
        convert.load_weights(encoder, weights, presets.FORMATS.get(name_or_path), part)
    elif release:
        convert.load_weights(encoder, convert.fetch(release.url, release.sha256), release.format, part)
    return encoder.eval()


def identity(encoder: Encoder) -> str:
    """sha256 of the encoder's config and every tensor of its state (names, dtypes, shapes,
    bytes): equal exactly when two encoders compute the same function from the same weights."""
    h = hashlib.sha256(config.dumps(encoder.config).encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()
