"""WebDataset-format tar shards: write them, read them (no webdataset package).

A shard is a plain tar whose members are grouped by key (the member's name up to the first
dot of its base name, as webdataset groups them): `000123.flac` (the audio, any extension
in AUDIO_EXTENSIONS) and `000123.json` (`{"labels": [...], "source": ...}`), the layout
large AudioSet mirrors and `webdataset.ShardWriter` write. write_shards records every
sample's frames and labels in shards.json, so what a pass holds is known without reading the
shards; for other shards it is read from the tar headers and json members once
(`shard_contents`, no audio decoded). `member_audio` opens a sample's audio member and
decodes only the span asked for. Training streams them: shard_stream.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import time
import zlib
from pathlib import Path
from typing import IO, Callable, Iterator, NamedTuple

import numpy as np
import soundfile as sf
from tqdm import tqdm

from .. import audio
from ..audio import AUDIO_EXTENSIONS
from ..files import confine, write_json
from ..tasks import format as task_format
from .datasets import Clip, Reader

SHARD_PATTERN = "shard-{:06d}.tar"
FORMATS = {"flac": "FLAC", "wav": "WAV"}  # member format -> soundfile's name; both 16-bit PCM
SETTINGS_FILE = "shards.json"  # what write_shards wrote (a rerun resumes only with the same)
INDEX_STRIDE = 1 << 24  # batch["index"] = shard position x INDEX_STRIDE + order in the shard


def write_shards(clips: list[Clip], out: str | os.PathLike, sample_rate: int, per_shard: int = 1000,
                 fmt: str = "flac") -> list[Path]:
    """Write clips (decoded, mono, resampled) as 16-bit audio (`fmt`: "flac", smaller, or "wav",
    several times faster to decode) + JSON members into tar shards under `out`.

    Each shard is written to a temporary name and renamed when complete; shards already
    complete are kept, so a rerun with the same clips and settings resumes (the settings are
    recorded in OUT/shards.json, and a rerun with others is refused).
    """
    if fmt not in FORMATS:
        raise ValueError(f"shard format {fmt!r}: expected one of {list(FORMATS)}")
    if per_shard < 1:
        raise ValueError(f"per_shard={per_shard}: expected at least one clip per shard")
    out = Path(out)
    firsts = range(0, len(clips), per_shard)
    vocabulary = sorted({label for clip in clips for label in clip.labels})
    column = {label: c for c, label in enumerate(vocabulary)}
    shards = {SHARD_PATTERN.format(s): clips[first:first + per_shard] for s, first in enumerate(firsts)}
    settings = {"clips": len(clips), "sample_rate": sample_rate, "per_shard": per_shard, "format": fmt,
                "first": clips[0].path if clips else None, "last": clips[-1].path if clips else None,
                "samples": {name: len(part) for name, part in shards.items()},
                "labels": {name: [[column[label] for label in dict.fromkeys(clip.labels)] for clip in part]
                           for name, part in shards.items()}}  # indices into labelvocabulary.csv
    record = out / SETTINGS_FILE
    before = json.loads(record.read_text()) if record.exists() else settings
    unchecked = {"frames"} | ({"labels"} - before.keys())  # frames: filled as written; labels: older records lack them
    changed = sorted(k for k in (settings.keys() | before.keys()) - unchecked if before.get(k) != settings.get(k))
    if changed:
        raise ValueError(f"{record}: these shards were written with other settings ({', '.join(changed)}); "
                         "use another folder")
    frames: dict[str, list[int]] = dict(before.get("frames", {}))  # shard name -> frames of each sample
    write_json(record, {**settings, "frames": frames})
    if vocabulary:  # next to the shards, as in a HEAR task; before them, since shards.json's labels index it
        task_format.write_vocabulary(out / task_format.VOCABULARY_FILE, vocabulary)
    paths = []
    for s, first in enumerate(tqdm(firsts, desc=f"writing {out.name} shards", unit="shard")):
        path = out / SHARD_PATTERN.format(s)
        paths.append(path)
        if path.exists():
            if path.name not in frames:  # written before frames were recorded, or by a run cut short
                frames[path.name] = [sample.frames for sample in shard_samples(path, lengths=True)]
            continue
        frames[path.name] = []
        with tar_writer(path) as add:
            for n, clip in enumerate(clips[first:first + per_shard], start=first):
                wave, _ = audio.read(clip.path, sample_rate, start=clip.offset, duration=clip.duration)
                frames[path.name].append(len(wave))
                member = io.BytesIO()
                sf.write(member, np.clip(wave, -1, 1), sample_rate, format=FORMATS[fmt], subtype="PCM_16")
                add(f"{n:09d}.{fmt}", member.getvalue())
                add(f"{n:09d}.json", json.dumps({"labels": list(clip.labels), "source": clip.path}).encode())
    write_json(record, {**settings, "frames": {path.name: frames[path.name] for path in paths}})
    return paths


@contextlib.contextmanager
def tar_writer(path: str | os.PathLike, mtime: int | None = None) -> Iterator[Callable[[str, bytes], None]]:
    """`add(name, data)` appends a member to the tar `path`, written under a temporary name
    and renamed once complete (removed if the block fails: no half shard is ever seen).
    Members are stamped `mtime` (default: now); a fixed one makes the bytes reproducible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tarfile.open(tmp, "w") as tar:
            def add(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), int(time.time()) if mtime is None else mtime
                tar.addfile(info, io.BytesIO(data))
            yield add
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def shard_vocabulary(spec: str | os.PathLike) -> list[str] | None:
    """The labels of a shard folder (its labelvocabulary.csv), or None for unlabeled shards."""
    path = list_shards(spec)[0].parent / task_format.VOCABULARY_FILE
    return task_format.read_vocabulary(path) if path.exists() else None


