"""Clip lists from folders, manifests and HEAR task splits, and the dataset that crops them.

A clip is (file, offset s, duration s or None, labels). `ClipDataset` turns clip i into a
fixed-length random crop at the encoder's sample rate with random gain and circular roll
(or `views` such crops, for recipes that compare views of one clip).
Its randomness comes from the key it is indexed with, `(i, seed)` as the samplers yield
them, never from global state, so a batch is a function of (run seed, step) whichever
worker decodes it: the basis of exact resume.

With `DataConfig.repeat_s > 0` the dataset's positions are clips repeated by duration: clip c
holds max(1, duration_c // repeat_s) positions, so a shuffled epoch draws long clips that many
times (the EnCodecMAE release's `compensate_lengths`); `batch["index"]` stays the clip's index.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import audio
from ..files import confine
from ..tasks import format as task_format

LABEL_SEPARATORS = (";", "|")  # a manifest's labels column: "dog;bark" or "dog|bark"


@dataclass(frozen=True)
class Clip:
    path: str
    offset: float = 0.0              # seconds into the file
    duration: float | None = None    # seconds; None = to the end of the file
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataConfig:
    crop_s: float = 0.0       # training crop length; 0 = what the encoder's positions cover
    gain_db: float = 0.0      # random gain drawn uniformly in [-gain_db, gain_db]
    roll: bool = True         # random circular shift of each crop within itself (Audio-MAE, PaSST)
    roll_clip: float = 0.0    # probability of a random circular shift of the whole clip before
                              # cropping (ASiT release: 0.5); reads the whole clip when it rolls
    repeat_s: float = 0.0     # > 0: each clip is drawn max(1, duration // repeat_s) times per epoch
                              # (EnCodecMAE release: 4 s, its crop length); 0 = once
    balanced: bool = False    # class-balanced sampling (multi-label data with labels)
    workers: int = 2          # loader processes decoding and resampling

    def __post_init__(self):
        if not 0.0 <= self.roll_clip <= 1.0:
            raise ValueError(f"data.roll_clip={self.roll_clip}: expected a probability in [0, 1]")
        if not (math.isfinite(self.repeat_s) and self.repeat_s >= 0):
            raise ValueError(f"data.repeat_s={self.repeat_s}: expected seconds >= 0 (0 = each clip once per epoch)")


def repeats(seconds: float, repeat_s: float) -> int:
    """Positions of a clip of `seconds` in one pass: 1, or with repeat_s > 0 max(1, seconds // repeat_s)."""
    return max(1, int(seconds // repeat_s)) if repeat_s > 0 else 1


def folder_clips(root: str | os.PathLike) -> list[Clip]:
    """Every audio file under `root` (recursively), sorted, without labels."""
    files = audio.audio_files([root])
    if not files:
        raise FileNotFoundError(f"{root}: no audio files ({', '.join(audio.AUDIO_EXTENSIONS)})")
    return [Clip(str(p)) for p in files]


def _labels(value, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        for sep in LABEL_SEPARATORS:
            if sep in value:
                return tuple(v.strip() for v in value.split(sep) if v.strip())
        return (value.strip(),)
    raise ValueError(f"{where}: labels must be a list or a string, got {type(value).__name__}")


def _clip(row, base: Path, where: str) -> Clip:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object with 'path', got {type(row).__name__}")
    if not row.get("path"):
        raise ValueError(f"{where}: missing 'path'")
    path = confine(base, row["path"], f"{where}: path")
    try:
        offset = float(row.get("offset") or 0.0)
        duration = float(row["duration"]) if row.get("duration") not in (None, "") else None
    except ValueError as e:
        raise ValueError(f"{where}: bad offset/duration ({e})") from None
    if not (math.isfinite(offset) and offset >= 0):
        raise ValueError(f"{where}: offset={offset}: expected seconds >= 0")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"{where}: duration={duration}: expected seconds > 0")
    return Clip(str(path), offset, duration, _labels(row.get("labels"), where))


def manifest_clips(path: str | os.PathLike) -> list[Clip]:
    """A CSV (header with `path` and optional `offset`, `duration`, `labels`) or JSONL manifest.

    Paths are relative to the manifest's folder and must stay below it (no absolute paths,
    no '..'); CSV labels are separated by ';' or '|'.
    """
    path = Path(path)
    base = path.parent
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        clips = []
        for line, row in enumerate(text.splitlines(), start=1):
            if row.strip():
                try:
                    data = json.loads(row)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line}: not valid JSON ({e})") from None
                clips.append(_clip(data, base, f"{path}:{line}"))
    elif path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ValueError(f"{path}: CSV header must have a 'path' column, got {reader.fieldnames}")
        clips = [_clip(row, base, f"{path}:{line}") for line, row in enumerate(reader, start=2)]
    else:
        raise ValueError(f"{path}: manifests are .csv or .jsonl")
    if not clips:
        raise ValueError(f"{path}: no clips")
    return clips


def task_clips(task_dir: str | os.PathLike, split: str) -> tuple[list[Clip], list[str]]:
    """(clips, vocabulary) of a HEAR task split; event tasks give each clip its event labels."""
    task = task_format.load_task(task_dir)
    if split not in task.splits:
        raise ValueError(f"{task_dir}: no split {split!r} (splits: {task.split_names})")
    clips = []
    for rel, ann in task.items(split):
        labels = sorted({x["label"] for x in ann}) if task.embedding_type == "event" else list(ann)
        clips.append(Clip(str(task.path / rel), labels=tuple(labels)))  # load_task refuses names that are not plain
    return clips, task.vocabulary


def multi_hot(clips: list[Clip], vocabulary: list[str]) -> torch.Tensor:
    """[N, C] float targets (tasks.format.multi_hot); an unknown label is an error naming the clip."""
    return torch.from_numpy(task_format.multi_hot([c.labels for c in clips], vocabulary, [c.path for c in clips]))


def rolls(cfg: DataConfig, rng: np.random.Generator | None) -> bool:
    """Whether this item's whole clip is rolled (probability cfg.roll_clip); draws nothing when
    roll_clip is 0, so other settings keep their random streams."""
    return rng is not None and cfg.roll_clip > 0 and rng.random() < cfg.roll_clip


def shift_circularly(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """[S] -> ([S] circularly shifted by a uniform number of samples, the shift)."""
    shift = int(rng.integers(0, len(wave)))
    return np.roll(wave, shift), shift


def roll_whole(wave: np.ndarray, cfg: DataConfig, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
    """[S] -> (wave shifted circularly with probability cfg.roll_clip, the shift; 0 when not rolled)."""
    return shift_circularly(wave, rng) if rolls(cfg, rng) else (wave, 0)


def crop_gain_roll(wave: np.ndarray, length: int, cfg: DataConfig,
                   rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
    """[S] -> ([length], start): random crop (or zero pad) from `start`, gain and roll;
    the deterministic first `length` samples without rng."""
    start = int(rng.integers(0, len(wave) - length + 1)) if rng is not None and len(wave) > length else 0
    wave = audio.pad_or_crop(wave, length, start)
    if rng is None:
        return wave, start
    if cfg.gain_db:
        wave = wave * np.float32(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
    if cfg.roll:
        wave = np.roll(wave, int(rng.integers(0, length)))
    return wave, start


Reader = Callable[[float, "float | None"], np.ndarray]  # (start s, seconds or None = to the end) -> mono [S]


def read_span(read: Reader, offset: float, duration: float, crop_samples: int, sample_rate: int,
              rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
    """(audio, its first sample in the clip) of a clip of `duration` s starting `offset` s into
    its source: only the crop's span (a uniform start) when the clip is longer."""
    crop_s = crop_samples / sample_rate
    if duration <= crop_s or rng is None:
        start = offset
    else:
        start = offset + rng.uniform(0, duration - crop_s)
    return read(start, min(duration, crop_s)), round((start - offset) * sample_rate)


def draw_crops(span: Callable[[], tuple[np.ndarray, int]], whole: Callable[[], np.ndarray], crop_samples: int,
               cfg: DataConfig, rng: np.random.Generator | None, views: int) -> dict:
    """One item's crops -> {"wave": [S] ([V, S] with views = V > 1), "start": the crop's first
    sample in the clip, "length": its samples of audio before zero padding ([V] each with views)}.
    span(): (a crop's span, its first sample; drawn from rng); whole(): the whole clip, read
    only when it rolls (cfg.roll_clip: once per item, every view cut from the same rolled clip)."""
    rolled = shift_circularly(whole(), rng) if rolls(cfg, rng) else None
    crops = []
    for _ in range(views):
        wave, first = span() if rolled is None else (rolled[0], -rolled[1])
        audio_samples = len(wave)
        wave, start = crop_gain_roll(wave, crop_samples, cfg, rng)
        begin = first + start if rolled is None else (first + start) % audio_samples
        crops.append((np.ascontiguousarray(wave, dtype=np.float32), begin, min(audio_samples - start, crop_samples)))
    waves = torch.from_numpy(np.stack([w for w, _, _ in crops]))  # [V, S]
    starts, lengths = torch.tensor([[s, n] for _, s, n in crops]).T  # [V] each
    if views == 1:
        return {"wave": waves[0], "start": starts[0], "length": lengths[0]}
    return {"wave": waves, "start": starts, "length": lengths}


class ClipDataset(Dataset):
    """Clips -> {"wave": [S] float32 ([V, S] with views = V), "start": first sample of the crop
    in the clip ([V]), "length": samples of audio in the crop before zero padding ([V]),
    "target": [C] (with a vocabulary), "index": the clip's index}.

    Index with `(p, seed)` for random crops/gain/roll drawn from `seed`, or with `p` for
    the deterministic first `crop_samples` (evaluation). Position p is clip `clip_of[p]`:
    the clips themselves, or with `cfg.repeat_s` each clip repeated by its duration;
    `targets` ([len, C]) is per position, so class-balanced weights count the repeats.
    """

    def __init__(self, clips: list[Clip], sample_rate: int, crop_samples: int, cfg: DataConfig = DataConfig(),
                 vocabulary: list[str] | None = None, views: int = 1):
        if views < 1:
            raise ValueError(f"views={views}: a dataset gives at least one crop per clip")
        self.clips = clips
        self.sample_rate = sample_rate
        self.crop_samples = crop_samples
        self.cfg = cfg
        self.vocabulary = vocabulary
        self.views = views
        self.clip_of = np.arange(len(clips))  # [P] clip of each position
        if cfg.repeat_s > 0:
            self.clip_of = np.repeat(self.clip_of, [repeats(self.duration(c), cfg.repeat_s) for c in clips])
        self.targets = multi_hot(clips, vocabulary)[torch.from_numpy(self.clip_of)] if vocabulary is not None else None

    def __len__(self) -> int:
        return len(self.clip_of)

    @staticmethod
    def duration(clip: Clip) -> float:
        """Seconds of the clip: its manifest duration, or the file's from the offset on."""
        if clip.duration is not None:
            return clip.duration
        meta = audio.info(clip.path)
        return meta.frames / meta.samplerate - clip.offset

    def read(self, clip: Clip, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
        """(audio, its first sample in the clip): only the crop's span when the clip is longer."""
        return read_span(self.reader(clip), clip.offset, self.duration(clip), self.crop_samples, self.sample_rate, rng)

    def reader(self, clip: Clip) -> Reader:
        return lambda start, seconds: audio.read(clip.path, self.sample_rate, start=start, duration=seconds)[0]

    def __getitem__(self, key) -> dict:
        p, seed = key if isinstance(key, tuple) else (key, None)
        i = int(self.clip_of[p])
        clip = self.clips[i]
        rng = np.random.default_rng(seed) if seed is not None else None
        item = draw_crops(lambda: self.read(clip, rng), lambda: self.reader(clip)(clip.offset, clip.duration),
                          self.crop_samples, self.cfg, rng, self.views)
        item["index"] = i
        if self.targets is not None:
            item["target"] = self.targets[p]
        return item
