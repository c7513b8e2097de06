"""Scores across models and tasks: primary-score tables, normalization, speech/music/general groups.

Normalization (PaSST paper, HEAR section): each task's score divided by the best score
of any model in the run on that task (for an error rate, lower is better: best / score),
and optionally by the best score of a reference table (e.g. the HEAR 2021 results).
A reference table is a CSV with columns `model,task,score` (scores as reported, e.g.
0.947 or 94.7 are both read as given) or a JSON {task: {model: score}}.
Categories follow the PaSST paper's grouping of the HEAR tasks; a task's metadata may
name its own with "category".
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

CATEGORIES = ("speech", "music", "general")
# task-name fragments of the HEAR 2021 tasks (and of audiorep's suite) -> category
CATEGORY_KEYS = {
    "speech": ("speech_commands", "crema", "libricount", "vox_lingua", "vocal_imitation", "speech", "word",
               "speaker", "language", "digit", "emotion"),
    "music": ("nsynth", "gtzan", "beijing_opera", "mridangam", "maestro", "pitch", "instrument", "music",
              "chord", "note", "genre"),
}


def category(task_name: str, metadata: dict | None = None) -> str:
    if metadata and metadata.get("category") in CATEGORIES:
        return metadata["category"]
    name = task_name.lower()
    if "music_speech" in name:  # GTZAN music/speech is a music task in the paper
        return "music"
    for cat, keys in CATEGORY_KEYS.items():
        if any(k in name for k in keys):
            return cat
    return "general"


def primary_table(results: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """{model: {task: result}} -> {task: {model: primary score mean}}."""
    table: dict[str, dict[str, float]] = {}
    for model, per_task in results.items():
        for task, r in per_task.items():
            table.setdefault(task, {})[model] = r["score"]
    return table


def _relative(score: float, best: float, maximize: bool) -> float:
    if math.isnan(score) or math.isnan(best):
        return math.nan
    if maximize:  # a score of 0 is 0 of the best; all-zero tasks have no scale
        return score / best if best > 0 else math.nan
    return best / score if score > 0 else 1.0  # an error of 0 is the best possible


def normalize(table: dict[str, dict[str, float]], maximize: dict[str, bool],
              reference: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """{task: {model: score}} -> {task: {model: score relative to the best}} (1.0 = best).

    Without `reference` the best is the run's best model on the task; with it, the best
    score of the reference table on that task (tasks it lacks are left out).
    """
    out = {}
    for task, scores in table.items():
        pool = reference.get(task) if reference is not None else scores
        values = [v for v in (pool or {}).values() if not math.isnan(v)]
        if not values:
            continue
        best = max(values) if maximize[task] else min(values)
        out[task] = {m: _relative(s, best, maximize[task]) for m, s in scores.items()}
    return out


def by_category(normalized: dict[str, dict[str, float]], categories: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """-> {category: {model: [normalized scores of its tasks]}}."""
    out: dict[str, dict[str, list[float]]] = {}
    for task, scores in normalized.items():
        for model, v in scores.items():
            if not math.isnan(v):
                out.setdefault(categories[task], {}).setdefault(model, []).append(v)
    return out


def load_reference(path: str | Path) -> dict[str, dict[str, float]]:
    """A reference table file -> {task: {model: score}}."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: reference table not found")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object {{task: {{model: score}}}}")
        return {t: {m: float(s) for m, s in v.items()} for t, v in data.items()}
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        if not rows.fieldnames or not {"model", "task", "score"} <= set(rows.fieldnames):
            raise ValueError(f"{path}: CSV needs the columns model,task,score (got {rows.fieldnames})")
        for line, row in enumerate(rows, start=2):
            try:
                out.setdefault(row["task"], {})[row["model"]] = float(row["score"])
            except ValueError:
                raise ValueError(f"{path}:{line}: score {row['score']!r} is not a number") from None
    return out
