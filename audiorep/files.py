"""Atomic file writes (a reader never sees a half-written file, an interrupted job never
leaves one), the layout of a training run's checkpoints, names and relative paths read
from data checked before they become paths, and the lock that keeps one run per folder."""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from pathlib import Path, PureWindowsPath

import numpy as np


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, np.asarray(array, dtype=np.float32))
    os.replace(tmp, path)


CHECKPOINT = re.compile(r"^step_(\d{7})$")  # RUN/checkpoints/step_XXXXXXX, complete once state.json exists


def checkpoints(run: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a training run, oldest first (temporary folders never match)."""
    folder = Path(run) / "checkpoints"
    found = [p for p in folder.iterdir() if CHECKPOINT.match(p.name) and (p / "state.json").exists()] if folder.exists() else []
    return sorted(found)


# ---------------------------------------------------------------- names and paths from data


def check_name(name, what: str) -> str:
    """A name read from data that becomes one path component (a task name, a folder):
    a non-empty string, not '.' or '..', without separators or NUL."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: expected a non-empty name, got {name!r}")
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{what}: {name!r} is not a plain name (no '/', '\\', '..' or '.' allowed)")
    return name


def confine(root: str | os.PathLike, rel, what: str) -> Path:
    """root / rel for a relative path read from data, refused (naming `what`) when it is
    absolute or climbs out of root through '..'. (Symbolic links inside root are followed:
    they are part of the folder, like its files.)"""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise ValueError(f"{what}: expected a relative path, got {rel!r}")
    if Path(rel).is_absolute() or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        raise ValueError(f"{what}: {rel!r} is an absolute path; expected one relative to {root}")
    if ".." in PureWindowsPath(rel).parts:  # both separators
        raise ValueError(f"{what}: {rel!r} leads out of {root} ('..')")
    return Path(root) / rel


# ---------------------------------------------------------------- one run per output folder

LOCK = ".audiorep.lock"  # in a folder a run writes: the pid and host of the run using it


class FolderInUse(RuntimeError):
    """Another live run holds the folder's lock."""


def _alive(pid: int) -> bool:
    """A running process of this host. A zombie (dead, not yet reaped: where PID 1 reaps no
    orphans, as in some containers, a killed run's children stay so) holds nothing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS): signal 0 is all we can know
        return True
    return state not in ("Z", "X")


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, name: str = LOCK, what: str | os.PathLike | None = None):
    """Hold `folder`'s lock (the file `name` in it) for the duration: created with
    O_CREAT | O_EXCL holding "pid host"; a lock left by a dead process of this host is
    taken over; a live one raises FolderInUse naming `what` (default: the folder) and the
    pid. The check-and-take-over runs under a flock of a guard file, so two runs never
    both take a stale lock."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock, me = folder / name, f"{os.getpid()} {socket.gethostname()}"
    with open(folder / f"{name}.guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                holder = lock.read_text(errors="replace").split()
                pid = int(holder[0]) if holder and holder[0].isdigit() else None
                host = holder[1] if len(holder) > 1 else None
                if pid is not None and (host != socket.gethostname() or _alive(pid)):
                    raise FolderInUse(f"another run (pid {pid} on {host}) is using {what or folder}; wait for it to "
                                      f"finish, or delete {lock} if no such run is going") from None
                lock.unlink()  # a dead run's lock (or an unreadable one)
        os.write(fd, me.encode())
        os.close(fd)
    try:
        yield lock
    finally:
        if lock.exists() and lock.read_text(errors="replace") == me:
            lock.unlink()
