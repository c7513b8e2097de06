"""The HEAR 2021 task format: the one place that knows it (read, write, check).

A task is a folder, as hear-preprocess 2021.1.1 writes it:

    task_metadata.json     the task's configuration (FIELDS below: what we read, and what
                           hear-preprocess writes that neither we nor heareval read)
    labelvocabulary.csv    header `idx,label`, idx = 0..n-1
    <split>.json           scene: {"file.wav": ["label", ...]}
                           event: {"file.wav": [{"label": .., "start": ms, "end": ms}, ...]}
    <sample_rate>/<split>/<file>.wav

Splits are train/valid/test for split_mode "trainvaltest" and fold00, fold01, ... for the
k-fold modes (`fold_name`). `load_task` reads a folder into a `Task`; `check_task` lists every
problem with the file it is in (`metadata_warnings`: fields nobody reads, reported, not
refused); `TaskWriter` writes a task into a temporary folder and renames it into place only
when complete, so an interrupted write never leaves a task that looks whole. `read_vocabulary`,
`write_vocabulary` and `multi_hot` are the vocabulary file and the label -> target mapping
used by audiorep.data and audiorep.evaluate.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from audiorep import audio
from audiorep.audio import AudioError
from audiorep.files import check_name, write_text

SAMPLE_RATE = 16000
METADATA_FILE = "task_metadata.json"
VOCABULARY_FILE = "labelvocabulary.csv"
TRAINVALTEST = ("train", "valid", "test")
EMBEDDING_TYPES = ("scene", "event")
PREDICTION_TYPES = ("multiclass", "multilabel")
SPLIT_MODES = ("trainvaltest", "presplit_kfold", "new_split_kfold")
KFOLD_MODES = ("presplit_kfold", "new_split_kfold")
MIN_FOLDS = 3  # the kit's rotation takes a test and a validation fold and trains on the rest
REQUIRED_KEYS = ("task_name", "version", "embedding_type", "prediction_type", "split_mode",
                 "sample_duration", "evaluation")
# task_metadata.json fields beyond REQUIRED_KEYS. Read by audiorep and heareval 2021.1.3:
READ_FIELDS = {
    "nfolds": "number of folds (k-fold modes)",
    "splits": "split names (hear-preprocess writes them; heareval rotates these folds)",
    "evaluation_params": "event_postprocessing_grid and task_specific_param_grid",
    "use_scoring_for_early_stopping": "false: validation loss picks epochs and grid points",
    "category": "audiorep: speech, music, general or other, for the report",
}
# ...written by hear-preprocess for its own pipeline; neither audiorep nor heareval reads them
PREPROCESS_FIELDS = ("default_mode", "mode", "modes", "tmp_dir", "download_urls", "split_percentage",
                     "max_task_duration_by_split", "max_task_duration_by_fold", "pitch_range_min", "pitch_range_max",
                     "tfds_task_name", "tfds_task_version", "extract_splits")
# metric names of heareval.score.available_scores; event_onset_offset_50ms_fms is audiorep's older
# name of event_onset_offset_50ms_20perc_fms, still read
METRICS = ("top1_acc", "pitch_acc", "chroma_acc", "mAP", "d_prime", "aucroc", "event_onset_200ms_fms",
           "event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms", "segment_1s_er",
           "event_onset_offset_50ms_fms")
EVENT_METRIC_NAMES = tuple(m for m in METRICS if m.startswith(("event_", "segment_")))
POSTPROCESSING_KEYS = ("median_filter_ms", "min_duration")
DEFAULT_POSTPROCESSING = {"median_filter_ms": [250], "min_duration": [125, 250]}  # heareval's default grid
EVENT_POSTPROCESSING = {"event_postprocessing_grid": DEFAULT_POSTPROCESSING}
# task_specific_param_grid keys audiorep honours -> (type, smallest value); the kit's other keys
# (hidden_norm, embedding_norm, norm_after_activation, initialization, optim) hold Python objects
PARAM_GRID_KEYS = {"hidden_layers": (int, 0), "hidden_dim": (int, 1), "dropout": (float, 0.0), "lr": (float, 0.0),
                   "patience": (int, 1), "max_epochs": (int, 1), "check_val_every_n_epoch": (int, 1),
                   "batch_size": (int, 1)}
CATEGORIES = ("speech", "music", "general", "other")
# a clip may be up to one 16 kHz sample longer or shorter than sample_duration, and an
# event may end up to this much past the clip end (rounding of ms labels)
DURATION_TOLERANCE_S = 1e-3

Labels = list[str]
Event = dict[str, Any]  # {"label": str, "start": ms, "end": ms}
Annotation = Union[Labels, list[Event]]


class TaskFormatError(ValueError):
    """A task folder that does not follow the HEAR format; the message names file and problem."""


@dataclass
class Task:
    """A HEAR task read from `path`: metadata, vocabulary and, per split, file -> labels/events."""

    path: Path
    metadata: dict[str, Any]
    vocabulary: list[str]
    splits: dict[str, dict[str, Annotation]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.metadata["task_name"]

    @property
    def embedding_type(self) -> str:
        return self.metadata["embedding_type"]

    @property
    def prediction_type(self) -> str:
        return self.metadata["prediction_type"]

    @property
    def split_mode(self) -> str:
        return self.metadata["split_mode"]

    @property
    def split_names(self) -> list[str]:
        return split_names(self.metadata)

    @property
    def sample_rates(self) -> list[int]:
        return sorted(int(p.name) for p in self.path.iterdir() if p.is_dir() and p.name.isdigit())

    def items(self, split: str) -> list[tuple[str, Annotation]]:
        """[(relative wav path such as "16000/train/00001.wav", labels or events)], sorted by file."""
        rate = SAMPLE_RATE if SAMPLE_RATE in self.sample_rates else self.sample_rates[0]
        return [(f"{rate}/{split}/{name}", ann) for name, ann in sorted(self.splits[split].items())]

    def audio_path(self, split: str, name: str, sample_rate: int = SAMPLE_RATE) -> Path:
        return self.path / str(sample_rate) / split / name

    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.vocabulary)}


def fold_name(i: int) -> str:
    """The name of fold i (0-based), as hear-preprocess writes it: fold00, fold01, ..."""
    return f"fold{i:02d}"


def split_names(metadata: dict[str, Any]) -> list[str]:
    """The split files a task has: train/valid/test, or its folds (`splits`, else fold00..fold{k-1})."""
    if metadata["split_mode"] in KFOLD_MODES:
        return list(metadata.get("splits") or [fold_name(i) for i in range(int(metadata["nfolds"]))])
    return list(TRAINVALTEST)


def make_metadata(task_name: str, embedding_type: str, prediction_type: str, evaluation: list[str],
                  sample_duration: float | None, split_mode: str = "trainvaltest",
                  nfolds: int | None = None, version: str = "audiorep-1", **extra: Any) -> dict[str, Any]:
    """task_metadata.json contents; event tasks get HEAR's postprocessing grid by default."""
    meta: dict[str, Any] = {
        "task_name": task_name, "version": version, "embedding_type": embedding_type,
        "prediction_type": prediction_type, "split_mode": split_mode,
        "sample_duration": sample_duration, "evaluation": list(evaluation),
    }
    if split_mode in KFOLD_MODES:
        meta["nfolds"] = int(nfolds)
    if embedding_type == "event":
        meta["evaluation_params"] = EVENT_POSTPROCESSING
    meta.update(extra)
    problems = _metadata_problems(meta)
    if problems:
        raise TaskFormatError(f"{task_name}: {'; '.join(problems)}")
    return meta


