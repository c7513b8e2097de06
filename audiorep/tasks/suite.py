"""The offline task suite and the unlabeled pretraining corpus.

`build_suite(out, seed, size)` writes every task of TASKS under `out/<task>/` in the HEAR
format. Each task is built in its own fresh process (espeak-ng output depends on the calls
made before it in a process, see speech.py), so a task's bytes depend only on (seed, size),
whatever else is built and in whatever order; two processes build in parallel.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from audiorep import audio
from audiorep.tasks import asr_suite, instruments, mixing, music_tasks, sound_tasks, speech, speech_tasks
from audiorep.tasks.format import SAMPLE_RATE, TaskWriter
from audiorep.tasks.instruments import Note
from audiorep.tasks.scaffold import SIZES, Recipe, program_pools, rng_for, voice_pools

# task folder name -> (builder, HEAR 2021 counterpart)
TASKS: dict[str, tuple[Callable[[int, str], Recipe], str]] = {
    "keywords": (speech_tasks.keywords, "speech_commands-v0.0.2-5h"),
    "speaker_count": (speech_tasks.speaker_count, "libricount-v1.0.0-full"),
    "language_id": (speech_tasks.language_id, "vox_lingua_top10-hear2021-full"),
    "speaking_style": (speech_tasks.speaking_style, "tfds_crema_d-1.0.0-full (emotion; here speaking style)"),
    "pitch": (music_tasks.pitch, "nsynth_pitch-v2.2.3-5h"),
    "family": (music_tasks.family, "nsynth instrument family (not in HEAR 2021; NSynth's own label)"),
    "sound_classes": (sound_tasks.sound_classes, "esc50-v2.0.0-full"),
    "piano_transcription": (music_tasks.piano_transcription, "maestro-v3.0.0-5h"),
    "scene_events": (sound_tasks.scene_events, "dcase2016_task2-hear2021-full"),
}
# transcribed-speech tasks (tasks/asr_task.py layout, not HEAR's): built only when named (--tasks asr_en)
ASR_TASKS: dict[str, tuple[Callable[[int, str], asr_suite.AsrRecipe], str]] = {
    "asr_en": (asr_suite.asr_en, "LibriSpeech train-clean-100 / test-clean as SUPERB runs it (EnCodecMAE Table 2)"),
}
WORKERS = 2
CORPUS_CLIP_S = 10.0
CORPUS_KINDS = ("speech", "music", "speech+music")


def write_recipe(recipe: Recipe | asr_suite.AsrRecipe, out: str | os.PathLike, overwrite: bool = True,
                 progress: bool = True) -> Path:
    """Write every example of `recipe` as a HEAR task at `out` (atomically); a transcribed-speech
    recipe writes its own layout (tasks/asr_task.py)."""
    if isinstance(recipe, asr_suite.AsrRecipe):
        return recipe.write(out, overwrite=overwrite)
    with TaskWriter(out, recipe.metadata, recipe.vocabulary, overwrite=overwrite) as writer:
        for split, wave, labels in tqdm(recipe.examples(), total=recipe.count, desc=Path(out).name,
                                        disable=not progress, leave=False):
            writer.add(split, wave, labels)
    return Path(out)


def build_task(name: str, out: str | os.PathLike, seed: int = 0, size: str = "small", progress: bool = True) -> Path:
    """Build one task of TASKS or ASR_TASKS at `out` in this process."""
    builders = {**TASKS, **ASR_TASKS}
    if name not in builders:
        raise KeyError(f"unknown task {name!r}; tasks: {', '.join(builders)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return write_recipe(builders[name][0](seed, size), out, progress=progress)


def _build_in_worker(args: tuple[str, str, int, str]) -> str:
    name, out, seed, size = args
    return str(build_task(name, out, seed, size, progress=False))


def build_suite(out: str | os.PathLike, seed: int = 0, size: str = "small", tasks: list[str] | None = None,
                workers: int = WORKERS) -> list[Path]:
    """Build the suite (or the named `tasks`) under `out`; -> the task folders.

    Each task runs in a fresh spawned process; an existing task folder is replaced only
    once its new version is complete.
    """
    names = list(TASKS) if tasks is None else list(tasks)
    unknown = [n for n in names if n not in TASKS and n not in ASR_TASKS]
    if unknown:
        raise KeyError(f"unknown tasks {unknown}; tasks: {', '.join([*TASKS, *ASR_TASKS])}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(n, str(out / n), seed, size) for n in names]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, max_tasks_per_child=1) as pool:
        done = list(tqdm(pool.map(_build_in_worker, jobs), total=len(jobs), desc=f"suite ({size}, seed {seed})"))
    return [Path(p) for p in done]


# ---------------------------------------------------------------- pretraining corpus


def _corpus_speech(rng: np.random.Generator, variants: list[str], length: int) -> np.ndarray:
    mix = np.zeros(length, np.float32)
    for _ in range(int(rng.integers(1, 3))):
        voice = speech.Voice(str(rng.choice(speech_tasks.LANGUAGES)), str(rng.choice(variants)),
                             rate=int(rng.integers(120, 260)), pitch=int(rng.integers(20, 85)),
                             pitch_range=int(rng.integers(10, 100)))
        words = " ".join(str(int(rng.integers(1, 10_000))) for _ in range(6))
        said = speech.synthesize(words, voice, seed=int(rng.integers(0, 2**31)))
        mix += mixing.at_level(mixing.place_randomly(rng, said, length), float(rng.uniform(-28, -20)))
    return mix


def _corpus_music(rng: np.random.Generator, programs: list[int], length: int) -> np.ndarray:
    notes, duration = [], length / mixing.SAMPLE_RATE
    for program in rng.choice(programs, size=int(rng.integers(1, 4)), replace=False):
        t, centre = float(rng.uniform(0, 1)), int(rng.integers(40, 80))
        while t < duration - 0.5:
            end = min(duration, t + float(rng.uniform(0.1, 1.5)))
            notes.append(Note(int(program), int(np.clip(centre + rng.integers(-7, 8), 21, 108)), t, end,
                              velocity=int(rng.integers(50, 120))))
            t = end + float(rng.exponential(0.3))
    return mixing.at_level(instruments.render(notes, duration), float(rng.uniform(-28, -18)))


def _in_fresh_process(fn: Callable, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def build_corpus(out: str | os.PathLike, hours: float, seed: int = 0, overwrite: bool = False) -> Path:
    """Unlabeled 10 s clips (speech, music, both) at 16 kHz under `out/16000/`, with manifest.json.

    Only the train pools are used: talkers and instruments of every trainvaltest test split
    never occur, nor do the piano program, the sound-effect programs or the percussion of the
    k-fold tasks (whose every fold is a test fold somewhere). The corpus's own generator
    streams are distinct from every task's, so no task clip is repeated. It is written in a
    fresh process, so the same (hours, seed) gives the same bytes.
    """
    return Path(_in_fresh_process(_write_corpus, str(out), hours, seed, overwrite))


def _write_corpus(out: str, hours: float, seed: int, overwrite: bool) -> str:
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite to replace it)")
    count, length = max(1, int(round(hours * 3600 / CORPUS_CLIP_S))), mixing.seconds(CORPUS_CLIP_S)
    variants = voice_pools(seed)["train"]
    programs = sorted(p for family in program_pools(seed)["train"].values() for p in family)
    rng = rng_for(seed, "corpus")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = {}
    try:
        for i in tqdm(range(count), desc="corpus"):
            kind = str(rng.choice(CORPUS_KINDS))
            wave = np.zeros(length, np.float32)
            if "speech" in kind:
                wave += _corpus_speech(rng, variants, length)
            if "music" in kind:
                wave += _corpus_music(rng, programs, length)
            wave = mixing.add_noise(rng, wave, float(rng.uniform(15, 45)))
            name = f"{i:06d}.wav"
            audio.write(tmp / str(SAMPLE_RATE) / name, wave, SAMPLE_RATE)
            manifest[name] = kind
        (tmp / "manifest.json").write_text(json.dumps({"seed": seed, "clip_s": CORPUS_CLIP_S, "clips": manifest},
                                                      indent=1, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return str(out)


def iter_task_dirs(root: str | os.PathLike) -> Iterator[Path]:
    """Task folders (those holding task_metadata.json) at or directly under `root`."""
    root = Path(root)
    if (root / "task_metadata.json").exists():
        yield root
        return
    yield from sorted(p.parent for p in root.glob("*/task_metadata.json"))
