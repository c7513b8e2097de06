"""HEAR 2021 API over audiorep encoders.

    hear-validator audiorep.hear --model passt-s       # a preset (released weights)
    hear-validator audiorep.hear --model runs/my_run   # a saved encoder or a training run

HEAR models declare one of the HEAR sample rates. An encoder whose own rate is one of
them takes audio at that rate; any other (EnCodecMAE's 24 kHz) declares the lowest HEAR
rate at or above its own (so no band is lost) and resamples every batch.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .audio import HEAR_RATES
from .embed import scene_embeddings, timestamp_embeddings
from .models import load

DEFAULT_MODEL = "passt-s"


def hear_rate(rate: int) -> int:
    return rate if rate in HEAR_RATES else min((r for r in HEAR_RATES if r >= rate), default=max(HEAR_RATES))


class HearModel(nn.Module):
    """What the HEAR API expects of a model: sample_rate and the two embedding sizes."""

    def __init__(self, encoder, sample_rate: int | None = None):
        super().__init__()
        self.encoder = encoder.eval()
        self.sample_rate = sample_rate or hear_rate(encoder.sample_rate)
        if self.sample_rate not in HEAR_RATES:
            raise ValueError(f"sample_rate={self.sample_rate}: a HEAR model declares one of {HEAR_RATES}")
        self.scene_embedding_size = encoder.embedding_size("scene")
        self.timestamp_embedding_size = encoder.embedding_size("timestamp")


def load_model(model_file_path: str = "", random_init: bool = False, weights: str | None = None,
               overrides: list[str] | None = None, sample_rate: int | None = None) -> HearModel:
    """model_file_path: a preset name, a saved encoder folder or a run folder ('' = passt-s).
    `overrides` change the preset's fields, e.g. ["embed.levels=L,M", "embed.rf_ms=160,640"];
    `sample_rate`: the HEAR rate to declare (default: the encoder's, or the next HEAR rate up)."""
    encoder = load(model_file_path or DEFAULT_MODEL, weights=weights, random_init=random_init, overrides=overrides)
    return HearModel(encoder, sample_rate)


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """[n, samples] at model.sample_rate -> float32 [n, scene_embedding_size]."""
    return scene_embeddings(model.encoder, audio, model.sample_rate).to(audio.device)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, samples] -> (float32 [n, T, timestamp_embedding_size], float32 [n, T] in ms)."""
    emb, ts = timestamp_embeddings(model.encoder, audio, model.sample_rate)
    return emb.to(audio.device), ts.to(audio.device)
