"""Transcribed-speech tasks (ASR): the HEAR folder layout with a transcript per clip.

    task_metadata.json   task_name, version, prediction_type "transcription", embedding_type
                         "sequence", split_mode "trainvaltest", evaluation ["wer", "cer"], ...
    labelvocabulary.csv  the characters of the training transcripts (idx,label; the word
                         boundary, a space in the text, is written "|", as in SUPERB's char.dict)
    <split>.json         {"00000.wav": "the text of the clip", ...}
    16000/<split>/*.wav  the audio

The rule for text: a transcript is a non-empty string whose runs of whitespace are read as
one space (leading and trailing spaces dropped); case and punctuation are kept as written.
"|" is reserved for the word boundary and refused in a transcript. The vocabulary is the
set of characters of the train split: a train transcript with a character outside the
vocabulary file is refused (naming the clip and the characters); valid/test transcripts
may hold characters the vocabulary lacks: they stay in the references (a model cannot emit
them, so each costs an error), and the evaluation counts and names them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from audiorep import audio
from audiorep.tasks.format import (METADATA_FILE, SAMPLE_RATE, TRAINVALTEST, VOCABULARY_FILE, TaskFormatError,
                                   TaskWriter, read_json, read_vocabulary)

PREDICTION_TYPE = "transcription"
EMBEDDING_TYPE = "sequence"
METRICS = ("wer", "cer")
WORD_BOUNDARY = "|"
REQUIRED = ("task_name", "version", "prediction_type", "split_mode", "evaluation")


def normalize(text: str) -> str:
    """Runs of whitespace -> one space, ends stripped (the documented text rule)."""
    return " ".join(text.split())


def characters(text: str) -> list[str]:
    """A transcript as vocabulary symbols: spaces are the word boundary '|'."""
    return [WORD_BOUNDARY if c == " " else c for c in normalize(text)]


def is_asr_task(path: str | os.PathLike) -> bool:
    """True when the folder's metadata declares prediction_type 'transcription'."""
    try:
        meta = json.loads((Path(path) / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("prediction_type") == PREDICTION_TYPE


def make_metadata(task_name: str, version: str = "audiorep-1", **extra) -> dict:
    return {"task_name": task_name, "version": version, "embedding_type": EMBEDDING_TYPE,
            "prediction_type": PREDICTION_TYPE, "split_mode": "trainvaltest", "sample_duration": None,
            "evaluation": list(METRICS), "category": "speech", **extra}


@dataclass
class AsrTask:
    path: Path
    metadata: dict
    vocabulary: list[str]                                   # symbols, "|" = word boundary
    splits: dict[str, dict[str, str]] = field(default_factory=dict)  # split -> file -> text

    @property
    def name(self) -> str:
        return self.metadata["task_name"]

    @property
    def split_names(self) -> list[str]:
        return list(TRAINVALTEST)

    def items(self, split: str) -> list[tuple[str, str]]:
        """[(relative wav path, transcript)] sorted by file (as format.Task.items)."""
        return [(f"{SAMPLE_RATE}/{split}/{name}", text) for name, text in sorted(self.splits[split].items())]

    def audio_path(self, split: str, name: str) -> Path:
        return self.path / str(SAMPLE_RATE) / split / name

    def oov(self, split: str) -> dict[str, list[str]]:
        """file -> characters of its transcript that are not in the vocabulary."""
        known = set(self.vocabulary)
        out = {}
        for name, text in sorted(self.splits[split].items()):
            missing = sorted(set(characters(text)) - known)
            if missing:
                out[name] = missing
        return out


def _split_problems(path: Path, split: str, data) -> list[str]:
    where = path / f"{split}.json"
    if not isinstance(data, dict):
        return [f"{where}: must map file names to transcripts"]
    if not data:
        return [f"{where}: no files"]
    problems = []
    for name, text in sorted(data.items()):
        if "/" in name or "\\" in name or name.startswith("."):
            problems.append(f"{where}: {name!r} is not a plain file name")
        elif not isinstance(text, str):
            problems.append(f"{where}: {name}: transcript must be a string, got {type(text).__name__}")
        elif not normalize(text):
            problems.append(f"{where}: {name}: empty transcript")
        elif WORD_BOUNDARY in text:
            problems.append(f"{where}: {name}: {WORD_BOUNDARY!r} is reserved for the word boundary")
    return problems


def load_asr_task(path: str | os.PathLike) -> AsrTask:
    """Read and check a transcribed-speech task (not the audio); TaskFormatError lists every problem."""
    path = Path(path)
    meta = read_json(path / METADATA_FILE)
    if not isinstance(meta, dict):
        raise TaskFormatError(f"{path / METADATA_FILE}: must be a JSON object")
    problems = [f"{path / METADATA_FILE}: missing {k}" for k in REQUIRED if k not in meta]
    if meta.get("prediction_type") != PREDICTION_TYPE:
        problems.append(f"{path / METADATA_FILE}: prediction_type must be {PREDICTION_TYPE!r}")
    if meta.get("split_mode", "trainvaltest") != "trainvaltest":
        problems.append(f"{path / METADATA_FILE}: split_mode {meta.get('split_mode')!r}: ASR tasks are trainvaltest")
    unknown = [m for m in meta.get("evaluation", []) if m not in METRICS]
    if unknown or not meta.get("evaluation"):
        problems.append(f"{path / METADATA_FILE}: evaluation {meta.get('evaluation')!r}: expected metrics of {METRICS}")
    if problems:
        raise TaskFormatError("; ".join(problems))
    task = AsrTask(path, meta, read_vocabulary(path / VOCABULARY_FILE))
    for split in TRAINVALTEST:
        data = read_json(path / f"{split}.json")
        problems += _split_problems(path, split, data)
        task.splits[split] = data if isinstance(data, dict) else {}
    if not problems:
        problems += [f"{path / 'train.json'}: {name}: characters {''.join(chars)!r} not in {VOCABULARY_FILE}"
                     for name, chars in task.oov("train").items()]
    if problems:
        raise TaskFormatError("; ".join(problems))
    return task


def check_asr_task(path: str | os.PathLike, read_audio: bool = True) -> list[str]:
    """Every problem of an ASR task folder, each naming its file; [] when valid."""
    try:
        task = load_asr_task(path)
    except TaskFormatError as e:
        return str(e).split("; ")
    problems = []
    for split, entries in task.splits.items():
        for name in sorted(entries):
            wav = task.audio_path(split, name)
            if not wav.is_file():
                problems.append(f"{wav}: missing (listed in {split}.json)")
            elif read_audio:
                try:
                    rate = audio.info(wav).samplerate
                except audio.AudioError as e:
                    problems.append(str(e))
                    continue
                if rate != SAMPLE_RATE:
                    problems.append(f"{wav}: sample rate {rate}, folder says {SAMPLE_RATE}")
    return problems


def vocabulary_of(texts: Iterable[str]) -> list[str]:
    """The sorted characters of `texts` (the word boundary first)."""
    chars = {c for t in texts for c in characters(t)}
    return sorted(chars, key=lambda c: (c != WORD_BOUNDARY, c))


def write_asr_task(out: str | os.PathLike, metadata: dict,
                   examples: Iterator[tuple[str, np.ndarray, str, str | None]], overwrite: bool = False) -> Path:
    """Write (split, wave [S] float32 at 16 kHz, transcript, file name or None for 00000.wav, ...)
    examples as an ASR task at `out` (atomically); the vocabulary is taken from the train transcripts."""
    with TaskWriter(out, metadata, vocabulary=[], overwrite=overwrite) as writer:
        for split, wave, text, name in examples:
            if not normalize(text):
                raise TaskFormatError(f"{out}: {split} {name or len(writer.splits[split])}: empty transcript")
            writer.add(split, wave, normalize(text), name)  # type: ignore[arg-type]  # a transcript, not labels
        writer.vocabulary = vocabulary_of(writer.splits["train"].values())
    problems = check_asr_task(out, read_audio=False)
    if problems:
        raise TaskFormatError(f"{out}: written but not a valid ASR task: {'; '.join(problems[:5])}")
    return Path(out)
