"""Music tasks rendered from the General MIDI SoundFont: pitch, instrument family, piano notes.

Pitch and family clips draw their programs from the suite's instrument pools (disjoint
between splits). Labels are the MIDI key, the program's family, and for transcription
the note-on/note-off times that were sent to the synthesizer.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from audiorep.tasks import instruments, mixing
from audiorep.tasks.format import fold_name, make_metadata
from audiorep.tasks.instruments import Note
from audiorep.tasks.scaffold import (PIANO_PROGRAM, Example, Recipe, balanced_labels, program_pools,
                                     rng_for, split_counts)

NOTE_S = 2.0          # clip length for single notes
HOLD_S = (0.8, 1.5)   # how long the key is held inside the clip
FAMILY_KEYS = (48, 73)  # two octaves around middle C
PIECE_S = 10.0
PIECE_NOTES_PER_S = (1.5, 4.0)
PIECE_NOTE_S = (0.1, 1.2)
PIECE_TAIL_S = 0.3    # no note is held into the last PIECE_TAIL_S of a piece
PIECE_FOLDS = 5
SIZES = {
    "pitch": {"tiny": 88, "small": 440, "full": 8800},
    "family": {"tiny": 33, "small": 330, "full": 4400},
    "piano_transcription": {"tiny": 10, "small": 40, "full": 500},
}


def _single_note(rng: np.random.Generator, program: int, key: int) -> np.ndarray:
    hold = float(rng.uniform(*HOLD_S))
    note = Note(program, key, start=0.0, end=hold, velocity=int(rng.integers(60, 128)))
    wave = instruments.render([note], NOTE_S)
    return mixing.at_level(mixing.add_noise(rng, wave, float(rng.uniform(30, 50))), float(rng.uniform(-30, -18)))


def pitch(seed: int, size: str) -> Recipe:
    """NSynth pitch stand-in: 88 keys (MIDI 21-108) played by instruments unseen in training."""
    labels = [str(k) for k in instruments.PIANO_KEYS]
    pools, total = program_pools(seed), SIZES["pitch"][size]

    def examples() -> Iterator[Example]:
        for split, count in split_counts(total).items():
            rng = rng_for(seed, "pitch", split)
            programs = sorted(p for family in pools[split].values() for p in family)
            for label in balanced_labels(labels, count, rng):
                yield split, _single_note(rng, int(rng.choice(programs)), int(label)), [label]

    meta = make_metadata("audiorep_pitch", "scene", "multiclass", ["pitch_acc", "chroma_acc"], NOTE_S, category="music")
    return Recipe(meta, labels, total, examples)


def family(seed: int, size: str) -> Recipe:
    """NSynth instrument family stand-in: 11 General MIDI families, programs disjoint by split."""
    labels = list(instruments.FAMILIES)
    pools, total = program_pools(seed), SIZES["family"][size]

    def examples() -> Iterator[Example]:
        for split, count in split_counts(total).items():
            rng = rng_for(seed, "family", split)
            for label in balanced_labels(labels, count, rng):
                program = int(rng.choice(pools[split][label]))
                yield split, _single_note(rng, program, int(rng.integers(*FAMILY_KEYS))), [label]

    meta = make_metadata("audiorep_family", "scene", "multiclass", ["top1_acc"], NOTE_S, category="music")
    return Recipe(meta, labels, total, examples)


def _piece(rng: np.random.Generator) -> list[Note]:
    """Random piano notes around a moving centre key; every note ends before the tail."""
    rate = float(rng.uniform(*PIECE_NOTES_PER_S))
    centre, notes, t = float(rng.uniform(45, 80)), [], float(rng.uniform(0, 0.5))
    while True:
        end = t + float(rng.uniform(*PIECE_NOTE_S))
        if end > PIECE_S - PIECE_TAIL_S:
            return notes
        centre = float(np.clip(centre + rng.normal(0, 2), 30, 96))
        key = int(np.clip(round(rng.normal(centre, 6)), instruments.PIANO_KEYS[0], instruments.PIANO_KEYS[-1]))
        if not any(n.key == key and n.end > t for n in notes):  # a key cannot restrike while held
            notes.append(Note(PIANO_PROGRAM, key, t, end, velocity=int(rng.integers(45, 115))))
        t += float(rng.exponential(1 / rate))


def piano_transcription(seed: int, size: str) -> Recipe:
    """MAESTRO stand-in: 10 s of piano, events = MIDI key with note-on/note-off in ms, 5 folds."""
    labels = [str(k) for k in instruments.PIANO_KEYS]
    total = SIZES["piano_transcription"][size]

    def examples() -> Iterator[Example]:
        rng = rng_for(seed, "piano_transcription")
        for i in range(total):
            notes = _piece(rng)
            wave = mixing.at_level(instruments.render(notes, PIECE_S), float(rng.uniform(-28, -18)))
            events = [{"label": str(n.key), "start": round(n.start * 1000, 3), "end": round(n.end * 1000, 3)}
                      for n in notes]
            yield fold_name(i % PIECE_FOLDS), wave, events

    meta = make_metadata("audiorep_piano_transcription", "event", "multilabel",
                         ["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"], PIECE_S,
                         split_mode="new_split_kfold", nfolds=PIECE_FOLDS, category="music")
    return Recipe(meta, labels, total, examples)
