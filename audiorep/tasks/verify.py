"""Checks that built labels describe the audio: measured, not assumed.

- `pitch_agreement`: the fundamental of each rendered note (harmonic-sum estimate) against
  its MIDI label, as the fraction with the right pitch class (octave errors forgiven, as in
  NSynth's chroma accuracy) and the fraction with the exact key.
- `event_agreement`: every event of an event task is louder than the scene's gaps, and the
  gaps (away from any event) are as quiet as the background they claim to be.
"""
from __future__ import annotations

import numpy as np

from audiorep import audio
from audiorep.tasks.format import Task

A4_HZ, A4_MIDI = 440.0, 69
PITCH_KEYS = range(36, 97)       # keys whose fundamental a 16 kHz clip resolves reliably
PITCH_WINDOW_S = (0.05, 0.75)    # the held part of the note
FFT_SIZE = 1 << 16
HARMONICS = 8
HARMONIC_DECAY = 0.8
FRAME_S = 0.01
GAP_MARGIN_S = 0.1               # frames this close to an event do not count as gap
EVENT_ABOVE_GAP_DB = 10.0


def midi_to_hz(key: float) -> float:
    return A4_HZ * 2 ** ((key - A4_MIDI) / 12)


def estimate_key(wave: np.ndarray, sample_rate: int) -> int:
    """MIDI key whose harmonic series (weighted sum of magnitudes at h*f0) is strongest."""
    start, end = (int(t * sample_rate) for t in PITCH_WINDOW_S)
    segment = wave[start:end] * np.hanning(end - start)
    magnitude = np.abs(np.fft.rfft(segment, FFT_SIZE))
    bin_hz = sample_rate / FFT_SIZE
    keys = np.arange(21, 109)
    salience = np.zeros(len(keys))
    for i, key in enumerate(keys):
        f0 = midi_to_hz(key)
        for h in range(1, HARMONICS + 1):
            f = h * f0
            if f >= sample_rate / 2:
                break
            lo, hi = int(f * 0.985 / bin_hz), int(f * 1.015 / bin_hz) + 1
            salience[i] += HARMONIC_DECAY ** (h - 1) * magnitude[lo:hi].max()
    return int(keys[np.argmax(salience)])


def pitch_agreement(task: Task) -> dict[str, float]:
    """{"chroma": fraction right up to octave, "exact": fraction right, "n": notes checked}."""
    chroma = exact = n = 0
    for split in task.split_names:
        for name, labels in sorted(task.splits[split].items()):
            key = int(labels[0])
            if key not in PITCH_KEYS:
                continue
            wave, sr = audio.read(task.audio_path(split, name))
            estimate = estimate_key(wave, sr)
            chroma += (estimate - key) % 12 == 0
            exact += estimate == key
            n += 1
    return {"chroma": chroma / max(n, 1), "exact": exact / max(n, 1), "n": n}


def _frame_db(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    hop = int(FRAME_S * sample_rate)
    n = len(wave) // hop
    power = np.square(wave[:n * hop].reshape(n, hop), dtype=np.float64).mean(axis=1)  # [S] -> [frames]
    return 10 * np.log10(power + 1e-12)


def event_agreement(task: Task) -> dict[str, float]:
    """{"events_above_gap": fraction of events >= EVENT_ABOVE_GAP_DB above the clip's gaps,
    "gap_excess_db": worst (95th percentile of gap frames - median gap level), "n": events}."""
    above, n, excess = 0, 0, []
    for split in task.split_names:
        for name, events in sorted(task.splits[split].items()):
            wave, sr = audio.read(task.audio_path(split, name))
            db = _frame_db(wave, sr)
            times = (np.arange(len(db)) + 0.5) * FRAME_S * 1000  # frame centres in ms
            near = np.zeros(len(db), bool)
            for ev in events:
                near |= (times >= ev["start"] - GAP_MARGIN_S * 1000) & (times <= ev["end"] + GAP_MARGIN_S * 1000)
            if near.all() or not events:
                continue
            gap = db[~near]
            excess.append(float(np.percentile(gap, 95) - np.median(gap)))
            for ev in events:
                inside = db[(times >= ev["start"]) & (times <= ev["end"])]
                level = 10 * np.log10(np.mean(10 ** (inside / 10))) if inside.size else -np.inf
                above += level >= np.percentile(gap, 95) + EVENT_ABOVE_GAP_DB
                n += 1
    return {"events_above_gap": above / max(n, 1), "gap_excess_db": max(excess, default=0.0), "n": n}
