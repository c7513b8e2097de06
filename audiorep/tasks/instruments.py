"""Notes rendered with tinysoundfont from TimGM6mb.sf2 (the General MIDI SoundFont in pretty_midi).

`render(notes, duration_s)` -> float32 [S] at 16 kHz, mono. The synthesizer is reset before
each render, so a render depends only on its notes (checked by the tests).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
DRUM_BANK = 128
DRUM_CHANNEL = 9
MIDI_CHANNELS = 16
MAX_VOICES = 128
STEREO = 2
FLUSH_S = 0.05  # longer than tsf's fast release after sounds-off

# General MIDI program ranges (0-based) named as the NSynth instrument families
FAMILIES = {
    "keyboard": range(0, 8), "mallet": range(8, 16), "organ": range(16, 24), "guitar": range(24, 32),
    "bass": range(32, 40), "string": range(40, 46), "vocal": range(52, 55), "brass": range(56, 64),
    "reed": range(64, 72), "flute": range(72, 80), "synth_lead": range(80, 88),
}
# General MIDI sound-effect programs (bank 0) and percussion keys (drum bank)
EFFECTS = {"fret_noise": 120, "breath": 121, "seashore": 122, "bird": 123, "telephone": 124,
           "helicopter": 125, "applause": 126, "gunshot": 127}
DRUMS = {"kick": 36, "snare": 38, "hand_clap": 39, "hi_hat": 42, "tom": 45, "crash": 49, "ride": 51,
         "tambourine": 54, "cowbell": 56, "bongo": 60, "conga": 63, "maracas": 70, "claves": 75,
         "wood_block": 76, "whistle": 71, "triangle": 81}
PIANO_KEYS = range(21, 109)  # A0..C8, the 88 NSynth pitch classes


@dataclass(frozen=True)
class Note:
    """One note: a program (or a drum key when `drum`), MIDI key, velocity and times in seconds."""

    program: int
    key: int
    start: float
    end: float
    velocity: int = 100
    drum: bool = False


def soundfont_path() -> str:
    import pretty_midi

    path = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: TimGM6mb.sf2 not found in the installed pretty_midi")
    return path


class _Renderer:
    def __init__(self):
        import tinysoundfont

        self.synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
        self.sfid = self.synth.sfload(soundfont_path(), max_voices=MAX_VOICES)
        self.font = self.synth.soundfonts[self.sfid]
        self.output_mode = tinysoundfont._tinysoundfont.OutputMode.StereoInterleaved

    def reset(self) -> None:
        """Silence every voice and clear channel state.

        tsf's reset alone keeps voices that are sounding, and sounds-off fades them out over
        a few ms, so the fade is rendered and discarded before the reset.
        """
        self.synth.sounds_off()
        self.synth.generate_simple(round(FLUSH_S * SAMPLE_RATE))
        self.font.reset()
        self.font.set_output(self.output_mode, SAMPLE_RATE, self.synth.gain)

    def render(self, notes: list[Note], duration_s: float) -> np.ndarray:
        self.reset()
        channels: dict[tuple[int, bool], int] = {}
        free = [c for c in range(MIDI_CHANNELS) if c != DRUM_CHANNEL]
        for n in notes:
            if (n.program, n.drum) in channels:
                continue
            if not n.drum and not free:
                raise ValueError(f"more than {MIDI_CHANNELS - 1} programs in one render")
            chan = DRUM_CHANNEL if n.drum else free.pop(0)
            self.synth.program_select(chan, self.sfid, DRUM_BANK if n.drum else 0, 0 if n.drum else n.program, n.drum)
            channels[(n.program, n.drum)] = chan
        events = sorted([(round(n.start * SAMPLE_RATE), 1, n) for n in notes]
                        + [(round(n.end * SAMPLE_RATE), 0, n) for n in notes], key=lambda e: (e[0], e[1]))
        total = round(duration_s * SAMPLE_RATE)
        out = np.zeros((total, STEREO), np.float32)
        pos = 0
        for at, is_on, n in events:
            at = min(at, total)
            if at > pos:
                out[pos:at] = np.frombuffer(self.synth.generate_simple(at - pos), np.float32).reshape(-1, STEREO)
                pos = at
            chan = channels[(n.program, n.drum)]
            if is_on:
                self.synth.noteon(chan, n.key, n.velocity)
            else:
                self.synth.noteoff(chan, n.key)
        if total > pos:
            out[pos:] = np.frombuffer(self.synth.generate_simple(total - pos), np.float32).reshape(-1, STEREO)
        return out.mean(axis=1)  # [S, 2] -> [S]


_renderer: _Renderer | None = None


def render(notes: list[Note], duration_s: float) -> np.ndarray:
    """Render `notes` into a clip of `duration_s` seconds -> float32 [S] at 16 kHz."""
    global _renderer
    if _renderer is None:
        _renderer = _Renderer()
    return _renderer.render(notes, duration_s)
