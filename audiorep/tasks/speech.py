"""Speech from espeak-ng (the library and data shipped by PyPI `espeakng-loader`), via ctypes.

`synthesize(text, voice)` -> float32 [S] at 16 kHz. A voice is a language voice plus a
variant (`Voice("de", "m3")` is espeak's "de+m3"), speaking rate in words per minute,
base pitch and pitch range (0-100).

Determinism: espeak-ng keeps state between utterances inside the library (pitch flutter
and other wave-generator counters; `espeak_ng_SetRandSeed` and libc `srand` reset only the
random generators), so the same text can come out a few samples different the second time
within one process. What is repeatable is a fresh process making the same sequence of
calls: the suite builds each task in its own fresh process, in a fixed order, and seeds
both generators before every utterance.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from audiorep import audio

SAMPLE_RATE = 16000
AUDIO_OUTPUT_SYNCHRONOUS = 0x02
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
POS_CHARACTER = 1
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4
INT16_SCALE = 32768.0

# espeak variants that sound like distinct human talkers (the robotic and effect variants are left out)
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "Alex", "Andy", "Annie", "Denis", "Diogo", "Gene", "Henrique", "Hugo", "Jacky", "Lee",
    "Marco", "Michael", "Mike", "Nguyen", "Reed", "Storm", "adam", "anika", "announcer",
    "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward",
    "gustave", "ian", "iven", "john", "linda", "max", "michel", "miguel", "norbert", "pablo",
    "paul", "pedro", "quincy", "rob", "robert", "steph", "travis", "victor", "zac",
)
# a whispering variant, used as a speaking style, never as a talker
WHISPER = "whisper"


@dataclass(frozen=True)
class Voice:
    language: str = "en"
    variant: str | None = None
    rate: int = 175          # words per minute
    pitch: int = 50          # 0-100, espeak's base pitch
    pitch_range: int = 50    # 0 = monotone, 100 = animated

    @property
    def name(self) -> str:
        return self.language if self.variant is None else f"{self.language}+{self.variant}"


class _Espeak:
    """The loaded library; one per process (espeak-ng is a process-wide singleton)."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                          espeakng_loader.get_data_path().encode(), INITIALIZE_DONT_EXIT)
        if self.rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialize (data at {espeakng_loader.get_data_path()})")
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)  # keep a reference: the library holds a pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib
        self.libc = ctypes.CDLL("libc.so.6")

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def speak(self, text: str, voice: Voice, seed: int) -> np.ndarray:
        """-> int16 [S] at the library's rate (22050 Hz)."""
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice.name!r}")
        for param, value in ((PARAM_RATE, voice.rate), (PARAM_PITCH, voice.pitch), (PARAM_RANGE, voice.pitch_range)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self.lib.espeak_ng_SetRandSeed(seed)
        self.libc.srand(seed)
        self._chunks = []
        data = text.encode("utf-8")
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak-ng failed on {text!r} with voice {voice.name} (status {status})")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


_engine: _Espeak | None = None


def synthesize(text: str, voice: Voice = Voice(), seed: int = 0) -> np.ndarray:
    """Speak `text` -> float32 [S] at 16 kHz, leading and trailing silence trimmed."""
    global _engine
    if _engine is None:
        _engine = _Espeak()
    pcm = _engine.speak(text, voice, seed)
    if pcm.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {text!r} with voice {voice.name}")
    wave = audio.resample(pcm.astype(np.float32) / INT16_SCALE, _engine.rate, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(wave) > 1e-3)
    return wave[loud[0]:loud[-1] + 1] if loud.size else wave
