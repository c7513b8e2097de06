"""Tar shards (shards.py) streamed as training batches: `ShardStream`, an IterableDataset.

Every epoch the shards are shuffled with (seed, epoch), each (rank, worker) reads its own
subset through a seeded shuffle buffer, and augmentation is seeded by stream position. The
stream is therefore reproducible, and resuming at micro-step s skips exactly the batches
already produced (same number of processes and workers) without decoding them. Its items are
ClipDataset's (the same crops, gain and rolls for the same seed, `views` crops per clip,
"start", "length"), read by seeking in the audio member: only the crop's span is decoded, the
whole clip only when it rolls (data.roll_clip). Its "index" names the sample: the shard's
position in the run's shard list x INDEX_STRIDE + the sample's order in its shard. With
data.repeat_s a sample fills max(1, seconds // repeat_s) positions of a pass, as a clip does in
ClipDataset (its length read from the audio member's header); with data.balanced it fills a
seeded, stochastically rounded number of positions whose expectation is StepSampler's
class-balanced draws (`pass_plan`). Skipped positions are never decoded.
"""
from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..tasks import format as task_format
from .datasets import DataConfig, draw_crops, read_span, repeats
from .samplers import SEED_STRIDE, class_balanced_weights
from .shards import (INDEX_STRIDE, SETTINGS_FILE, ShardError, member_audio, read_samples, sample_labels,
                     shard_contents)


class Plan(NamedTuple):
    """One pass of a stream, per shard in the run's order, per sample in its shard's order."""
    positions: list[np.ndarray]  # int64: its positions in the unbalanced pass (1, or its repeats)
    expected: list[np.ndarray]   # float64: the positions it fills on average (balanced: weighted)


def pass_plan(shards: list[Path], repeat_s: float = 0.0, balanced_over: list[str] | None = None) -> Plan:
    """The positions of every sample of a pass (shard_contents, so no audio is decoded): its repeats
    (data.repeat_s), and with `balanced_over` (the vocabulary) class-balanced expectations:
    sample i of r_i positions fills P x r_i x w_i / sum_j r_j x w_j of the P positions of a pass,
    w the class_balanced_weights of one position, as StepSampler draws them with replacement."""
    contents = shard_contents(shards, lengths=repeat_s > 0, labels=balanced_over is not None)
    positions = [np.array([repeats(x.frames / x.rate, repeat_s) if repeat_s > 0 else 1 for x in shard],
                          dtype=np.int64) for shard in contents]
    if balanced_over is None:
        return Plan(positions, [p.astype(np.float64) for p in positions])
    column = {label: c for c, label in enumerate(balanced_over)}
    rows, cols = [], []  # the nonzeros of the [N, C] multi-hot targets
    for path, shard, first in zip(shards, contents, np.cumsum([0] + [len(x) for x in contents]).tolist()):
        for n, sample in enumerate(shard):
            for label in dict.fromkeys(sample.labels):
                if label not in column:
                    raise ValueError(f"{path}: sample #{n}: label {label!r} is not in the vocabulary "
                                     f"({len(column)} labels)")
                rows.append(first + n)
                cols.append(column[label])
    r = np.concatenate(positions)  # [N]
    targets = torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.int64).reshape(2, -1),
                                      torch.ones(len(rows)), (len(r), len(column)), check_invariants=True)  # [N, C]
    w = class_balanced_weights(targets, repeats=torch.from_numpy(r).float()).double().numpy()  # [N]
    expected = r.sum() * r * w / (r * w).sum()
    return Plan(positions, np.split(expected, np.cumsum([len(p) for p in positions])[:-1]))


def draws(expected: np.ndarray, seed: int, epoch: int, s: int) -> np.ndarray:
    """Positions of shard s's samples in pass `epoch`: `expected` rounded stochastically (its
    floor, plus one with the probability of its fraction, drawn from (seed, epoch, s) and the
    sample's order: the same in any number of processes and workers); whole numbers stay."""
    whole = np.floor(expected)
    return (whole + (np.random.default_rng([seed, epoch, s]).random(len(expected)) < expected - whole)).astype(np.int64)


