"""A recipe's run from the command line's words: overrides split by the config they set, `--data`
opened as a dataset or a shard stream, the training crop, the start from another run, the
paper's patchout for a preset; `run_recipe` builds all of them and calls the loop (train.py).

    audiorep pretrain audiomae --data corpus/ --out runs/mae --preset audiomae-tiny steps=2000
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
import torch.nn as nn

from .config import override, to_dict
from .data import ClipDataset, DataConfig, ShardStream
from .presets import patchout_overrides
from .train import TrainConfig, train


def split_overrides(items: list[str]) -> dict[str, list[str]]:
    """`encoder.x=..` -> encoder, `objective.x=..` -> objective, `train.x=..` or `x=..` -> train."""
    parts: dict[str, list[str]] = {"encoder": [], "objective": [], "train": []}
    for item in items:
        head, _, rest = item.partition(".")
        if head in parts and "=" in rest and "=" not in head:
            parts[head].append(rest)
        else:
            parts["train"].append(item)
    return parts


def open_data(spec: str, sample_rate: int, crop_samples: int, cfg: DataConfig, split: str = "train", views: int = 1):
    """(dataset or shard stream, vocabulary or None) for `--data`."""
    from .data import clips_from, is_shards, list_shards, shard_vocabulary

    if is_shards(spec):
        vocabulary = shard_vocabulary(spec)
        return ShardStream(list_shards(spec), sample_rate, crop_samples, 1, cfg, vocabulary, views=views), vocabulary
    clips, vocabulary = clips_from(spec, split)
    return ClipDataset(clips, sample_rate, crop_samples, cfg, vocabulary, views), vocabulary


def crop_samples(encoder, cfg: DataConfig) -> int:
    """Training crop: data.crop_s, or the frames the backbone was built for (`train_frames`,
    else the most it accepts)."""
    if cfg.crop_s > 0:
        return round(cfg.crop_s * encoder.sample_rate)
    backbone = encoder.backbone
    return encoder.crop_samples(getattr(backbone, "train_frames", backbone.frames[1]))


def init_objective(objective: nn.Module, run: str | Path) -> None:
    """Start from another run: the objective's own `init_from(run)` when it has one (e.g.
    EnCodecMAE self-training), else the run's encoder weights (every name and shape must fit;
    a run without an encoder yet is named as such, as audiorep.load does)."""
    from .models import load

    if hasattr(objective, "init_from"):
        objective.init_from(run)
        return
    objective.encoder.load_state_dict(load(str(run)).state_dict())


def preset_patchout(recipe, encoder) -> list[str]:
    """The paper's patchout for the encoder's preset (presets.PATCHOUT), for recipes with patchout fields."""
    if not {"patchout_time", "patchout_freq"} <= {f.name for f in fields(recipe.config)}:
        return []
    grid = getattr(encoder.backbone, "grid", None)
    return patchout_overrides(encoder.config.name, grid(encoder.backbone.cfg.max_frames)) if grid else []


def run_recipe(recipe, encoder_cfg, data_spec: str, out: str | Path, overrides: list[str],
               stop_after: int | None = None, run_config: dict | None = None, init: str | None = None) -> nn.Module:
    """Build the encoder, data and objective of `recipe` (from the run `init` when given) and
    train them (all processes)."""
    from .encoder import Encoder

    parts = split_overrides(overrides)
    encoder_cfg = override(encoder_cfg, parts["encoder"])
    cfg = override(TrainConfig(), list(recipe.defaults) + parts["train"])
    torch.manual_seed(cfg.seed)
    encoder = Encoder(encoder_cfg)
    objective_cfg = override(recipe.config(), list(recipe.objective_defaults) + preset_patchout(recipe, encoder)
                             + parts["objective"])
    data, vocabulary = open_data(data_spec, encoder.sample_rate, crop_samples(encoder, cfg.data), cfg.data,
                                 views=recipe.views)
    objective = recipe.objective(encoder, objective_cfg, num_classes=len(vocabulary or []))
    if init is not None:
        init_objective(objective, init)
    run_config = dict(run_config or {}, recipe=recipe.name, data=str(data_spec), encoder=to_dict(encoder_cfg),
                      objective=to_dict(objective_cfg), vocabulary=vocabulary, **({"init": str(init)} if init else {}))
    return train(objective, data, cfg, out, run_config, stop_after)