def list_shards(spec: str | os.PathLike) -> list[Path]:
    """A folder of .tar files, one .tar file, a glob such as `corpus/shard-*.tar`, or a brace
    pattern such as `corpus/{000..099}.tar` (every shard it names must exist)."""
    if "{" in str(spec) and not Path(spec).exists():
        shards = [Path(name) for name in expand_braces(str(spec))]
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: no such shard ({spec} names {len(missing)} missing)")
        return shards
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


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion of a shard pattern, as webdataset does for quoted patterns:
    `a/{000..002}.tar` -> a/000.tar, a/001.tar, a/002.tar (zero padding kept), `{x,y}.tar`
    -> x.tar, y.tar; several groups multiply; a pattern without braces is itself."""
    group = re.search(r"\{([^{}]*)\}", pattern)
    if group is None:
        return [pattern]
    head, tail, body = pattern[:group.start()], pattern[group.end():], group[1]
    span = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if span:
        first, last = int(span[1]), int(span[2])
        width = len(span[1]) if span[1].startswith("0") else 0
        step = 1 if last >= first else -1
        parts = [f"{i:0{width}d}" for i in range(first, last + step, step)]
    elif "," in body:
        parts = body.split(",")
    else:
        raise ValueError(f"{pattern}: {{{body}}} is neither a range {{000..099}} nor a list {{a,b}}")
    return [name for part in parts for name in expand_braces(f"{head}{part}{tail}")]


class ShardError(ValueError):
    """A tar shard that cannot be read to its end; the message names it and the last key read."""


TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


def read_samples(path: Path) -> Iterator[dict[str, bytes]]:
    """Members of one shard grouped by key: {"__key__": key, "flac": bytes, "json": bytes, ...}.
    Members are read into memory, never extracted; a member name that is absolute or climbs
    with '..' marks a hostile or broken shard and is refused, naming it. A tar that breaks off
    (a truncated download, a corrupt block, no end-of-archive marker) raises ShardError after
    the complete samples before the break."""
    sample: dict[str, bytes] = {}
    last = None
    try:
        with tarfile.open(path, "r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = member_key(path, member.name)
                if sample and sample["__key__"] != key:
                    last = sample["__key__"]
                    yield sample
                    sample = {}
                sample["__key__"] = key
                sample[ext.lower()] = tar.extractfile(member).read()
        complete(path)
    except TAR_ERRORS as e:
        after = f"after key {last!r}" if last is not None else "before its first complete sample"
        raise ShardError(f"{path}: unreadable tar {after} ({type(e).__name__}: {e}); truncated or corrupt?") from None
    if sample:
        yield sample


def member_key(path: Path, name: str) -> tuple[str, str]:
    """(key, extension) of a member name: webdataset's grouping (the base name up to its first dot)."""
    confine(path, name, f"{path}: member")
    folder, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), ext


