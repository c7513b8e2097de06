"""Atomic file writes (a reader never sees a half-written file, an interrupted job never
leaves one), and the layout of a training run's checkpoints."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, np.asarray(array, dtype=np.float32))
    os.replace(tmp, path)


CHECKPOINT = re.compile(r"^step_(\d{7})$")  # RUN/checkpoints/step_XXXXXXX, complete once state.json exists


def checkpoints(run: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a training run, oldest first (temporary folders never match)."""
    folder = Path(run) / "checkpoints"
    found = [p for p in folder.iterdir() if CHECKPOINT.match(p.name) and (p / "state.json").exists()] if folder.exists() else []
    return sorted(found)
