"""One probe training's outcome on disk, so ranks can share a task's grid and a rerun reuses
the points an interrupted run finished. Under OUT/predictions/MODE/MODEL/TASK.points/:

    seed<S>/split0-point<P>.json   grid point P trained on the first data split
    seed<S>/split<K>.json          the point chosen there, trained on data split K > 0
    <same name>.npy                its probabilities on the split's test rows [N, C] float32

The .json holds the point, its validation score, kept epoch, epochs run, event
post-processing, seconds, and the key it was made under (embeddings, mode, seed, split,
point, generator); it is written after the .npy, atomically, so a part with its .json is
complete, and it is reused only under the same key.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiorep.files import save_npy, write_json


@dataclass(frozen=True)
class Unit:
    """One probe training of a task: grid point `point` of `seed`'s grid on the first data split,
    or (point None) the point chosen there trained on data split `split` > 0."""
    seed: int
    split: int
    point: int | None

    @property
    def generator(self) -> int:
        """The generator index its init and dropout draw from (probes.train_grid's ids): the grid
        index, as when the whole grid trains at once; the chosen point trains alone, as 0."""
        return 0 if self.point is None else self.point


@dataclass
class Part:
    point: dict        # the GridPoint's fields
    val_score: float   # what selects the grid point (probes.select_best reads it)
    epoch: int
    epochs_run: int
    extra: Any         # the event post-processing chosen on validation, or None
    seconds: float
    probs: np.ndarray  # [N, C] on the split's test rows


def key(embeddings: str | None, mode: str, unit: Unit, point) -> dict:
    """What a part depends on: the embeddings' cache key, the mode, the unit and its GridPoint."""
    return json.loads(json.dumps({"embeddings": embeddings, "mode": mode, "seed": unit.seed, "split": unit.split,
                                  "point": asdict(point), "generator": unit.generator}))


def path(parts: Path, unit: Unit) -> Path:
    name = f"split{unit.split}.json" if unit.point is None else f"split{unit.split}-point{unit.point}.json"
    return parts / f"seed{unit.seed}" / name


def write(parts: Path, unit: Unit, key: dict, part: Part) -> None:
    json_path = path(parts, unit)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(json_path.with_suffix(".npy"), part.probs)
    extra = list(part.extra) if part.extra is not None else None
    write_json(json_path, {"key": key, "point": part.point, "val_score": part.val_score, "epoch": part.epoch,
                           "epochs_run": part.epochs_run, "extra": extra, "seconds": part.seconds})


def read(parts: Path, unit: Unit, key: dict) -> Part | None:
    """The unit's part when it was made under `key`, else None."""
    json_path = path(parts, unit)
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return None
    probs_path = json_path.with_suffix(".npy")
    if doc.get("key") != key or not probs_path.exists():
        return None
    extra = tuple(doc["extra"]) if doc["extra"] is not None else None
    return Part(doc["point"], doc["val_score"], doc["epoch"], doc["epochs_run"], extra, doc["seconds"],
                np.load(probs_path))
