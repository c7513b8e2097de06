"""What the ranks of a torchrun evaluate (or crossval) need beyond dist.py: a process group
ended on the way out, waiting for each other's share of work, which can take hours, and one
lock on --out held by rank 0.

`gather_patiently` is dist.gather over a gloo group of its own whose timeout is days, not the
default group's minutes: a rank that finished its share early waits there for the slowest one
(on CUDA too: the group is gloo whatever the default backend). A rank that dies brings the
others down through torchrun, so nobody waits for it.
"""
from __future__ import annotations

import contextlib
import functools
import os
from datetime import timedelta
from typing import Iterator

import torch.distributed as tdist

from audiorep.dist import World, world
from audiorep.files import FolderInUse, folder_lock

PATIENCE = timedelta(days=7)  # the longest a rank waits for the others' share of the work


@contextlib.contextmanager
def joined(device: str) -> Iterator[World]:
    """dist.world(device) for the block; a process group it started is ended after it (a gloo
    process left with its group at exit can abort: "terminate called without an active exception")."""
    started = not tdist.is_initialized()
    w = world(device)
    try:
        yield w
    finally:
        if started and tdist.is_initialized():
            _patient_group.cache_clear()
            tdist.destroy_process_group()


@functools.cache
def _patient_group():
    return tdist.new_group(backend="gloo", timeout=PATIENCE)


def gather_patiently(obj, w: World) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank; waits up to PATIENCE."""
    if w.size == 1:
        return [obj]
    out: list = [None] * w.size
    tdist.all_gather_object(out, obj, group=_patient_group())
    return out


@contextlib.contextmanager
def out_lock(out: str | os.PathLike, w: World) -> Iterator[None]:
    """Rank 0 holds `out`'s lock (files.folder_lock) for the block; when it is refused every
    rank raises the same FolderInUse instead of waiting for rank 0."""
    with contextlib.ExitStack() as stack:
        refusal = None
        if w.main:
            try:
                stack.enter_context(folder_lock(out))
            except FolderInUse as e:
                refusal = str(e)
        refusal = gather_patiently(refusal, w)[0]
        if refusal:
            raise FolderInUse(refusal)
        yield
