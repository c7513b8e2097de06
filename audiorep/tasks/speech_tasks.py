"""Speech tasks spoken by espeak-ng: keywords, speaker count, language id, speaking style.

Talkers are espeak variants drawn from the suite's voice pools, so no talker of a test
split speaks in any train split. Every label is the parameter the clip was made with.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from audiorep.tasks import mixing, speech
from audiorep.tasks.format import make_metadata
from audiorep.tasks.scaffold import Example, Recipe, balanced_labels, rng_for, split_counts, voice_pools
from audiorep.tasks.speech import Voice

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
                 "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "backward", "forward", "follow", "learn", "visual")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
ENGLISH_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc")
# VoxLingua107's largest languages that espeak-ng speaks
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "ru", "pl", "nl", "tr", "sv", "hi")
SENTENCE_WORDS = ("the", "a", "small", "house", "river", "morning", "train", "leaves", "at", "seven",
                  "window", "open", "please", "bring", "my", "green", "book", "we", "walked", "home",
                  "after", "dinner", "she", "reads", "every", "evening", "city", "was", "quiet",
                  "tomorrow", "weather", "cold", "they", "found", "old", "map", "in", "garden")
MAX_TALKERS = 4

KEYWORD_S, COUNT_S, LANGUAGE_S, STYLE_S = 1.0, 5.0, 3.0, 3.0
SIZES = {  # clips per task
    "keywords": {"tiny": 60, "small": 360, "full": 6000},
    "speaker_count": {"tiny": 25, "small": 250, "full": 3000},
    "language_id": {"tiny": 36, "small": 300, "full": 4800},
    "speaking_style": {"tiny": 30, "small": 300, "full": 3600},
}


def _talker(rng: np.random.Generator, variants: list[str], language: str) -> Voice:
    """A random talker from `variants` with a random rate, pitch and range."""
    return Voice(language, str(rng.choice(variants)), rate=int(rng.integers(130, 230)),
                 pitch=int(rng.integers(25, 80)), pitch_range=int(rng.integers(30, 80)))


def _numbers(rng: np.random.Generator, count: int) -> str:
    return " ".join(str(int(rng.integers(1, 10_000))) for _ in range(count))


def _sentence(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(SENTENCE_WORDS, size=words))


def _speak(rng: np.random.Generator, text: str, voice: Voice) -> np.ndarray:
    return speech.synthesize(text, voice, seed=int(rng.integers(0, 2**31)))


def _finish(rng: np.random.Generator, wave: np.ndarray, snr_db: tuple[float, float]) -> np.ndarray:
    """Add background noise at a random SNR and set a random loudness."""
    noisy = mixing.add_noise(rng, wave, float(rng.uniform(*snr_db)))
    return mixing.at_level(noisy, float(rng.uniform(-30, -18)))


def _per_split(seed: int, task: str, labels: list[str], total: int) -> Iterator[tuple[str, str, np.random.Generator]]:
    """(split, label, rng) for `total` clips, labels balanced within each split."""
    for split, count in split_counts(total).items():
        rng = rng_for(seed, task, split)
        for label in balanced_labels(labels, count, rng):
            yield split, label, rng


def keywords(seed: int, size: str) -> Recipe:
    """Speech Commands stand-in: 10 commands + _unknown_ + _silence_, 1 s clips."""
    labels = list(COMMANDS) + [UNKNOWN, SILENCE]
    pools, total, length = voice_pools(seed), SIZES["keywords"][size], mixing.seconds(KEYWORD_S)

    def examples() -> Iterator[Example]:
        for split, label, rng in _per_split(seed, "keywords", labels, total):
            if label == SILENCE:
                wave = mixing.random_noise(rng, length) * float(10 ** rng.uniform(-3.5, -1.5))
                yield split, wave.astype(np.float32), [label]
                continue
            word = str(rng.choice(UNKNOWN_WORDS)) if label == UNKNOWN else label
            voice = _talker(rng, pools[split], str(rng.choice(ENGLISH_ACCENTS)))
            spoken = mixing.place_randomly(rng, _speak(rng, word, voice), length)
            yield split, _finish(rng, spoken, (5, 30)), [label]

    meta = make_metadata("audiorep_keywords", "scene", "multiclass", ["top1_acc"], KEYWORD_S, category="speech")
    return Recipe(meta, labels, total, examples)


def speaker_count(seed: int, size: str) -> Recipe:
    """LibriCount stand-in: 0-4 simultaneous talkers in 5 s, each with their own voice."""
    labels = [str(k) for k in range(MAX_TALKERS + 1)]
    pools, total, length = voice_pools(seed), SIZES["speaker_count"][size], mixing.seconds(COUNT_S)

    def examples() -> Iterator[Example]:
        for split, label, rng in _per_split(seed, "speaker_count", labels, total):
            talkers = rng.choice(pools[split], size=int(label), replace=False)
            mix = np.zeros(length, np.float32)
            for variant in talkers:
                voice = Voice("en", str(variant), rate=int(rng.integers(140, 220)), pitch=int(rng.integers(25, 80)))
                said = _speak(rng, _sentence(rng, 14), voice)
                mix += mixing.at_level(mixing.place_randomly(rng, said, length), float(rng.uniform(-26, -20)))
            if int(label) == 0:
                wave = mixing.random_noise(rng, length) * float(10 ** rng.uniform(-3.5, -2.5))
            else:
                wave = _finish(rng, mix, (15, 35))
            yield split, wave.astype(np.float32), [label]

    meta = make_metadata("audiorep_speaker_count", "scene", "multiclass", ["top1_acc"], COUNT_S, category="speech")
    return Recipe(meta, labels, total, examples)


def language_id(seed: int, size: str) -> Recipe:
    """VoxLingua107 top-10 stand-in: 12 languages reading numbers, 3 s clips."""
    labels = list(LANGUAGES)
    pools, total, length = voice_pools(seed), SIZES["language_id"][size], mixing.seconds(LANGUAGE_S)

    def examples() -> Iterator[Example]:
        for split, label, rng in _per_split(seed, "language_id", labels, total):
            said = _speak(rng, _numbers(rng, 4), _talker(rng, pools[split], label))
            yield split, _finish(rng, mixing.place_randomly(rng, said, length), (10, 35)), [label]

    meta = make_metadata("audiorep_language_id", "scene", "multiclass", ["top1_acc"], LANGUAGE_S, category="speech")
    return Recipe(meta, labels, total, examples)


STYLES = {  # style -> (rate range wpm, pitch range range, variant override)
    "neutral": ((150, 190), (40, 60), None),
    "fast": ((290, 360), (40, 60), None),
    "slow": ((80, 105), (40, 60), None),
    "monotone": ((150, 190), (0, 4), None),
    "animated": ((150, 190), (95, 100), None),
    "whispered": ((150, 190), (40, 60), speech.WHISPER),
}


def speaking_style(seed: int, size: str) -> Recipe:
    """Speaking style (stands in for CREMA-D emotion, which cannot be synthesized honestly):
    the rate, pitch range or whisper that espeak was asked for, 3 s of an English sentence."""
    labels = list(STYLES)
    pools, total, length = voice_pools(seed), SIZES["speaking_style"][size], mixing.seconds(STYLE_S)

    def examples() -> Iterator[Example]:
        for split, label, rng in _per_split(seed, "speaking_style", labels, total):
            rates, ranges, variant = STYLES[label]
            voice = Voice(str(rng.choice(ENGLISH_ACCENTS)), variant or str(rng.choice(pools[split])),
                          rate=int(rng.integers(*rates)), pitch=int(rng.integers(30, 70)),
                          pitch_range=int(rng.integers(*ranges)))
            said = _speak(rng, _sentence(rng, 10), voice)
            yield split, _finish(rng, mixing.place_randomly(rng, said, length), (20, 40)), [label]

    meta = make_metadata("audiorep_speaking_style", "scene", "multiclass", ["top1_acc"], STYLE_S, category="speech")
    return Recipe(meta, labels, total, examples)
