"""Import a user's labelled audio as a HEAR task.

Sources:
- a folder with one sub-folder per class (`SRC/<label>/**/<audio file>`), or
- a CSV with a header: `path,label` and optionally `split` (train/valid/test) or `fold`
  (0..k-1), and `start,end` (seconds) for event rows. Paths are relative to the CSV. Several
  labels in one cell, separated by `sep`, make a multi-label task; a scene file has one row
  (a later row with other labels is skipped, one with the same labels is a duplicate, kept
  once); several event rows may name the same file (a repeated event is kept once); an event
  file with no events has one row with empty label/start/end.

Audio is read (streamed, one file at a time) with `audio.read` (any format soundfile reads), mixed to mono and resampled to
16 kHz. Splits are the given ones, or made from `seed` (train/valid/test, stratified by
first label), or `folds` folds. Bad rows and unreadable files are skipped and reported by
name (or, with `strict`, nothing is written). A split left empty is an error (nothing is
written), and the task is checked as `tasks check` does before TaskWriter moves it into place.
"""
from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from audiorep import audio
from audiorep.audio import AudioError
from audiorep.files import confine
from audiorep.tasks.format import (MIN_FOLDS, SAMPLE_RATE, TRAINVALTEST, TaskWriter, fold_name, make_metadata,
                                   split_names)
from audiorep.tasks.scaffold import rng_for

DEFAULT_METRICS = {
    ("scene", "multiclass"): ["top1_acc", "mAP", "d_prime"],
    ("scene", "multilabel"): ["mAP", "d_prime"],
    ("event", "multilabel"): ["event_onset_200ms_fms", "segment_1s_er"],
}
# new train/valid/test splits: each label's shuffled clips take the next slots of this cycle
# (60/20/20 as scaffold.SPLIT_FRACTIONS), carried on from label to label, so three clips
# reach every split however few each label has
SPLIT_CYCLE = ("train", "valid", "test", "train", "train")


@dataclass
class ImportRow:
    """One source file to import: its labels or events and its split (None: to be assigned)."""

    source: Path
    labels: list[str] = field(default_factory=list)
    events: list[tuple[str, float, float]] = field(default_factory=list)  # (label, start s, end s)
    split: str | None = None


@dataclass
class ImportReport:
    path: Path | None
    written: int
    problems: list[str]


class ImportProblem(ValueError):
    """A source that cannot be imported at all (no rows, unknown columns...)."""


def _from_folder(src: Path) -> tuple[dict[Path, ImportRow], list[str]]:
    clips, problems = {}, []
    classes = sorted(p for p in src.iterdir() if p.is_dir())
    if not classes:
        raise ImportProblem(f"{src}: no class sub-folders")
    for folder in classes:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for f in files:
            if f.suffix.lower() in audio.AUDIO_EXTENSIONS:
                clips[f] = ImportRow(f, [folder.name])
            elif not f.name.startswith("."):
                problems.append(f"{f}: not an audio file (suffix {f.suffix or 'none'}), skipped")
    return clips, problems


def _seconds(text: str, what: str) -> float:
    value = float(text)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{what} {text!r} must be a time >= 0 in seconds")
    return value


def _from_csv(src: Path, sep: str) -> tuple[dict[Path, ImportRow], list[str], bool]:
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0]) if rows else set()
    if not {"path", "label"} <= columns:
        raise ImportProblem(f"{src}: header must have columns path,label (got {sorted(columns) or 'nothing'})")
    if {"split", "fold"} <= columns:
        raise ImportProblem(f"{src}: give either a split or a fold column, not both")
    events = {"start", "end"} <= columns
    clips: dict[Path, ImportRow] = {}
    first: dict[tuple, int] = {}  # (path,) or (path, event) -> the line that gave it
    problems = []
    for line, row in enumerate(rows, start=2):
        where = f"{src}:{line}"
        try:
            if not (row["path"] or "").strip():
                raise ValueError("empty path")
            path = confine(src.parent, row["path"].strip(), "path").resolve()
            split = (row.get("split") or "").strip() or None
            if "fold" in row and (row["fold"] or "").strip():
                fold = int(row["fold"])
                if fold < 0:
                    raise ValueError(f"fold {fold} < 0")
                split = fold_name(fold)
            elif split is not None and split not in TRAINVALTEST:
                raise ValueError(f"split {split!r} is not one of {list(TRAINVALTEST)}")
            labels = [x.strip() for x in (row["label"] or "").split(sep) if x.strip()]
            if path in clips and clips[path].split != split:
                raise ValueError(f"{path.name} is in split {clips[path].split} on an earlier row, {split} here")
            event = None
            if events and (labels or row["start"] or row["end"]):
                start, end = _seconds(row["start"], "start"), _seconds(row["end"], "end")
                if end <= start or len(labels) != 1:
                    raise ValueError(f"an event needs one label and start < end, got {labels} {start}-{end}")
                event = (labels[0], start, end)
            elif not events and not labels:
                raise ValueError("no label")  # skipped: no clip is made for it
            key = (path, event) if events else (path,)
            if key in first:
                earlier = clips[path].labels if not events else event
                same = events or sorted(set(labels)) == sorted(earlier)
                raise ValueError(f"repeats line {first[key]} ({row['path'].strip()} {earlier}), kept once" if same else
                                 f"{row['path'].strip()} is labelled {earlier} on line {first[key]}, {labels} here: "
                                 f"one row per file (several labels go in one cell, separated by {sep!r}); skipped")
            first[key] = line
            clip = clips.setdefault(path, ImportRow(path, split=split))
            if event is not None:
                clip.events.append(event)
            elif not events:
                clip.labels = list(dict.fromkeys(labels))
        except (ValueError, TypeError) as e:
            problems.append(f"{where}: {e}")
    return clips, problems, events


