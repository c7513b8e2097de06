"""Per-layer frame arrays of one split, memory-mapped: what a layer-weighted downstream reads.

Beside the HEAR kit's files in an embeddings folder, a split `S` can hold
    S.layers.f16         raw float16 [frames, L, D], C order, clips one after another (np.memmap)
    S.layer-times.f64    raw float64 [frames]: each frame's time in seconds from its clip's start
    S.layers.json        {"layers": [L names], "dim": D, "frames": F, "files": [...], "offsets": [...],
                          "lengths": [...]}: written last, so a split with it is complete
Scene rows are clips of one frame. float16 halves the disk of all-layer features (LibriSpeech
train-clean-100 through a 12-block, 768-wide encoder at 50 frames/s: ~18M frames x 13 x 768 x
2 bytes = 360 GB); a reader converts each clip it takes to float32.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiorep.files import write_json

from .embeddings import EmbeddingError


def paths(folder: Path, split: str) -> tuple[Path, Path, Path]:
    return folder / f"{split}.layers.f16", folder / f"{split}.layer-times.f64", folder / f"{split}.layers.json"


class LayerWriter:
    """Append clips' [T, L, D] frames; `close()` writes the index (the completion marker)."""

    def __init__(self, folder: Path, split: str, layers: list[str]):
        folder.mkdir(parents=True, exist_ok=True)
        self.data, self.times, self.index = paths(folder, split)
        self.index.unlink(missing_ok=True)
        self.layers = list(layers)
        self.files: list[str] = []
        self.lengths: list[int] = []
        self.dim: int | None = None
        self._data = open(self.data, "wb")
        self._times = open(self.times, "wb")

    def add(self, name: str, frames: np.ndarray, times: np.ndarray) -> None:
        """frames [T, L, D] (T >= 1), times [T] seconds."""
        if frames.ndim != 3 or frames.shape[1] != len(self.layers) or len(frames) == 0:
            raise EmbeddingError(f"{self.data}: {name}: frames of shape {frames.shape}, expected [T >= 1, "
                                 f"{len(self.layers)}, D]")
        if self.dim is not None and frames.shape[2] != self.dim:
            raise EmbeddingError(f"{self.data}: {name}: width {frames.shape[2]}, earlier clips {self.dim}")
        self.dim = frames.shape[2]
        self._data.write(np.ascontiguousarray(frames, dtype=np.float16).tobytes())
        self._times.write(np.asarray(times, dtype=np.float64).tobytes())
        self.files.append(name)
        self.lengths.append(len(frames))

    def close(self) -> None:
        self._data.close()
        self._times.close()
        offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(int).tolist() if self.lengths else []
        write_json(self.index, {"layers": self.layers, "dim": self.dim, "frames": int(sum(self.lengths)),
                                "files": self.files, "offsets": offsets, "lengths": self.lengths})

    def abort(self) -> None:
        self._data.close()
        self._times.close()
        for p in (self.data, self.times):
            p.unlink(missing_ok=True)


@dataclass
class LayerSplit:
    """A stored split: `frames(i)` -> float32 [T, L, D] of clip i, `times(i)` -> [T] seconds."""

    layers: list[str]
    files: list[str]
    offsets: list[int]
    lengths: list[int]
    data: np.ndarray   # memmap [F, L, D] float16
    stamps: np.ndarray  # memmap [F] float64

    def frames(self, i: int) -> np.ndarray:
        return np.asarray(self.data[self.offsets[i]:self.offsets[i] + self.lengths[i]], dtype=np.float32)

    def times(self, i: int) -> np.ndarray:
        return np.asarray(self.stamps[self.offsets[i]:self.offsets[i] + self.lengths[i]])

    def __len__(self) -> int:
        return len(self.files)


def is_complete(folder: Path, split: str) -> bool:
    return paths(folder, split)[2].exists()


def read_layers(folder: Path, split: str) -> LayerSplit:
    data, times, index = paths(folder, split)
    if not index.exists():
        raise EmbeddingError(f"{index}: missing (the split's layer frames were not written, or not completely)")
    meta = json.loads(index.read_text())
    shape = (meta["frames"], len(meta["layers"]), meta["dim"] or 0)
    expected = int(np.prod(shape)) * 2
    if os.path.getsize(data) != expected or os.path.getsize(times) != meta["frames"] * 8:
        raise EmbeddingError(f"{data}: {os.path.getsize(data)} bytes, {index.name} says {shape} float16 "
                             f"({expected} bytes)")
    if not meta["frames"]:
        raise EmbeddingError(f"{index}: no frames")
    return LayerSplit(meta["layers"], meta["files"], meta["offsets"], meta["lengths"],
                      np.memmap(data, np.float16, "r", shape=shape), np.memmap(times, np.float64, "r",
                                                                             shape=(meta["frames"],)))
