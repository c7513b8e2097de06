"""HEAR 2021 API over audiorep encoders.

    hear-validator audiorep.hear --model passt-s       # a preset (released weights)
    hear-validator audiorep.hear --model runs/my_run   # a saved encoder or a training run
    hear-validator audiorep.hear.passt.base2level      # hear21passt's modules by name (hear/passt/)

HEAR models declare one of the HEAR sample rates. An encoder whose own rate is one of
them takes audio at that rate; any other (EnCodecMAE's 24 kHz) declares the lowest HEAR
rate at or above its own (so no band is lost) and resamples every batch. As hear21passt,
`load_model` places the model on CUDA when one is present (`device=` to choose).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..audio import HEAR_RATES
from ..embed import frame_embeddings, scene_embeddings, timestamp_embeddings
from ..models import load

DEFAULT_MODEL = "passt-s"
# hear21passt's `mode` -> the levels of its [logits, features] outputs
MODES = {"all": ("H", "M"), "embed_only": ("M",), "logits": ("H",)}


def hear_rate(rate: int) -> int:
    return rate if rate in HEAR_RATES else min((r for r in HEAR_RATES if r >= rate), default=max(HEAR_RATES))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HearModel(nn.Module):
    """What the HEAR API expects of a model: sample_rate and the two embedding sizes.
    `frame_window` > 0 (samples) appends hear21passt's mel level to every timestamp embedding:
    the frontend frames of that window, flattened (embed.frame_embeddings)."""

    def __init__(self, encoder, sample_rate: int | None = None, frame_window: int = 0):
        super().__init__()
        self.encoder = encoder.eval()
        self.sample_rate = sample_rate or hear_rate(encoder.sample_rate)
        if self.sample_rate not in HEAR_RATES:
            raise ValueError(f"sample_rate={self.sample_rate}: a HEAR model declares one of {HEAR_RATES}")
        self.frame_window = frame_window
        frames = encoder.frontend.features * encoder.frontend.num_frames(frame_window) if frame_window else 0
        self.scene_embedding_size = encoder.embedding_size("scene")
        self.timestamp_embedding_size = encoder.embedding_size("timestamp") + frames


def mode_overrides(mode: str | None) -> list[str]:
    """hear21passt's `mode` as an override of the levels (None: the preset's own)."""
    if mode is None:
        return []
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {', '.join(MODES)} (hear21passt's modes)")
    return [f"embed.levels={','.join(MODES[mode])}"]


def load_model(model_file_path: str = "", mode: str | None = None, random_init: bool = False,
               weights: str | None = None, overrides: list[str] | None = None, sample_rate: int | None = None,
               device: str | torch.device | None = None) -> HearModel:
    """model_file_path: a preset name, a saved encoder folder or a run folder ('' = passt-s).
    `mode`: hear21passt's "all" (logits + features), "embed_only" (features), "logits";
    `overrides` change the preset's fields, e.g. ["embed.levels=L,M", "embed.rf_ms=160,640"];
    `sample_rate`: the HEAR rate to declare (default: the encoder's, or the next HEAR rate up);
    `device`: default CUDA when available, as hear21passt."""
    encoder = load(model_file_path or DEFAULT_MODEL, weights=weights, random_init=random_init,
                   overrides=mode_overrides(mode) + list(overrides or []))
    return HearModel(encoder.to(device or default_device()), sample_rate)


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """[n, samples] at model.sample_rate -> float32 [n, scene_embedding_size]."""
    return scene_embeddings(model.encoder, audio, model.sample_rate).to(audio.device)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, samples] -> (float32 [n, T, timestamp_embedding_size], float32 [n, T] in ms)."""
    emb, ts = timestamp_embeddings(model.encoder, audio, model.sample_rate)
    if model.frame_window:
        emb = torch.cat([emb, frame_embeddings(model.encoder, audio, model.sample_rate, model.frame_window)], -1)
    return emb.to(audio.device), ts.to(audio.device)