class ShardStream(IterableDataset):
    """Endless batches from shards, as ClipDataset's items collated: {"wave": [b, S] ([b, V, S]
    with views = V > 1), "start", "length" ([b] or [b, V]), "index" [b], "target": [b, C] (with
    a vocabulary)}. len() is the positions of one unbalanced pass, whether balanced or not
    (pass_plan, computed once: from shards.json, or a scan of the tars without it).

    With cfg.repeat_s > 0 a sample of d seconds (its audio member's header) fills
    max(1, d // repeat_s) positions per pass, as in ClipDataset: each its own item seed (its own
    crop, gain and rolls), all with the sample's "index". The repeats stay in the shuffle buffer
    as one entry that leaves when its last repeat is drawn, so the buffer holds `buffer` distinct
    samples and a sample's r repeats are spread over about r x buffer positions (ClipDataset's
    shuffle spreads them over the whole epoch).

    balanced (default cfg.balanced; the loop sets it from its data.balanced, as for files):
    class-balanced passes, the stream's form of StepSampler's draws with replacement: in pass e
    sample i fills k_i positions, E[k_i] = P x r_i x w_i / sum_j r_j x w_j (P = len(), r_i its
    repeats, w class_balanced_weights over the whole pass), k_i rounded stochastically from
    (seed, e, shard, order), so passes vary in length around P and resume stays exact. A rare
    sample's k_i draws are spread over about k_i x buffer positions like repeats, not over the
    pass. Needs labelled shards (a vocabulary).

    batch: items per batch of this process; start: the micro-step to resume at.
    """

    def __init__(self, shards: list[Path], sample_rate: int, crop_samples: int, batch: int,
                 cfg: DataConfig = DataConfig(), vocabulary: list[str] | None = None, seed: int = 0, start: int = 0,
                 rank: int = 0, world: int = 1, buffer: int = 256, views: int = 1):
        if views < 1:
            raise ValueError(f"views={views}: a stream gives at least one crop per clip")
        self.shards, self.sample_rate, self.crop_samples = list(shards), sample_rate, crop_samples
        self.batch, self.cfg, self.vocabulary, self.seed = batch, cfg, vocabulary, seed
        self.start, self.rank, self.world, self.buffer, self.views = start, rank, world, buffer, views
        self.balanced = cfg.balanced
        self._plan: tuple[tuple, Plan] | None = None  # ((repeat_s, balanced), the plan for them)

    def __len__(self) -> int:
        return int(sum(p.sum() for p in self.plan().positions))

    def plan(self) -> Plan:
        """The pass plan for this stream's repeat_s and balance, computed once (pass_plan)."""
        key = (self.cfg.repeat_s, self.balanced)
        if self._plan is None or self._plan[0] != key:
            if self.balanced and self.vocabulary is None:
                raise ValueError(f"data.balanced=true needs labelled shards: {self.shards[0].parent} has no "
                                 f"{task_format.VOCABULARY_FILE} (write them from labelled data, or set "
                                 "data.balanced=false)")
            self._plan = key, pass_plan(self.shards, self.cfg.repeat_s, self.vocabulary if self.balanced else None)
        return self._plan[1]

    def at(self, **placement) -> "ShardStream":
        """A copy placed in the run: start, rank, world, batch, seed, balanced."""
        stream = copy.copy(self)
        for name, value in placement.items():
            setattr(stream, name, value)
        return stream

    def samples(self, s: int, expected: int | None = None) -> Iterator[tuple[int, dict[str, bytes]]]:
        """(index, sample) of shard s in order; index = s x INDEX_STRIDE + the sample's order.
        expected: the samples the pass plan counted in it (another number is an error)."""
        n = -1
        for n, sample in enumerate(read_samples(self.shards[s])):
            if n >= INDEX_STRIDE:
                raise ShardError(f"{self.shards[s]}: more than {INDEX_STRIDE} samples; write smaller shards")
            if expected is not None and n >= expected:
                break
            yield s * INDEX_STRIDE + n, sample
        if expected is not None and n + 1 != expected:
            found = f"{n + 1}" if n < expected else f"more than {expected}"
            raise ShardError(f"{self.shards[s]}: {found} samples, where {SETTINGS_FILE} (or the scan at start) "
                             f"counted {expected}; changed since? rerun audiorep shards")

    def shard_order(self, epoch: int) -> list[int]:
        """The shards in pass `epoch`'s order; reader c of n reads [c::n] of it."""
        shuffle = torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch)
        return torch.randperm(len(self.shards), generator=shuffle).tolist()

    def _raw(self, consumer: int, consumers: int) -> Iterator[tuple[int, dict[str, bytes]]]:
        """This consumer's endless (index, sample) stream, one entry a position, through a seeded
        shuffle buffer of `buffer` samples (a sample leaves it once all its draws are drawn)."""
        if len(self.shards) < consumers:
            raise ValueError(f"{len(self.shards)} shards for {consumers} readers (processes x workers): "
                             "write more, smaller shards")
        plan = self.plan()
        rng = np.random.default_rng(self.seed * SEED_STRIDE + consumer)
        pool: list[list] = []  # [index, sample, draws left]
        epoch = 0
        while True:
            for s in self.shard_order(epoch)[consumer::consumers]:
                counts = draws(plan.expected[s], self.seed, epoch, s)  # [samples of shard s]
                for (index, sample), k in zip(self.samples(s, len(counts)), counts.tolist()):
                    if k:
                        pool.append([index, sample, k])
                    while len(pool) >= self.buffer:
                        pick = int(rng.integers(len(pool)))
                        entry = pool[pick]
                        entry[2] -= 1
                        if not entry[2]:
                            pool.pop(pick)
                        yield entry[0], entry[1]
            epoch += 1

    def where(self, index: int, sample: dict[str, bytes]) -> str:
        return f"{self.shards[index // INDEX_STRIDE]}: sample {sample['__key__']}"

    def item(self, index: int, sample: dict[str, bytes], seed: int | None) -> dict:
        """ClipDataset's item for this sample and item seed (None: the deterministic first crop)."""
        where = self.where(index, sample)
        rng = np.random.default_rng(seed) if seed is not None else None
        with member_audio(sample, where, self.sample_rate) as (seconds, read):
            item = draw_crops(lambda: read_span(read, 0.0, seconds, self.crop_samples, self.sample_rate, rng),
                              lambda: read(0.0, None), self.crop_samples, self.cfg, rng, self.views)
        item["index"] = torch.tensor(index)
        if self.vocabulary is not None:
            labels = sample_labels(sample.get("json"), where)
            item["target"] = torch.from_numpy(task_format.multi_hot([labels], self.vocabulary, [where])[0])
        return item

    def first_crops(self, n: int, generator: torch.Generator) -> list[np.ndarray]:
        """The deterministic first crop (no zero padding) of n samples: the first ceil(n / shards)
        samples of shards taken in an order drawn from `generator` (only their beginnings are read)."""
        per = -(-n // len(self.shards))
        waves = []
        for s in torch.randperm(len(self.shards), generator=generator).tolist():
            for index, sample in itertools.islice(self.samples(s), per):
                with member_audio(sample, self.where(index, sample), self.sample_rate) as (seconds, read):
                    waves.append(read_span(read, 0.0, seconds, self.crop_samples, self.sample_rate, None)[0])
                if len(waves) == n:
                    return waves
        return waves

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
        for index, sample in self._raw(consumer, self.world * workers):
            position += 1
            if position <= skip:
                continue
            items.append(self.item(index, sample, (self.seed + 1) * SEED_STRIDE * 7919 + consumer * 2**40 + position))
            if len(items) == self.batch:
                yield {k: torch.stack([it[k] for it in items]) for k in items[0]}
                items = []