def _assign_splits(clips: list[ImportRow], seed: int, folds: int | None) -> None:
    """Stratified by first label: folds round-robin, or train/valid/test by SPLIT_CYCLE, both
    carried on from label to label."""
    by_label: dict[str, list[ImportRow]] = defaultdict(list)
    for c in clips:
        by_label[(c.labels or [e[0] for e in c.events] or [""])[0]].append(c)
    rng = rng_for(seed, "import")
    offset = 0
    for label in sorted(by_label):
        group = [by_label[label][i] for i in rng.permutation(len(by_label[label]))]
        for i, c in enumerate(group, start=offset):
            c.split = fold_name(i % folds) if folds else SPLIT_CYCLE[i % len(SPLIT_CYCLE)]
        offset += len(group)


def _out_name(source: Path, root: Path, used: set[str]) -> str:
    rel = source.relative_to(root) if source.is_relative_to(root) else Path(source.name)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", "__".join(rel.with_suffix("").parts))
    name, n = f"{stem}.wav", 1
    while name in used:
        name, n = f"{stem}-{n}.wav", n + 1
    used.add(name)
    return name


def import_task(src: str | os.PathLike, out: str | os.PathLike, name: str | None = None, seed: int = 0,
                folds: int | None = None, sep: str = ";", duration: float | None = None,
                metrics: list[str] | None = None, strict: bool = False, overwrite: bool = False) -> ImportReport:
    """Import `src` (class folders or CSV) into a HEAR task at `out`; -> what was written and skipped."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise ImportProblem(f"{src}: does not exist")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite to replace it)")
    is_event = False
    if src.is_dir():
        clips, problems = _from_folder(src)
        root = src
    else:
        clips, problems, is_event = _from_csv(src, sep)
        root = src.parent.resolve()
    given = [c.split for c in clips.values()]
    if any(s is None for s in given) and any(s is not None for s in given):
        problems += [f"{c.source}: no split/fold while other rows have one, skipped"
                     for c in clips.values() if c.split is None]
        clips = {k: c for k, c in clips.items() if c.split is not None}
    if not clips:
        return ImportReport(None, 0, problems + [f"{src}: no usable clips"])

    lengths: dict[Path, float] = {}
    for path, clip in sorted(clips.items()):
        try:
            meta = audio.info(path)
        except AudioError as e:
            problems.append(str(e))
            continue
        length_s = duration if duration is not None else meta.frames / meta.samplerate
        late = [e for e in clip.events if e[2] > length_s + 1e-3]
        problems += [f"{path}: event {lab} {s}-{e} s ends past the clip end ({length_s:.3f} s), dropped"
                     for lab, s, e in late]
        clip.events = [e for e in clip.events if e not in late]
        lengths[path] = length_s
    if strict and problems:
        return ImportReport(None, 0, problems)
    kept = [clips[p] for p in sorted(lengths)]
    if not kept:
        return ImportReport(None, 0, problems + [f"{src}: no readable audio"])

    if kept[0].split is None:
        _assign_splits(kept, seed, folds)
        split_mode, nfolds = ("new_split_kfold", folds) if folds else ("trainvaltest", None)
    elif kept[0].split.startswith("fold"):
        split_mode, nfolds = "presplit_kfold", 1 + max(int(c.split[4:]) for c in kept)
    else:
        split_mode, nfolds = "trainvaltest", None
    if nfolds is not None and nfolds < MIN_FOLDS:
        return ImportReport(None, 0, problems + [f"{src}: {nfolds} folds; k-fold tasks need at least {MIN_FOLDS} "
                                                 "(a test, a validation and a training fold)"])
    empty = sorted(set(split_names({"split_mode": split_mode, "nfolds": nfolds})) - {c.split for c in kept})
    if empty:
        return ImportReport(None, 0, problems + [f"{src}: {len(kept)} clips leave {', '.join(empty)} empty; every "
                                                 "split needs at least one clip (give more clips or the missing split)"])
    embedding = "event" if is_event else "scene"
    prediction = "multilabel" if is_event or any(len(c.labels) != 1 for c in kept) else "multiclass"
    vocabulary = sorted({x for c in kept for x in c.labels} | {e[0] for c in kept for e in c.events})
    meta = make_metadata(name or out.name, embedding, prediction, metrics or DEFAULT_METRICS[(embedding, prediction)],
                         duration, split_mode=split_mode, nfolds=nfolds)
    used: set[str] = set()
    written = 0
    with TaskWriter(out, meta, vocabulary, overwrite=overwrite, check=True) as writer:
        for clip in tqdm(kept, desc=f"import {out.name}"):
            try:
                wave, _ = audio.read(clip.source, SAMPLE_RATE)
            except AudioError as e:
                if strict:
                    raise
                problems.append(str(e))
                continue
            if duration is not None:
                wave = audio.pad_or_crop(wave, int(round(duration * SAMPLE_RATE)))
            labels = clip.labels if not is_event else [
                {"label": lab, "start": round(s * 1000, 3), "end": round(e * 1000, 3)} for lab, s, e in clip.events]
            writer.add(clip.split, wave, labels, name=_out_name(clip.source, root, used))
            written += 1
    return ImportReport(out, written, problems)