class Sample(NamedTuple):
    """What a pass needs of one sample, known without decoding it."""
    frames: int | None = None               # its audio's length (the audio member's header) ...
    rate: int | None = None                 # ... at this sample rate
    labels: tuple[str, ...] | None = None   # its json member's "labels"


def shard_contents(shards: list[Path], lengths: bool = False, labels: bool = False) -> list[list[Sample]]:
    """What one pass holds: each shard's samples in order, with `lengths` their frames, with
    `labels` their labels. From the folder's shards.json where write_shards recorded them (sample
    counts, every sample's frames and labels), else read from the tar once (shard_samples)."""
    records: dict[Path, tuple[dict, list[str] | None]] = {}  # folder -> (its shards.json, its vocabulary)
    for folder in {p.parent for p in shards}:
        record = json.loads((folder / SETTINGS_FILE).read_text()) if (folder / SETTINGS_FILE).exists() else {}
        vocabulary = folder / task_format.VOCABULARY_FILE
        records[folder] = record, task_format.read_vocabulary(vocabulary) if labels and vocabulary.exists() else None

    def contents(path: Path) -> list[Sample]:
        record, vocabulary = records[path.parent]
        count = record.get("samples", {}).get(path.name)
        frames = record.get("frames", {}).get(path.name) if lengths else None
        tags = record.get("labels", {}).get(path.name) if labels else None
        if count is None or (lengths and frames is None) or (labels and tags is None):
            return shard_samples(path, lengths, labels)
        if not (lengths or labels):
            return [Sample()] * count
        rate = record["sample_rate"] if lengths else None
        try:
            return [Sample(frames[n] if lengths else None, rate,
                           tuple(vocabulary[c] for c in tags[n]) if labels else None) for n in range(count)]
        except (IndexError, TypeError):
            raise ValueError(f"{path.parent / SETTINGS_FILE}: {path.name}: frames or labels do not match its "
                             f"{count} samples and {task_format.VOCABULARY_FILE}; rerun audiorep shards") from None

    return [contents(p) for p in tqdm(shards, desc="reading what the shards hold", unit="shard", leave=False,
                                      disable=len(shards) < 100)]


def shard_samples(path: Path, lengths: bool = False, labels: bool = False) -> list[Sample]:
    """One Sample per sample (key) of a shard, in order, from the tar headers alone (member data
    skipped), with `lengths` the frames and rate its audio member's header declares (only that
    header is read, nothing is decoded), with `labels` its json member's labels."""
    members: list[dict] = []  # per sample: {"__key__": key, extension: TarInfo, ...}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = member_key(path, member.name)
                if not members or members[-1]["__key__"] != key:
                    members.append({"__key__": key})
                members[-1][ext.lower()] = member
            found = []
            for sample in members:
                where = f"{path}: sample {sample['__key__']}"
                frames = rate = tags = None
                if lengths:
                    with tar.extractfile(audio_member(sample, where)) as data, open_audio(data, where) as f:
                        frames, rate = f.frames, f.samplerate
                if labels:
                    tags = sample_labels(tar.extractfile(sample["json"]).read() if "json" in sample else None, where)
                found.append(Sample(frames, rate, tags))
            return found
    except TAR_ERRORS as e:
        raise ShardError(f"{path}: unreadable tar ({type(e).__name__}: {e}); truncated or corrupt?") from None


