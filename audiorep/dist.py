"""Processes under torchrun: who this process is, which device it uses, its share of the work.

Every command that scales past one process asks `world()` once. Outside torchrun (no
WORLD_SIZE, or 1) it is rank 0 of 1 and nothing is initialized. Under torchrun it joins the
process group (nccl on CUDA, gloo otherwise) and takes device `cuda:LOCAL_RANK`, refusing a
rank whose device it cannot see. Work is split by `share` (item i goes to rank i % size), so
every rank knows every other rank's share without talking to it; results meet at rank 0
through the files each rank writes, or `gather` for small objects.

`alone()` makes nested calls see a world of one (keeping the rank's own device): a crossval
rank that trains its own fold must not start a DDP run with the other ranks.

Ranks that wait for each other's share of the work (hours, not minutes) meet in
`gather_patiently`, over a gloo group of its own whose timeout is days, not the default
group's minutes (on CUDA too). A rank that dies brings the others down through torchrun, so
nobody waits for it. `out_lock` is --out's lock held by rank 0, its refusal raised on every
rank; `joined` ends a process group it started (a gloo process left with its group at exit
can abort: "terminate called without an active exception").
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, Sequence, TypeVar

import torch
import torch.distributed as tdist

from .files import FolderInUse, folder_lock

T = TypeVar("T")
_ALONE = [0]  # depth of alone() blocks
PATIENCE = timedelta(days=7)  # the longest a rank waits for the others' share of the work


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment {name}={value!r}: expected an integer (set by torchrun)") from None


def world(device: str = "auto") -> World:
    """This process in the current run. `device`: "auto" (cuda:LOCAL_RANK when CUDA is
    present, else cpu), "cuda", "cpu" or an explicit torch device string."""
    size = 1 if _ALONE[0] else _env_int("WORLD_SIZE", 1)
    rank = 0 if _ALONE[0] else _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)  # alone or not, a rank keeps its own device
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={size}: expected 0 <= RANK < WORLD_SIZE")
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this process sees no CUDA device (torch.cuda.is_available() is False)")
    if size > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        count = torch.cuda.device_count()
        if local >= count:
            raise ValueError(f"rank {rank}: LOCAL_RANK={local} but this process sees {count} CUDA device(s) "
                             "(check CUDA_VISIBLE_DEVICES and torchrun --nproc-per-node)")
        torch.cuda.set_device(local)
        return World(rank, size, local, torch.device("cuda", local))
    return World(rank, size, local, torch.device("cpu" if device == "auto" else device))


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Inside this block `world()` is rank 0 of 1 whatever torchrun set (on cuda:LOCAL_RANK)."""
    _ALONE[0] += 1
    try:
        yield
    finally:
        _ALONE[0] -= 1


def share(items: Sequence[T], w: World) -> list[T]:
    """This rank's items: every `size`-th one, starting at `rank` (deterministic, no talk)."""
    return list(items[w.rank::w.size])


def barrier(w: World) -> None:
    if w.size > 1:
        tdist.barrier()


def gather(obj, w: World) -> list:
    """Every rank's `obj` (picklable, small), in rank order, on every rank."""
    if w.size == 1:
        return [obj]
    out: list = [None] * w.size
    tdist.all_gather_object(out, obj)
    return out


def agree(value, w: World, what: str) -> None:
    """Refuse to go on when the ranks were given different `value`s (arguments, file lists)."""
    values = gather(value, w)
    if any(v != values[0] for v in values):
        raise ValueError(f"{what} differs between ranks: {values}")


@contextlib.contextmanager
def joined(device: str = "auto") -> Iterator[World]:
    """world(device) for the block; a process group it started is ended after it."""
    started = not tdist.is_initialized()
    w = world(device)
    try:
        yield w
    finally:
        if started:
            leave()


def leave() -> None:
    """End this process's part in the process group (and the patient group made on it)."""
    if tdist.is_initialized():
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


def first_error(error: str | None, w: World) -> str | None:
    """The first rank's error among every rank's (None when no rank has one), on every rank:
    a check made by one rank (rank 0 reads --out) stops them all instead of leaving the others
    waiting in a collective."""
    return next((e for e in gather_patiently(error, w) if e), None)


@contextlib.contextmanager
def out_lock(out: str | os.PathLike, w: World) -> Iterator[None]:
    """Rank 0 holds `out`'s lock (files.folder_lock) for the block; when it is refused every
    rank raises the same FolderInUse."""
    with contextlib.ExitStack() as stack:
        refusal = None
        if w.main:
            try:
                stack.enter_context(folder_lock(out))
            except FolderInUse as e:
                refusal = str(e)
        refusal = first_error(refusal, w)
        if refusal:
            raise FolderInUse(refusal)
        yield
