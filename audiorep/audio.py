"""Audio I/O and plain signal plumbing: read, mono, resample, pad/crop, chunk, write.

Everything here works on numpy float32 arrays and has no nn.Module. Every problem with
an input file raises `AudioError` naming the file and what is wrong with it.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")  # files read as audio
HEAR_RATES = (16000, 22050, 32000, 44100, 48000)  # sample rates a HEAR 2021 model may declare


class AudioError(ValueError):
    """A file or array that cannot be used as audio; the message names it and the problem."""


def audio_files(paths: list, skipped: list[Path] | None = None) -> list[Path]:
    """Files named directly, plus the audio files (AUDIO_EXTENSIONS) found recursively in
    named folders, sorted; a name that does not exist is an error. Anything that is not a
    regular file (a FIFO, a device, a socket) is left out, never opened (reading a FIFO
    would block), and appended to `skipped`."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS)
        elif p.exists():
            found = [p]
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
        for f in found:
            if f.is_file():
                files.append(f)
            elif not f.is_dir() and skipped is not None:
                skipped.append(f)
    return files


def as_float(x: np.ndarray, name: str = "audio") -> np.ndarray:
    """float32 samples, integer PCM scaled to [-1, 1) as soundfile reads it (int16 / 2^15,
    int32 / 2^31, uint8 centred on 128); other types are refused naming `name`."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    if x.dtype in (np.int8, np.int16, np.int32):
        return (x / np.float32(2 ** (8 * x.dtype.itemsize - 1))).astype(np.float32)
    if x.dtype == np.uint8:
        return ((x.astype(np.float32) - 128) / 128).astype(np.float32)
    raise AudioError(f"{name}: audio of dtype {x.dtype} is not PCM samples; pass float, int16, int32, int8 or uint8")


def check(x, name: str = "audio"):
    """Reject empty or non-finite audio (a numpy array, or a torch tensor checked on its own
    device) with a message naming `name`."""
    if (x.numel() if hasattr(x, "numel") else x.size) == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    finite = x.isfinite() if hasattr(x, "isfinite") else np.isfinite(x)
    if not finite.all():
        raise AudioError(f"{name}: audio contains {int((~finite).sum())} NaN/Inf samples")
    return x


def to_mono(x: np.ndarray) -> np.ndarray:
    """[S] or [S, C] (soundfile layout) -> [S] float32, channels averaged."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2 and x.shape[1] == 1:
        return x[:, 0]  # the mean of one channel, without a pass over it (a loader's every crop)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with soxr (high quality); no-op when rates match."""
    if sr_in == sr_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x.astype(np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)
    # soxr takes [S, C]; our batches are [B, S]
    return soxr.resample(x.T.astype(np.float32), sr_in, sr_out, quality="HQ").T.astype(np.float32).copy()


TRUNCATED = re.compile(r"^data : (\d+) \(should be (\d+)\)", re.M)  # libsndfile's note on a short WAV
STREAMED = (0, 0xFFFFFFFF)  # data sizes of WAV written to a pipe (length unknown when the header was written)


def info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """soundfile's header info; a WAV whose data ends before its header says is read up to
    where it ends, with a warning naming the file."""
    try:
        meta = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for broken files
        raise AudioError(f"{path}: cannot read audio ({e})") from None
    short = TRUNCATED.search(meta.extra_info or "")
    if short and int(short[1]) not in STREAMED and int(short[1]) > int(short[2]):
        warnings.warn(f"{path}: truncated file, its header claims {short[1]} bytes of audio, it holds {short[2]}; "
                      f"reading the {meta.frames} frames present", stacklevel=2)
    return meta


def check_length(path, got: int, claimed: int) -> None:
    """Refuse a file whose data ends before its header says (a truncated download)."""
    if got < claimed:
        raise AudioError(f"{path}: holds {got} samples where its header claims {claimed} (truncated file?)")


def read(path: str | os.PathLike, sample_rate: int | None = None, start: float = 0.0,
         duration: float | None = None) -> tuple[np.ndarray, int]:
    """Read a file (any format soundfile reads) -> mono float32 [S] at `sample_rate`."""
    if Path(path).exists() and not Path(path).is_file():
        raise AudioError(f"{path}: not a regular file (FIFO, device or socket)")
    meta = info(path)
    first = int(round(start * meta.samplerate))
    frames = -1 if duration is None else int(round(duration * meta.samplerate))
    try:
        x, sr = sf.read(str(path), start=first, frames=frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from None
    claimed = max(0, meta.frames - first) if frames < 0 else min(frames, max(0, meta.frames - first))
    check_length(path, len(x), claimed)
    x = check(to_mono(x), str(path))
    if sample_rate is not None:
        x, sr = resample(x, sr, sample_rate), sample_rate
    return x, sr


def read_blocks(path: str | os.PathLike, sample_rate: int, block_s: float = 60.0) -> Iterator[np.ndarray]:
    """Stream a long file as mono blocks of about `block_s` seconds at `sample_rate`.

    Memory stays bounded by one block whatever the file's length; resampling is
    continuous across blocks (soxr stream), so concatenated blocks equal `read()`
    up to resampler state at the edges.
    """
    if Path(path).exists() and not Path(path).is_file():
        raise AudioError(f"{path}: not a regular file (FIFO, device or socket)")
    meta = info(path)
    stream = None if meta.samplerate == sample_rate else soxr.ResampleStream(
        meta.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
    block = max(1, int(block_s * meta.samplerate))
    total = 0
    try:
        for raw in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
            x = check(to_mono(raw), str(path))
            total += len(x)
            out = x if stream is None else stream.resample_chunk(x, last=False)
            if len(out):
                yield out
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from None
    if total == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    check_length(path, total, meta.frames)
    if stream is not None:
        tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail


def pad_or_crop(x: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """Zero-pad at the end or crop from `offset` to exactly `length` samples (last axis)."""
    n = x.shape[-1]
    if n >= length:
        return x[..., offset:offset + length]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, length - n)]
    return np.pad(x, pad)


def window_starts(n: int, size: int, hop: int, to_end: bool = True) -> list[int]:
    """Starts of windows of `size` every `hop` samples over n samples; with `to_end` a last
    window ends at n (audio no longer than one window: a single window at 0)."""
    if n <= size:
        return [0]
    starts = list(range(0, n - size + 1, hop))
    return starts if starts[-1] == n - size or not to_end else starts + [n - size]


def chunk(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    """[S] -> [K, size] windows at `window_starts`; audio shorter than `size` is zero-padded."""
    if len(x) <= size:
        return pad_or_crop(x, size)[None]
    return np.stack([x[s:s + size] for s in window_starts(len(x), size, hop)])


def write(path: str | os.PathLike, x: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono audio atomically (temp file + rename), clipping to [-1, 1]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), np.clip(x, -1.0, 1.0), sample_rate, subtype=subtype, format=path.suffix[1:].upper() or "WAV")
    os.replace(tmp, path)