def postprocessing_grid(metadata: dict[str, Any]) -> dict[str, list[float]]:
    """An event task's post-processing grid: evaluation_params.event_postprocessing_grid, else heareval's."""
    return (metadata.get("evaluation_params") or {}).get("event_postprocessing_grid", DEFAULT_POSTPROCESSING)


def param_grid(metadata: dict[str, Any]) -> dict[str, list]:
    """The probe grid values the task overrides (evaluation_params.task_specific_param_grid)."""
    return dict((metadata.get("evaluation_params") or {}).get("task_specific_param_grid", {}))


def scoring_for_early_stopping(metadata: dict[str, Any]) -> bool:
    """False: epochs and grid points are chosen by validation loss (use_scoring_for_early_stopping)."""
    return metadata.get("use_scoring_for_early_stopping", True)


def read_vocabulary(path: str | os.PathLike) -> list[str]:
    """The labels of a labelvocabulary.csv, in idx order; TaskFormatError naming the line on a problem."""
    path = Path(path)
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    except FileNotFoundError:
        raise TaskFormatError(f"{path}: missing") from None
    if not rows or [c.strip() for c in rows[0]] != ["idx", "label"]:
        raise TaskFormatError(f"{path}: header must be 'idx,label', got {rows[0] if rows else 'empty file'}")
    labels = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise TaskFormatError(f"{path}:{line}: expected 2 columns, got {len(row)}")
        if row[0].strip() != str(len(labels)):
            raise TaskFormatError(f"{path}:{line}: idx {row[0]!r}, expected {len(labels)}")
        if row[1] in labels:
            raise TaskFormatError(f"{path}:{line}: label {row[1]!r} repeated")
        labels.append(row[1])
    if not labels:
        raise TaskFormatError(f"{path}: no labels")
    return labels


