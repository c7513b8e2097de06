"""Sound tasks: ESC-50-style sound classes and DCASE-2016-style events placed in scenes.

Sources are the SoundFont's sound-effect programs and percussion keys, and espeak-ng words
for the "speech" event. Event labels are measured on each event rendered alone (its
non-silent span, see `mixing.active_span`) before it is placed in the scene.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from audiorep.tasks import instruments, mixing, speech
from audiorep.tasks.format import fold_name, make_metadata
from audiorep.tasks.instruments import Note
from audiorep.tasks.scaffold import Example, Recipe, balanced_labels, rng_for, split_counts, voice_pools
from audiorep.tasks.speech import Voice

SOUND_CLASSES = ("fret_noise", "breath", "seashore", "bird", "telephone", "helicopter", "applause", "gunshot",
                 "kick", "snare", "hand_clap", "hi_hat", "crash", "cowbell", "tambourine", "triangle")
CLASS_S = 3.0
CLASS_FOLDS = 5
SCENE_S = 10.0
SCENE_EVENTS = ("speech", "telephone", "bird", "gunshot", "applause", "cowbell", "hand_clap", "triangle")
SCENE_WORDS = ("hello", "excuse me", "thank you", "over here", "one moment", "good morning", "sorry")
EVENTS_PER_SCENE = (3, 7)
EVENT_MAX_S = 2.0
EVENT_GAP_S = 0.25     # silence kept between two events of a scene
BACKGROUNDS = ("noise", "seashore", "helicopter")
SIZES = {
    "sound_classes": {"tiny": 32, "small": 320, "full": 2000},
    "scene_events": {"tiny": 10, "small": 45, "full": 600},
}


def _source_notes(rng: np.random.Generator, name: str, start: float, hold: float) -> list[Note]:
    """One strike or held note of a named sound-effect program or percussion key."""
    velocity = int(rng.integers(60, 128))
    if name in instruments.DRUMS:
        return [Note(0, instruments.DRUMS[name], start, start + hold, velocity, drum=True)]
    key = int(rng.integers(48, 73))
    return [Note(instruments.EFFECTS[name], key, start, start + hold, velocity)]


def _sound_clip(rng: np.random.Generator, name: str) -> np.ndarray:
    notes: list[Note] = []
    for _ in range(int(rng.integers(1, 5))):
        start = float(rng.uniform(0, CLASS_S - 0.5))
        notes += _source_notes(rng, name, start, float(rng.uniform(0.2, min(1.5, CLASS_S - start))))
    wave = instruments.render(notes, CLASS_S)
    return mixing.at_level(mixing.add_noise(rng, wave, float(rng.uniform(20, 40))), float(rng.uniform(-30, -18)))


def sound_classes(seed: int, size: str) -> Recipe:
    """ESC-50 stand-in: 16 classes (8 sound-effect programs, 8 percussion sounds), 5 folds."""
    labels = list(SOUND_CLASSES)
    total = SIZES["sound_classes"][size]

    def examples() -> Iterator[Example]:
        rng = rng_for(seed, "sound_classes")
        per_fold = balanced_labels(list(range(CLASS_FOLDS)), total, rng)
        for i, label in enumerate(balanced_labels(labels, total, rng)):
            yield fold_name(per_fold[i]), _sound_clip(rng, label), [label]

    meta = make_metadata("audiorep_sound_classes", "scene", "multiclass", ["top1_acc", "mAP", "d_prime"], CLASS_S,
                         split_mode="presplit_kfold", nfolds=CLASS_FOLDS, category="general")
    return Recipe(meta, labels, total, examples)


def _event_sound(rng: np.random.Generator, name: str, variants: list[str]) -> np.ndarray:
    """One event rendered alone, [S] at most EVENT_MAX_S long."""
    if name == "speech":
        voice = Voice(str(rng.choice(("en", "en-us"))), str(rng.choice(variants)), rate=int(rng.integers(140, 210)),
                      pitch=int(rng.integers(25, 80)))
        said = speech.synthesize(str(rng.choice(SCENE_WORDS)), voice, seed=int(rng.integers(0, 2**31)))
        return said[:mixing.seconds(EVENT_MAX_S)]
    return instruments.render(_source_notes(rng, name, 0.0, float(rng.uniform(0.3, 1.2))), EVENT_MAX_S)


def _background(rng: np.random.Generator, length: int) -> np.ndarray:
    kind = str(rng.choice(BACKGROUNDS))
    if kind == "noise":
        return mixing.random_noise(rng, length)
    note = Note(instruments.EFFECTS[kind], int(rng.integers(48, 73)), 0.0, SCENE_S, velocity=100)
    return instruments.render([note], SCENE_S) + 0.05 * mixing.random_noise(rng, length)


def _scene(rng: np.random.Generator, variants: list[str]) -> tuple[np.ndarray, list[dict]]:
    """Events at random, non-overlapping places over a background -> (wave, events in ms)."""
    length = mixing.seconds(SCENE_S)
    scene, events, cursor = np.zeros(length, np.float32), [], mixing.seconds(float(rng.uniform(0, 1)))
    for _ in range(int(rng.integers(*EVENTS_PER_SCENE))):
        name = str(rng.choice(SCENE_EVENTS))
        sound = _event_sound(rng, name, variants)
        span = mixing.active_span(sound)
        if span is None:
            continue
        sound = mixing.at_level(sound[span[0]:span[1]], float(rng.uniform(-24, -16)))
        if cursor + len(sound) > length:
            break
        scene[cursor:cursor + len(sound)] = sound
        events.append({"label": name, "start": round(cursor / mixing.SAMPLE_RATE * 1000, 3),
                       "end": round((cursor + len(sound)) / mixing.SAMPLE_RATE * 1000, 3)})
        cursor += len(sound) + mixing.seconds(EVENT_GAP_S + float(rng.exponential(0.8)))
    background = _background(rng, length)
    wave = scene + mixing.at_level(background, float(rng.uniform(-50, -40)))
    return wave.astype(np.float32), events


def scene_events(seed: int, size: str) -> Recipe:
    """DCASE 2016 task 2 stand-in: 8 event classes placed in 10 s backgrounds, onsets/offsets in ms."""
    labels = list(SCENE_EVENTS)
    pools, total = voice_pools(seed), SIZES["scene_events"][size]

    def examples() -> Iterator[Example]:
        for split, count in split_counts(total).items():
            rng = rng_for(seed, "scene_events", split)
            for _ in range(count):
                wave, events = _scene(rng, pools[split])
                yield split, wave, events

    meta = make_metadata("audiorep_scene_events", "event", "multilabel", ["event_onset_200ms_fms", "segment_1s_er"],
                         SCENE_S, category="general")
    return Recipe(meta, labels, total, examples)
