"""audiorep: general-purpose audio representations on shared parts.

    import audiorep
    enc = audiorep.load("passt-s")                                   # released weights (downloaded once)
    emb = audiorep.scene_embeddings(enc, wave, sample_rate)          # [B, D]
    ts_emb, ts = audiorep.timestamp_embeddings(enc, wave, sample_rate)  # [B, T, D], [B, T] ms
"""
from __future__ import annotations

from .embed import EmbedConfig, scene_embeddings, timestamp_embeddings
from .encoder import Encoder, EncoderConfig
from .models import load
from .presets import list_presets

__all__ = ["EmbedConfig", "Encoder", "EncoderConfig", "list_presets", "load", "scene_embeddings",
           "timestamp_embeddings"]