def write_vocabulary(path: str | os.PathLike, labels: Sequence[str]) -> None:
    """Write labelvocabulary.csv (`idx,label`) for `labels` in this order (atomically)."""
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["idx", "label"])
    w.writerows(enumerate(labels))
    write_text(path, text.getvalue())


def multi_hot(labels: Sequence[Sequence[str]], vocabulary: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Label lists (one per row) -> float32 [N, C] 0/1 targets in vocabulary order.

    `names[i]` names row i (its clip) in the error raised for a label outside the vocabulary.
    """
    index = {str(label): i for i, label in enumerate(vocabulary)}
    counts = np.fromiter((len(row) for row in labels), dtype=np.int64, count=len(labels))
    try:
        cols = np.fromiter((index[str(x)] for row in labels for x in row), dtype=np.int64, count=int(counts.sum()))
    except KeyError as e:
        row = next(i for i, row in enumerate(labels) if any(str(x) not in index for x in row))
        raise TaskFormatError(f"{names[row]}: label {e.args[0]!r} is not in the vocabulary ({VOCABULARY_FILE}: "
                              f"{len(vocabulary)} labels)") from None
    y = np.zeros((len(labels), len(vocabulary)), dtype=np.float32)
    y[np.repeat(np.arange(len(labels)), counts), cols] = 1.0
    return y


# ---------------------------------------------------------------- reading


def read_json(path: Path) -> Any:
    """A task's JSON file; a missing or unparsable one is a TaskFormatError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskFormatError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskFormatError(f"{path}: not valid JSON ({e})") from None


def load_task(path: str | os.PathLike) -> Task:
    """Read a task folder's metadata, vocabulary and split files (not the audio).

    Raises TaskFormatError naming the file at the first structural problem; run
    `check_task` for the full list including audio.
    """
    path = Path(path)
    if not path.is_dir():
        raise TaskFormatError(f"{path}: not a folder")
    meta = read_json(path / METADATA_FILE)
    problems = _metadata_problems(meta)
    if problems:
        raise TaskFormatError(f"{path / METADATA_FILE}: {'; '.join(problems)}")
    task = Task(path, meta, read_vocabulary(path / VOCABULARY_FILE))
    for split in split_names(meta):
        data = read_json(path / f"{split}.json")
        if not isinstance(data, dict):
            raise TaskFormatError(f"{path / f'{split}.json'}: must map file names to labels")
        for name in data:  # file names in <rate>/<split>/: never a path out of the task
            problems = _name_problems(f"{path / f'{split}.json'}: entry", name)
            if problems:
                raise TaskFormatError(problems[0])
        task.splits[split] = data
    return task


# ---------------------------------------------------------------- checking


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _name_problems(field: str, name: Any) -> list[str]:
    """[] for a plain name (no separators, not '.' or '..'), else the problem naming `field`."""
    try:
        check_name(name, field)
        return []
    except ValueError as e:
        return [str(e)]


def _split_problems(meta: dict[str, Any]) -> list[str]:
    mode, nfolds, splits = meta.get("split_mode"), meta.get("nfolds"), meta.get("splits")
    problems = []
    if mode in KFOLD_MODES and (not _is_int(nfolds) or nfolds < MIN_FOLDS):
        problems.append(f"split_mode {mode} needs an integer nfolds >= {MIN_FOLDS}, got {nfolds!r}")
    if splits is None:
        return problems
    if not isinstance(splits, list) or not all(isinstance(x, str) for x in splits) or len(set(splits)) != len(splits):
        return problems + [f"splits must be a list of distinct split names, got {splits!r}"]
    problems += [p for x in splits for p in _name_problems("splits entry", x)]
    if mode == "trainvaltest" and sorted(splits) != sorted(TRAINVALTEST):
        problems.append(f"splits {splits} do not match split_mode trainvaltest (train, valid, test)")
    elif mode in KFOLD_MODES and _is_int(nfolds) and len(splits) != nfolds:
        problems.append(f"splits lists {len(splits)} folds, nfolds says {nfolds}")
    return problems


def _evaluation_problems(meta: dict[str, Any]) -> list[str]:
    evaluation = meta.get("evaluation")
    if not isinstance(evaluation, list) or not evaluation or not all(isinstance(m, str) for m in evaluation):
        return ["evaluation must be a non-empty list of metric names"]
    problems = [f"unknown metric {m!r} in evaluation (known: {', '.join(METRICS)})"
                for m in evaluation if m not in METRICS]
    kind = meta.get("embedding_type")
    if kind in EMBEDDING_TYPES:
        other = "scene" if kind == "event" else "event"
        problems += [f"metric {m!r} in evaluation is for {other} tasks, not {kind} tasks"
                     for m in evaluation if m in METRICS and (m in EVENT_METRIC_NAMES) != (kind == "event")]
    return problems


def _grid_problems(where: str, grid: Any, allowed: dict[str, tuple[type, float]]) -> list[str]:
    """Problems of a {key: [values]} grid whose keys and value types are `allowed`."""
    if not isinstance(grid, dict):
        return [f"{where} must be an object {{name: [values]}}, got {type(grid).__name__}"]
    problems = []
    for key, values in grid.items():
        if key not in allowed:
            problems.append(f"{where}.{key} cannot be honoured (audiorep sets: {', '.join(allowed)})")
            continue
        kind, low = allowed[key]
        ok = _is_int if kind is int else _is_number
        if not isinstance(values, list) or not values or not all(ok(v) and v >= low for v in values):
            problems.append(f"{where}.{key} must be a non-empty list of {kind.__name__}s >= {low}, got {values!r}")
        elif key == "dropout" and max(values) >= 1:
            problems.append(f"{where}.dropout must be < 1, got {values!r}")
    return problems


def _evaluation_params_problems(meta: dict[str, Any]) -> list[str]:
    params = meta.get("evaluation_params", {})
    if not isinstance(params, dict):
        return [f"evaluation_params must be an object, got {type(params).__name__}"]
    problems = []
    if "event_postprocessing_grid" in params:
        pp = params["event_postprocessing_grid"]
        problems += _grid_problems("evaluation_params.event_postprocessing_grid", pp,
                                   {k: (float, 0.0) for k in POSTPROCESSING_KEYS})
        if isinstance(pp, dict):
            problems += [f"evaluation_params.event_postprocessing_grid needs {k}"
                         for k in POSTPROCESSING_KEYS if k not in pp]
    if "task_specific_param_grid" in params:
        problems += _grid_problems("evaluation_params.task_specific_param_grid", params["task_specific_param_grid"],
                                   PARAM_GRID_KEYS)
    return problems


def _metadata_problems(meta: Any) -> list[str]:
    """Every invalid field of a task_metadata.json, each named."""
    if not isinstance(meta, dict):
        return ["must be a JSON object"]
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in meta]
    choices = {"embedding_type": EMBEDDING_TYPES, "prediction_type": PREDICTION_TYPES, "split_mode": SPLIT_MODES}
    for key, allowed in choices.items():
        if key in meta and meta[key] not in allowed:
            problems.append(f"{key} is {meta[key]!r}, expected one of {list(allowed)}")
    if "task_name" in meta:
        problems += _name_problems("task_name", meta["task_name"])
    problems += _split_problems(meta)
    duration = meta.get("sample_duration")
    if duration is not None and (not _is_number(duration) or duration <= 0):
        problems.append(f"sample_duration must be a positive number or null, got {duration!r}")
    if "evaluation" in meta:
        problems += _evaluation_problems(meta)
    problems += _evaluation_params_problems(meta)
    scoring = meta.get("use_scoring_for_early_stopping", True)
    if not isinstance(scoring, bool):
        problems.append(f"use_scoring_for_early_stopping must be true or false, got {scoring!r}")
    elif not scoring and meta.get("embedding_type") == "event" and not problems:
        grid = postprocessing_grid(meta)
        if any(len(grid[k]) != 1 for k in POSTPROCESSING_KEYS):
            problems.append("use_scoring_for_early_stopping false needs a single event_postprocessing_grid point "
                            f"(nothing scores the others), got {grid}")
    if "category" in meta and meta["category"] not in CATEGORIES:
        problems.append(f"category is {meta['category']!r}, expected one of {list(CATEGORIES)}")
    return problems


