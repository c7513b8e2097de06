"""Confidence intervals by bootstrap over test clips, and paired comparisons of two models.

The EnCodecMAE paper's procedure: resample the test set with replacement, score each
resample, take the 2.5 and 97.5 percentiles. Here a task's resamples are drawn per test
split (k-fold tasks: within each fold; event tasks: whole files, so a file's events stay
together) from a generator seeded by the task and split names only, so every model is scored
on the same resamples. A model's replicate b is the mean over splits and probe seeds of its
score on resample b, exactly as its reported score is the mean of the unresampled ones
(scene metrics score all resamples at once: metrics.RESAMPLED).

Because the resamples are shared, two models' replicates pair up: the difference A - B on
resample b is a draw of the paired bootstrap, whose percentiles bound the difference and
whose share of positive draws says how often A beat B on resampled test sets.
"""
from __future__ import annotations

import zlib

import numpy as np

N_BOOTSTRAP = 1000
LEVEL = 0.95


def draws(n: int, b: int, key: str) -> np.ndarray:
    """[b, n] indices into a test split of n units (clips or files), the same for every
    model: seeded by `key` (task and split name)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return rng.integers(0, n, size=(b, n))


def interval(values, level: float = LEVEL) -> list[float]:
    """[low, high] percentiles of the finite replicates (NaN when none is finite)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return [float("nan"), float("nan")]
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]


def paired(a, b, maximize: bool = True, level: float = LEVEL) -> dict:
    """Paired bootstrap of A - B over shared resamples -> {difference (mean of the replicate
    differences), interval, p_better (share of resamples where A is better), significant
    (the interval excludes 0)}."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return {"difference": float("nan"), "interval": [float("nan")] * 2, "p_better": float("nan"),
                "significant": False}
    low, high = interval(d, level)
    better = d > 0 if maximize else d < 0
    return {"difference": float(d.mean()), "interval": [low, high],
            "p_better": float(better.mean() + 0.5 * (d == 0).mean()), "significant": bool(low > 0 or high < 0)}
