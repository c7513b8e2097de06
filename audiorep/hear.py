"""HEAR 2021 API over audiorep encoders.

    hear-validator audiorep.hear --model passt-s       # a preset (released weights)
    hear-validator audiorep.hear --model runs/my_run   # a saved encoder or a training run
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import load

DEFAULT_MODEL = "passt-s"


class HearModel(nn.Module):
    """What the HEAR API expects of a model: sample_rate and the two embedding sizes."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder.eval()
        self.sample_rate = encoder.sample_rate
        self.scene_embedding_size = encoder.embedding_size("scene")
        self.timestamp_embedding_size = encoder.embedding_size("timestamp")


def load_model(model_file_path: str = "", random_init: bool = False, weights: str | None = None,
               overrides: list[str] | None = None) -> HearModel:
    """model_file_path: a preset name, a saved encoder folder or a run folder ('' = passt-s).
    `overrides` change the preset's fields, e.g. ["embed.levels=L,M", "embed.rf_ms=160,640"]."""
    return HearModel(load(model_file_path or DEFAULT_MODEL, weights=weights, random_init=random_init,
                          overrides=overrides))


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """[n, samples] at model.sample_rate -> float32 [n, scene_embedding_size]."""
    return model.encoder.scene_embeddings(audio, model.sample_rate).to(audio.device)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, samples] -> (float32 [n, T, timestamp_embedding_size], float32 [n, T] in ms)."""
    emb, ts = model.encoder.timestamp_embeddings(audio, model.sample_rate)
    return emb.to(audio.device), ts.to(audio.device)
