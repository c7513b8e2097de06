"""Training data: clip lists (folders, manifests, HEAR tasks), crops, samplers, tar shards.

`clips_from(spec)` reads what `--data` names: a HEAR task folder (its train split), a
folder of audio files, a .csv/.jsonl manifest; tar shards (`write_shards`, `audiorep shards`)
are streamed by `ShardStream`, whose items are ClipDataset's (the same crops for the same
seed; "index" = the shard's position x INDEX_STRIDE + the sample's order in it).
"""
from __future__ import annotations

import os
from pathlib import Path

from .datasets import Clip, ClipDataset, DataConfig, folder_clips, manifest_clips, multi_hot, task_clips
from .samplers import StepSampler, class_balanced_weights
from .shard_stream import ShardStream
from .shards import list_shards, shard_vocabulary, write_shards


def is_shards(spec: str | os.PathLike) -> bool:
    path = Path(spec)
    return path.suffix == ".tar" or "*" in path.name or (path.is_dir() and any(path.glob("*.tar")))


def clips_from(spec: str | os.PathLike, split: str = "train") -> tuple[list[Clip], list[str] | None]:
    """(clips, vocabulary or None) from a task folder, a manifest or a folder of audio."""
    path = Path(spec)
    if (path / "task_metadata.json").exists():
        return task_clips(path, split)
    if path.suffix in (".csv", ".jsonl"):
        clips = manifest_clips(path)
        labels = sorted({label for clip in clips for label in clip.labels})
        return clips, labels or None
    if path.is_dir():
        return folder_clips(path), None
    raise FileNotFoundError(f"{spec}: not a task folder, a .csv/.jsonl manifest, a folder of audio or tar shards")


__all__ = ["Clip", "ClipDataset", "DataConfig", "ShardStream", "StepSampler", "class_balanced_weights",
           "clips_from", "folder_clips", "is_shards", "list_shards", "manifest_clips", "multi_hot",
           "shard_vocabulary", "task_clips", "write_shards"]
