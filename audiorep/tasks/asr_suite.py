"""`asr_en`: an offline transcribed-speech task (stands in for LibriSpeech under SUPERB's ASR).

English sentences of 3-6 words drawn from the suite's fixed word list, spoken by espeak-ng
talkers of the suite's voice pools (no test talker speaks in train) with English accents,
random rate, pitch and range, 200-600 ms of silence around, background noise at 20-40 dB
SNR. The sentences are partitioned before any clip is made: no test (or valid) sentence is
ever spoken in train, so a model cannot pass by memorizing sentences. Clips are as long as
their sentence (sample_duration null).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from audiorep.tasks import mixing, speech
from audiorep.tasks.asr_task import make_metadata, write_asr_task
from audiorep.tasks.scaffold import partition, rng_for, split_counts, voice_pools
from audiorep.tasks.speech_tasks import ENGLISH_ACCENTS, SENTENCE_WORDS

SIZES = {"tiny": 30, "small": 400, "full": 4000}  # clips
SENTENCES = {"tiny": 30, "small": 300, "full": 2000}  # distinct sentences before the split
WORDS = (3, 6)  # words per sentence, inclusive
PAD_S = (0.2, 0.6)


@dataclass
class AsrRecipe:
    """What `suite.write_recipe` writes for a transcribed-speech task."""

    metadata: dict
    count: int
    examples: callable

    def write(self, out, overwrite: bool = True) -> Path:
        return write_asr_task(out, self.metadata, self.examples(), overwrite=overwrite)


def sentences(seed: int, count: int) -> dict[str, list[str]]:
    """`count` distinct sentences partitioned into train/valid/test."""
    rng = rng_for(seed, "asr_en", "sentences")
    found: dict[str, None] = {}
    while len(found) < count:
        words = rng.choice(SENTENCE_WORDS, size=int(rng.integers(WORDS[0], WORDS[1] + 1)))
        found[" ".join(words)] = None
    return partition(list(found), rng)


def asr_en(seed: int, size: str) -> AsrRecipe:
    pools, texts, total = voice_pools(seed), sentences(seed, SENTENCES[size]), SIZES[size]

    def examples() -> Iterator[tuple[str, np.ndarray, str, None]]:
        for split, count in split_counts(total).items():
            rng = rng_for(seed, "asr_en", split)
            for i in range(count):
                text = texts[split][i % len(texts[split])]
                voice = speech.Voice(str(rng.choice(ENGLISH_ACCENTS)), str(rng.choice(pools[split])),
                                     rate=int(rng.integers(130, 210)), pitch=int(rng.integers(25, 80)),
                                     pitch_range=int(rng.integers(30, 80)))
                said = speech.synthesize(text, voice, seed=int(rng.integers(0, 2**31)))
                before, after = (mixing.seconds(float(rng.uniform(*PAD_S))) for _ in range(2))
                length = len(said) + before + after
                wave = mixing.add_noise(rng, mixing.place_randomly(rng, said, length), float(rng.uniform(20, 40)))
                yield split, mixing.at_level(wave, float(rng.uniform(-30, -18))).astype(np.float32), text, None

    meta = make_metadata("audiorep_asr_en", description="espeak-ng sentences from a fixed word list; "
                         "test sentences and talkers never occur in train")
    return AsrRecipe(meta, total, examples)
