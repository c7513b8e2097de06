"""Signal helpers shared by the task builders: noise, gains, placement, mixing, active spans.

All arrays are float32 [S] at 16 kHz; randomness always comes from the caller's generator.
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^exponent
SPAN_FRAME_S = 0.01
SPAN_THRESHOLD_DB = -40.0  # below the clip's loudest frame counts as silence
EPS = 1e-12


def seconds(n: float) -> int:
    return int(round(n * SAMPLE_RATE))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + EPS))


def at_level(x: np.ndarray, db: float) -> np.ndarray:
    """Scale to an RMS of `db` dBFS."""
    return (x * (10 ** (db / 20) / rms(x))).astype(np.float32)


def noise(rng: np.random.Generator, length: int, color: str) -> np.ndarray:
    """Coloured Gaussian noise [length] with unit RMS, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    freqs[0] = freqs[1] if length > 1 else 1.0
    spectrum *= freqs ** (-NOISE_COLORS[color] / 2)
    out = np.fft.irfft(spectrum, n=length)
    return (out / (np.sqrt(np.mean(out ** 2)) + EPS)).astype(np.float32)


def random_noise(rng: np.random.Generator, length: int) -> np.ndarray:
    return noise(rng, length, str(rng.choice(list(NOISE_COLORS))))


def place(x: np.ndarray, length: int, offset: int) -> np.ndarray:
    """Put `x` into zeros [length] starting at `offset` (cropping what falls outside)."""
    out = np.zeros(length, np.float32)
    end = min(length, offset + len(x))
    if end > offset:
        out[offset:end] = x[:end - offset]
    return out


def place_randomly(rng: np.random.Generator, x: np.ndarray, length: int) -> np.ndarray:
    """Clip of exactly `length`: a random crop of a longer `x`, or `x` at a random offset."""
    if len(x) >= length:
        start = int(rng.integers(0, len(x) - length + 1))
        return x[start:start + length].astype(np.float32)
    return place(x, length, int(rng.integers(0, length - len(x) + 1)))


def add_noise(rng: np.random.Generator, x: np.ndarray, snr_db: float, background: np.ndarray | None = None) -> np.ndarray:
    """x + background (coloured noise when None) at `snr_db` below x's RMS."""
    background = random_noise(rng, len(x)) if background is None else background
    return (x + background * (rms(x) / rms(background)) * 10 ** (-snr_db / 20)).astype(np.float32)


def active_span(x: np.ndarray) -> tuple[int, int] | None:
    """(first, last+1) sample of the frames within SPAN_THRESHOLD_DB of the loudest frame."""
    hop = seconds(SPAN_FRAME_S)
    n = len(x) // hop
    if n == 0:
        return None
    energy = np.square(x[:n * hop].reshape(n, hop), dtype=np.float64).mean(axis=1)  # [S] -> [frames]
    loud = np.flatnonzero(energy > energy.max() * 10 ** (SPAN_THRESHOLD_DB / 10))
    if energy.max() <= EPS or loud.size == 0:
        return None
    return int(loud[0] * hop), int((loud[-1] + 1) * hop)
