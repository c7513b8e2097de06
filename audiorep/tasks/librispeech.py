"""Import LibriSpeech-style folders as an ASR task (tasks/asr_task.py layout).

    audiorep tasks import LibriSpeech/ OUT --asr                      # train-clean-100, dev-clean, test-clean
    audiorep tasks import LibriSpeech/ OUT --asr train=train-clean-360 valid=dev-other test=test-other

A subset folder holds `<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`, one line per
utterance: `<utterance id> <TRANSCRIPT>`, beside `<utterance id>.flac` (or any audio
extension soundfile reads). Each utterance becomes `16000/<split>/<utterance id>.wav` with its
transcript as written (LibriSpeech's upper case, apostrophes; SUPERB's character set).
A line without a transcript, a listed utterance whose audio is missing or unreadable, or an
utterance id seen twice is skipped and reported by file and line (`strict`: nothing is
written); a subset folder without any *.trans.txt is an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from audiorep import audio
from audiorep.audio import AudioError
from audiorep.tasks.asr_task import make_metadata, write_asr_task
from audiorep.tasks.format import SAMPLE_RATE, TaskFormatError

DEFAULT_SPLITS = {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"}


@dataclass
class AsrImport:
    path: Path | None
    written: int = 0
    problems: list[str] = field(default_factory=list)


def find_audio(folder: Path, utterance: str) -> Path | None:
    for ext in audio.AUDIO_EXTENSIONS:
        p = folder / f"{utterance}{ext}"
        if p.is_file():
            return p
    return None


def utterances(subset: Path, problems: list[str]) -> list[tuple[str, Path, str]]:
    """(utterance id, audio file, transcript) of every *.trans.txt line under `subset`, sorted by id."""
    files = sorted(subset.rglob("*.trans.txt"))
    if not files:
        raise TaskFormatError(f"{subset}: no *.trans.txt files (not a LibriSpeech-style folder)")
    found: dict[str, tuple[Path, str]] = {}
    for trans in files:
        for line_no, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            where = f"{trans}:{line_no}"
            source = find_audio(trans.parent, uid)
            if not text.strip():
                problems.append(f"{where}: {uid}: empty transcript")
            elif source is None:
                problems.append(f"{where}: {uid}: no audio file {trans.parent / uid}.*")
            elif uid in found:
                problems.append(f"{where}: {uid}: utterance listed twice (first in {found[uid][0].parent})")
            else:
                found[uid] = (source, text)
    return [(uid, source, text) for uid, (source, text) in sorted(found.items())]


def parse_splits(items: list[str] | None) -> dict[str, str]:
    """["train=train-clean-100", ...] -> {split: subset folder} (defaults for the splits not given)."""
    out = dict(DEFAULT_SPLITS)
    for item in items or []:
        split, sep, folder = item.partition("=")
        if not sep or split not in DEFAULT_SPLITS or not folder:
            raise ValueError(f"{item!r}: expected SPLIT=FOLDER with SPLIT one of {', '.join(DEFAULT_SPLITS)}")
        out[split] = folder
    return out


def import_librispeech(src: str | os.PathLike, out: str | os.PathLike, splits: dict[str, str] | None = None,
                       name: str | None = None, strict: bool = False, overwrite: bool = False) -> AsrImport:
    """Import `src/<subset>` for each split (DEFAULT_SPLITS) into an ASR task at `out`."""
    src, out = Path(src), Path(out)
    problems: list[str] = []
    lists = {}
    for split, subset in (splits or DEFAULT_SPLITS).items():
        folder = src / subset
        if not folder.is_dir():
            raise TaskFormatError(f"{folder}: missing (the {split} split's folder)")
        lists[split] = utterances(folder, problems)
    if strict and problems:
        return AsrImport(None, 0, problems)
    report = AsrImport(None, 0, problems)

    def examples() -> Iterator[tuple[str, np.ndarray, str, str]]:
        for split, rows in lists.items():
            for uid, source, text in tqdm(rows, desc=split, leave=False):
                try:
                    wave, _ = audio.read(source, SAMPLE_RATE)
                except AudioError as e:
                    if strict:  # raised inside the writer: the partial task is removed
                        raise TaskFormatError(f"{out}: not written (strict): {e}") from None
                    problems.append(str(e))
                    continue
                report.written += 1
                yield split, wave, text, f"{uid}.wav"

    meta = make_metadata(name or out.name, source=str(src), subsets=dict(splits or DEFAULT_SPLITS))
    report.path = write_asr_task(out, meta, examples(), overwrite=overwrite)
    return report