def metadata_warnings(meta: dict[str, Any]) -> list[str]:
    """Fields of a valid task_metadata.json that neither audiorep nor heareval reads (ignored)."""
    known = set(REQUIRED_KEYS) | set(READ_FIELDS) | set(PREPROCESS_FIELDS)
    out = [f"field {k!r} is not a HEAR 2021 or audiorep field; ignored" for k in meta if k not in known]
    params = meta.get("evaluation_params") or {}
    out += [f"evaluation_params.{k} is not read by heareval or audiorep; ignored"
            for k in params if k not in ("event_postprocessing_grid", "task_specific_param_grid")]
    return out


def _annotation_problems(where: str, ann: Any, task: Task, duration_ms: float | None) -> list[str]:
    vocab = set(task.vocabulary)
    if not isinstance(ann, list):
        return [f"{where}: labels must be a list, got {type(ann).__name__}"]
    if task.embedding_type == "scene":
        problems = [f"{where}: label {x!r} is not in {VOCABULARY_FILE}" for x in ann if x not in vocab]
        if task.prediction_type == "multiclass" and len(ann) != 1:
            problems.append(f"{where}: multiclass task needs exactly one label, got {len(ann)}")
        return problems
    problems = []
    for i, ev in enumerate(ann):
        at = f"{where} event {i}"
        if not isinstance(ev, dict) or not {"label", "start", "end"} <= set(ev):
            problems.append(f"{at}: must be an object with label, start, end (ms)")
            continue
        if ev["label"] not in vocab:
            problems.append(f"{at}: label {ev['label']!r} is not in {VOCABULARY_FILE}")
        start, end = ev["start"], ev["end"]
        if not all(isinstance(t, (int, float)) and math.isfinite(t) for t in (start, end)):
            problems.append(f"{at}: start/end must be numbers (ms), got {start!r}, {end!r}")
            continue
        if start < 0 or end <= start:
            problems.append(f"{at}: needs 0 <= start < end, got start={start} end={end} ms")
        if duration_ms is not None and end > duration_ms + DURATION_TOLERANCE_S * 1000:
            problems.append(f"{at}: ends at {end} ms, past the clip end {duration_ms:.1f} ms")
    return problems


