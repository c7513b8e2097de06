"""What every task builder shares: seeded generators, split fractions, disjoint pools of
voices and instruments, balanced labels, and the `Recipe` a builder returns (fold names:
`format.fold_name`).

Pools are drawn once per seed for the whole suite, so a voice or instrument that is in a
test split of one task is in no train split of another, and the pretraining corpus can
draw from the train pools only.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from audiorep.tasks import instruments, speech
from audiorep.tasks.format import Annotation

SPLIT_FRACTIONS = {"train": 0.6, "valid": 0.2, "test": 0.2}
PIANO_PROGRAM = 0  # reserved for piano transcription, kept out of the instrument pools
SIZES = ("tiny", "small", "full")  # tiny: for tests only

Example = tuple[str, np.ndarray, Annotation]  # (split, wave [S] float32, labels or events)


@dataclass
class Recipe:
    """A task to build: its metadata, vocabulary, and a generator of `count` examples."""

    metadata: dict[str, Any]
    vocabulary: list[str]
    count: int
    examples: Callable[[], Iterator[Example]]


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator that depends only on `seed` and `keys` (stable across runs and Python versions)."""
    words = [seed] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def split_counts(total: int) -> dict[str, int]:
    """Split `total` by SPLIT_FRACTIONS (train takes the rounding remainder)."""
    counts = {s: int(round(total * f)) for s, f in SPLIT_FRACTIONS.items() if s != "train"}
    counts["train"] = total - sum(counts.values())
    return {s: counts[s] for s in SPLIT_FRACTIONS}


def partition(items: list, rng: np.random.Generator) -> dict[str, list]:
    """Shuffle `items` and cut them by SPLIT_FRACTIONS; every split gets at least one."""
    items = [items[i] for i in rng.permutation(len(items))]
    if len(items) < len(SPLIT_FRACTIONS):
        raise ValueError(f"cannot partition {len(items)} items into {len(SPLIT_FRACTIONS)} splits")
    n_valid = max(1, int(round(len(items) * SPLIT_FRACTIONS["valid"])))
    n_test = max(1, int(round(len(items) * SPLIT_FRACTIONS["test"])))
    n_train = len(items) - n_valid - n_test
    return {"train": items[:n_train], "valid": items[n_train:n_train + n_valid], "test": items[n_train + n_valid:]}


def voice_pools(seed: int) -> dict[str, list[str]]:
    """espeak variants (our talkers) per split, disjoint."""
    return partition(list(speech.VARIANTS), rng_for(seed, "voices"))


def program_pools(seed: int) -> dict[str, dict[str, list[int]]]:
    """split -> family -> General MIDI programs, disjoint between splits within each family."""
    pools: dict[str, dict[str, list[int]]] = {s: {} for s in SPLIT_FRACTIONS}
    for family, programs in instruments.FAMILIES.items():
        parts = partition([p for p in programs if p != PIANO_PROGRAM], rng_for(seed, "programs", family))
        for split, chosen in parts.items():
            pools[split][family] = sorted(chosen)
    return pools


def balanced_labels(labels: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """`count` labels cycling through `labels` (as even as possible), in random order."""
    out = [labels[i % len(labels)] for i in range(count)]
    return [out[i] for i in rng.permutation(count)]
