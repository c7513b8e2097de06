"""Scores across models and tasks: primary-score tables, normalization, categories.

Normalization (PaSST paper, HEAR section): each task's score divided by the best score
of any model in the run on that task (for an error rate, lower is better: best / score),
and optionally by the best score of a reference table (e.g. the HEAR 2021 results).
A reference table is a CSV with columns `model,task,score` (scores as reported, e.g.
0.947 or 94.7 are both read as given) or a JSON {task: {model: score}}; its tasks are
matched by task folder name, then by task_name.

Categories come from data, never from name fragments: a `--categories` file (CSV
`task,category` or JSON {task: category}), else the task metadata's `category`, else the
built-in table (the HEAR 2021 task names, grouped as in the PaSST paper, and audiorep's
suite), else "other".
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from audiorep.tasks.format import CATEGORIES

KNOWN_CATEGORIES = {
    # HEAR 2021 (task_name as hear-preprocess writes it)
    "speech_commands": "speech", "tfds_crema_d": "speech", "libricount": "speech", "vox_lingua_top10": "speech",
    "vocal_imitation": "speech",
    "nsynth_pitch": "music", "tfds_gtzan": "music", "tfds_gtzan_music_speech": "music", "beijing_opera": "music",
    "mridangam_stroke": "music", "mridangam_tonic": "music", "maestro": "music",
    "dcase2016_task2": "general", "esc50": "general", "fsd50k": "general", "gunshot_triangulation": "general",
    "beehive_states_fold0": "general", "beehive_states_fold1": "general",
    # audiorep's offline suite (audiorep.tasks.suite)
    "audiorep_keywords": "speech", "audiorep_speaker_count": "speech", "audiorep_language_id": "speech",
    "audiorep_speaking_style": "speech", "audiorep_pitch": "music", "audiorep_family": "music",
    "audiorep_piano_transcription": "music", "audiorep_sound_classes": "general", "audiorep_scene_events": "general",
}


def category(key: str, metadata: dict, categories: dict[str, str] | None = None) -> str:
    """The category of the task in folder `key` with `metadata` (see the module docstring)."""
    name = metadata.get("task_name", key)
    for table in (categories or {}, {key: metadata["category"]} if "category" in metadata else {}, KNOWN_CATEGORIES):
        for k in (key, name):
            if k in table:
                return table[k]
    return "other"


def load_categories(path: str | Path) -> dict[str, str]:
    """A --categories file (CSV `task,category` or JSON {task: category}) -> {task: category}."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: categories file not found")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{task: category}}")
        rows = [(f"{path}: {task!r}", task, c) for task, c in data.items()]
    else:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"task", "category"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: CSV needs the columns task,category (got {reader.fieldnames})")
            rows = [(f"{path}:{line}", r["task"], r["category"]) for line, r in enumerate(reader, start=2)]
    for where, _, c in rows:
        if c not in CATEGORIES:
            raise ValueError(f"{where}: category {c!r} is not one of {list(CATEGORIES)}")
    return {task: c for _, task, c in rows}


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


def best_scores(table: dict[str, dict[str, float]], maximize: dict[str, bool],
                reference: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """{task: the best score}: of the run's models, or with `reference` of the reference table
    (tasks it lacks are left out)."""
    out = {}
    for task, scores in table.items():
        pool = reference.get(task) if reference is not None else scores
        values = [v for v in (pool or {}).values() if not math.isnan(v)]
        if values:
            out[task] = max(values) if maximize[task] else min(values)
    return out


def normalize(table: dict[str, dict[str, float]], maximize: dict[str, bool],
              reference: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """{task: {model: score}} -> {task: {model: score relative to the best}} (1.0 = best).

    Without `reference` the best is the run's best model on the task; with it, the best
    score of the reference table on that task (tasks it lacks are left out).
    """
    best = best_scores(table, maximize, reference)
    return {task: {m: _relative(s, best[task], maximize[task]) for m, s in table[task].items()} for task in best}


def overall_replicates(results: dict[str, dict[str, dict]], normalized: dict[str, dict[str, float]],
                       best: dict[str, float], maximize: dict[str, bool]) -> dict[str, np.ndarray]:
    """{model: [n] bootstrap replicates of its mean normalized score}: resample b of every
    task it has a normalized score for, divided by that task's best (point) score, averaged
    over those tasks. Models without replicates on all of them are left out."""
    out = {}
    for model, per_task in results.items():
        tasks = [t for t in normalized if not math.isnan(normalized[t].get(model, math.nan))]
        boots = [per_task[t].get("bootstrap") for t in tasks]
        if not tasks or any(b is None for b in boots) or len({b["n"] for b in boots}) != 1:
            continue
        reps = np.stack([np.asarray(b["replicates"], dtype=np.float64) for b in boots])  # [tasks, n]
        scale = np.array([best[t] for t in tasks])[:, None]
        up = np.array([maximize[t] for t in tasks])[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):  # as _relative, element by element
            rel = np.where(up, np.where(scale > 0, reps / scale, np.nan), np.where(reps > 0, scale / reps, 1.0))
        out[model] = np.mean(rel, axis=0)  # [n]
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