def check_task(path: str | os.PathLike, read_audio: bool = True) -> list[str]:
    """Every problem with a task folder, each naming its file; [] when the task is valid.

    Checks metadata keys and values, the vocabulary, every split file, that every listed
    wav exists in every sample-rate folder with that rate, the clip length against
    sample_duration, and events against the clip end. `read_audio=False` skips the wav headers.
    """
    path = Path(path)
    try:
        task = load_task(path)
    except TaskFormatError as e:
        return [str(e)]
    problems: list[str] = []
    rates = task.sample_rates
    if not rates:
        problems.append(f"{path}: no audio folder named by a sample rate (e.g. {SAMPLE_RATE}/)")
    expected_s = task.metadata["sample_duration"]
    for split, entries in task.splits.items():
        if not entries:
            problems.append(f"{path / f'{split}.json'}: no files")
        for name, ann in sorted(entries.items()):
            duration_ms = None
            for rate in rates:
                wav = task.audio_path(split, name, rate)
                if not wav.is_file():
                    problems.append(f"{wav}: missing (listed in {split}.json)")
                    continue
                if not read_audio:
                    continue
                try:
                    meta = audio.info(wav)
                except AudioError as e:
                    problems.append(str(e))
                    continue
                if meta.samplerate != rate:
                    problems.append(f"{wav}: sample rate {meta.samplerate}, folder says {rate}")
                seconds = meta.frames / meta.samplerate
                duration_ms = seconds * 1000
                if expected_s is not None and abs(seconds - expected_s) > max(DURATION_TOLERANCE_S, 1.5 / rate):
                    problems.append(f"{wav}: {seconds:.4f} s long, sample_duration says {expected_s} s")
            problems += _annotation_problems(f"{path / f'{split}.json'}: {name}", ann, task, duration_ms)
    for rate in rates:
        for split in (p.name for p in (path / str(rate)).iterdir() if p.is_dir()):
            if split not in task.splits:
                problems.append(f"{path / str(rate) / split}: split folder not in {task.split_names}")
    return problems


