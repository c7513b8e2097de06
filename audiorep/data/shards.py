"""WebDataset-format tar shards: write them, and stream them as batches (no webdataset package).

A shard is a plain tar whose members are grouped by key: `000123.flac` (the audio) and
`000123.json` (`{"labels": [...], "source": ...}`), the layout large AudioSet mirrors use.
`ShardStream` is an IterableDataset yielding collated batches: every epoch the shards are
shuffled with (seed, epoch), each (rank, worker) reads its own subset through a seeded
shuffle buffer, and augmentation is seeded by stream position. The stream is therefore
reproducible, and resuming at micro-step s skips exactly the batches already produced
(same number of processes and workers) without decoding them.
"""
from __future__ import annotations

import copy
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .. import audio
from ..audio import AUDIO_EXTENSIONS
from ..files import confine
from ..tasks import format as task_format
from .datasets import Clip, DataConfig, crop_gain_roll, roll_whole
from .samplers import SEED_STRIDE

SHARD_PATTERN = "shard-{:06d}.tar"


def write_shards(clips: list[Clip], out: str | os.PathLike, sample_rate: int, per_shard: int = 1000) -> list[Path]:
    """Write clips (decoded, mono, resampled) as FLAC + JSON members into tar shards under `out`.

    Each shard is written to a temporary name and renamed when complete.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, first in enumerate(range(0, len(clips), per_shard)):
        path = out / SHARD_PATTERN.format(s)
        tmp = path.with_name(f".{path.name}.tmp")
        with tarfile.open(tmp, "w") as tar:
            for n, clip in enumerate(clips[first:first + per_shard], start=first):
                wave, _ = audio.read(clip.path, sample_rate, start=clip.offset, duration=clip.duration)
                flac = io.BytesIO()
                sf.write(flac, np.clip(wave, -1, 1), sample_rate, format="FLAC", subtype="PCM_16")
                meta = json.dumps({"labels": list(clip.labels), "source": clip.path}).encode()
                for name, data in ((f"{n:09d}.flac", flac.getvalue()), (f"{n:09d}.json", meta)):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), int(time.time())
                    tar.addfile(info, io.BytesIO(data))
        tmp.replace(path)
        paths.append(path)
    labels = sorted({label for clip in clips for label in clip.labels})
    if labels:
        task_format.write_vocabulary(out / task_format.VOCABULARY_FILE, labels)  # next to the shards, as in a HEAR task
    return paths


def shard_vocabulary(spec: str | os.PathLike) -> list[str] | None:
    """The labels of a shard folder (its labelvocabulary.csv), or None for unlabeled shards."""
    path = list_shards(spec)[0].parent / task_format.VOCABULARY_FILE
    return task_format.read_vocabulary(path) if path.exists() else None


def list_shards(spec: str | os.PathLike) -> list[Path]:
    """A folder of .tar files, one .tar file, or a glob such as `corpus/shard-*.tar`."""
    spec = Path(spec)
    if spec.is_dir():
        shards = sorted(spec.glob("*.tar"))
    elif spec.suffix == ".tar" and spec.exists():
        shards = [spec]
    else:
        shards = sorted(spec.parent.glob(spec.name))
    if not shards:
        raise FileNotFoundError(f"{spec}: no .tar shards")
    return shards


def read_samples(path: Path) -> Iterator[dict[str, bytes]]:
    """Members of one shard grouped by key: {"__key__": key, "flac": bytes, "json": bytes, ...}.
    Members are read into memory, never extracted; a member name that is absolute or climbs
    with '..' marks a hostile or broken shard and is refused, naming it."""
    sample: dict[str, bytes] = {}
    with tarfile.open(path, "r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            confine(path, member.name, f"{path}: member")
            folder, _, base = member.name.rpartition("/")
            key, _, ext = base.partition(".")
            key = f"{folder}/{key}" if folder else key
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample["__key__"] = key
            sample[ext.lower()] = tar.extractfile(member).read()
    if sample:
        yield sample


class ShardStream(IterableDataset):
    """Endless batches {"wave": [b, S], "target": [b, C] (with a vocabulary)} from shards.

    batch: items per batch of this process; start: the micro-step to resume at.
    """

    def __init__(self, shards: list[Path], sample_rate: int, crop_samples: int, batch: int, cfg: DataConfig = DataConfig(),
                 vocabulary: list[str] | None = None, seed: int = 0, start: int = 0, rank: int = 0, world: int = 1,
                 buffer: int = 256):
        if cfg.repeat_s > 0:
            raise ValueError(f"data.repeat_s={cfg.repeat_s}: tar shards are streamed, each sample once per pass; "
                             "duration-weighted repeats need a folder, a manifest or a task (data.repeat_s=0)")
        self.shards, self.sample_rate, self.crop_samples = list(shards), sample_rate, crop_samples
        self.batch, self.cfg, self.vocabulary, self.seed = batch, cfg, vocabulary, seed
        self.start, self.rank, self.world, self.buffer = start, rank, world, buffer

    def at(self, **placement) -> "ShardStream":
        """A copy placed in the run: start, rank, world, batch, seed."""
        stream = copy.copy(self)
        for name, value in placement.items():
            setattr(stream, name, value)
        return stream

    def _raw(self, consumer: int, consumers: int) -> Iterator[dict[str, bytes]]:
        """This consumer's endless sample stream, through a seeded shuffle buffer."""
        if len(self.shards) < consumers:
            raise ValueError(f"{len(self.shards)} shards for {consumers} readers (processes x workers): "
                             "write more, smaller shards")
        rng = np.random.default_rng(self.seed * SEED_STRIDE + consumer)
        pool: list[dict[str, bytes]] = []
        epoch = 0
        while True:
            order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch))
            for s in order[consumer::consumers].tolist():
                for sample in read_samples(self.shards[s]):
                    pool.append(sample)
                    if len(pool) >= self.buffer:
                        yield pool.pop(int(rng.integers(len(pool))))
            epoch += 1

    def _decode(self, sample: dict[str, bytes], seed: int) -> dict:
        ext = next((e for e in sample if f".{e}" in AUDIO_EXTENSIONS), None)
        if ext is None:
            raise ValueError(f"shard sample {sample['__key__']}: no audio member ({', '.join(AUDIO_EXTENSIONS)})")
        x, sr = sf.read(io.BytesIO(sample[ext]), dtype="float32", always_2d=True)
        wave = audio.resample(audio.check(audio.to_mono(x), sample["__key__"]), sr, self.sample_rate)
        rng = np.random.default_rng(seed)
        wave, shift = roll_whole(wave, self.cfg, rng)
        audio_samples = len(wave)
        wave, start = crop_gain_roll(wave, self.crop_samples, self.cfg, rng)
        first = (start - shift) % audio_samples if shift else start  # in the unshifted clip
        item = {"wave": torch.from_numpy(np.ascontiguousarray(wave)), "start": torch.tensor(first),
                "length": torch.tensor(min(audio_samples - start, self.crop_samples))}
        if self.vocabulary is not None:
            labels = json.loads(sample.get("json", b"{}")).get("labels", [])
            item["target"] = torch.from_numpy(task_format.multi_hot([labels], self.vocabulary,
                                                               [f"shard sample {sample['__key__']}"])[0])
        return item

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # the loader takes batch m from worker (m - start) % workers: give each worker the
        # logical stream m % workers, so the stream is the same whatever step a run resumed at
        stream = (self.start + worker) % workers
        consumer = self.rank * workers + stream
        skip = max(0, -(-(self.start - stream) // workers)) * self.batch  # samples of batches before start
        position = 0
        items = []
        for sample in self._raw(consumer, self.world * workers):
            position += 1
            if position <= skip:
                continue
            items.append(self._decode(sample, (self.seed + 1) * SEED_STRIDE * 7919 + consumer * 2**40 + position))
            if len(items) == self.batch:
                yield {k: torch.stack([it[k] for it in items]) for k in items[0]}
                items = []