def sample_labels(member: bytes | None, where: str) -> tuple[str, ...]:
    """The "labels" of a sample's json member (none without one, or without that key)."""
    try:
        data = json.loads(member) if member is not None else {}
    except ValueError as e:
        raise ValueError(f"{where}: json member is not JSON ({e})") from None
    labels = data.get("labels", []) if isinstance(data, dict) else None
    if not isinstance(labels, list):
        raise ValueError(f"{where}: json member: expected an object whose \"labels\" is a list, got {member[:80]!r}")
    return tuple(str(label) for label in labels)


def complete(path: Path) -> None:
    """Refuse a tar without its end: tar writers pad the archive to 512-byte blocks and end it
    with two zero blocks, which tarfile's reader does not require (it stops quietly at a cut
    between members)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 1024))
        end = f.read()
    if size % 512 or end.strip(b"\0"):
        raise tarfile.ReadError(f"no end-of-archive marker ({size} bytes)")


def audio_member(sample: dict[str, bytes], where: str) -> bytes:
    """The one audio member of a sample (any extension in AUDIO_EXTENSIONS)."""
    found = [e for e in sample if e != "__key__" and f".{e}" in AUDIO_EXTENSIONS]
    if len(found) != 1:
        have = ", ".join(f".{e}" for e in sample if e != "__key__") or "nothing"
        need = "no audio member" if not found else f"{len(found)} audio members"
        raise audio.AudioError(f"{where}: {need} (has {have}); expected one of {', '.join(AUDIO_EXTENSIONS)}")
    return sample[found[0]]


def decode(sample: dict[str, bytes], where: str, sample_rate: int) -> np.ndarray:
    """The sample's audio member decoded -> mono float32 [S] at `sample_rate`."""
    with member_audio(sample, where, sample_rate) as (_, read):
        return read(0.0, None)


def decode_error(e: Exception, member: IO[bytes], where: str) -> audio.AudioError:
    """soundfile's error (it raises several types; its message names the file object) -> one naming `where`."""
    return audio.AudioError(f"{where}: cannot decode audio ({str(e).replace(repr(member), 'the member')})")


def open_audio(member: IO[bytes], where: str) -> sf.SoundFile:
    """An audio member opened (only its header read); an unreadable one raises AudioError naming `where`."""
    try:
        return sf.SoundFile(member)
    except Exception as e:
        raise decode_error(e, member, where) from None


@contextlib.contextmanager
def member_audio(sample: dict[str, bytes], where: str, sample_rate: int) -> Iterator[tuple[float, Reader]]:
    """(seconds, read) of the sample's audio member, opened once: read(start s, seconds or None
    = to the end) seeks and decodes only those frames -> mono float32 [S] at `sample_rate`,
    as audio.read reads a file."""
    member = io.BytesIO(audio_member(sample, where))
    f = open_audio(member, where)

    def read(start: float, seconds: float | None) -> np.ndarray:
        first = int(round(start * f.samplerate))
        frames = -1 if seconds is None else int(round(seconds * f.samplerate))
        try:
            f.seek(min(first, f.frames))
            x = f.read(frames, dtype="float32", always_2d=True)
        except Exception as e:
            raise decode_error(e, member, where) from None
        claimed = max(0, f.frames - first) if frames < 0 else min(frames, max(0, f.frames - first))
        audio.check_length(where, len(x), claimed)
        return audio.resample(audio.check(audio.to_mono(x), where), f.samplerate, sample_rate)

    with f:
        yield f.frames / f.samplerate, read