# ---------------------------------------------------------------- writing


def _dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


class TaskWriter:
    """Write a task into `out.partial`, then rename it to `out` on `close()`.

    Use as a context manager: an exception (or Ctrl-C) removes the partial folder and leaves
    whatever was at `out` untouched. An existing `out` is replaced only when `overwrite`,
    and only once the new task is complete. With `check`, a task that `check_task` rejects
    is never moved into place (TaskFormatError listing the problems).
    """

    def __init__(self, out: str | os.PathLike, metadata: dict[str, Any], vocabulary: list[str] | None = None,
                 sample_rate: int = SAMPLE_RATE, overwrite: bool = False, check: bool = False):
        self.out = Path(out)
        self.check = check
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out}: already exists (pass overwrite to replace it)")
        self.metadata = metadata
        self.vocabulary = list(vocabulary) if vocabulary is not None else None
        self.sample_rate = sample_rate
        self.tmp = self.out.with_name(f".{self.out.name}.partial")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.splits: dict[str, dict[str, Annotation]] = {s: {} for s in split_names(metadata)}

    def add(self, split: str, wave: np.ndarray, labels: Annotation, name: str | None = None) -> str:
        """Write one clip (float32 [S] at the writer's rate) with its labels or events; -> file name."""
        if split not in self.splits:
            raise TaskFormatError(f"{self.out}: split {split!r} is not one of {list(self.splits)}")
        name = name or f"{len(self.splits[split]):05d}.wav"
        if name in self.splits[split]:
            raise TaskFormatError(f"{self.out}: {split}/{name} written twice")
        audio.write(self.tmp / str(self.sample_rate) / split / name, wave, self.sample_rate)
        self.splits[split][name] = labels
        return name

    def _labels_used(self) -> list[str]:
        used = set()
        for entries in self.splits.values():
            for ann in entries.values():
                used.update(x["label"] if isinstance(x, dict) else x for x in ann)
        return sorted(used)

    def close(self) -> Path:
        vocabulary = self.vocabulary if self.vocabulary is not None else self._labels_used()
        write_vocabulary(self.tmp / VOCABULARY_FILE, vocabulary)
        for split, entries in self.splits.items():
            _dump_json(self.tmp / f"{split}.json", entries)
        _dump_json(self.tmp / METADATA_FILE, self.metadata)
        problems = check_task(self.tmp) if self.check else []
        if problems:
            self.abort()
            raise TaskFormatError(f"{self.out}: not written, `tasks check` would reject it: {'; '.join(problems[:5])}"
                                  + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old)
        else:
            os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "TaskWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
