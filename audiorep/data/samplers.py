"""Batch order as a pure function of (seed, micro-step): shuffled epochs, class balance, DDP shards.

The sampler sees an endless stream of positions p = 0, 1, 2, ...; position p belongs to
epoch p // N and takes item order_e[p % N], where order_e is a permutation (or, class
balanced, a weighted draw) from a generator seeded with (seed, e). Micro-step m is the
global batch of positions [m * B, (m + 1) * B); DDP rank r takes its contiguous slice.
So the global batch does not depend on the number of processes, and resuming at step s
only needs s. Each item also gets its own augmentation seed derived from its position.
"""
from __future__ import annotations

from typing import Iterator

import torch

SEED_STRIDE = 1_000_003  # keeps (seed, epoch) and (seed, position) streams apart


def class_balanced_weights(targets: torch.Tensor, offset: float = 0.0,
                           repeats: torch.Tensor | None = None) -> torch.Tensor:
    """targets [N, C] multi-hot (dense, or sparse COO for large corpora) -> sampling weights [N]:
    sum of 1 / (count_c + offset) over a clip's labels.

    Rare classes are drawn as often as frequent ones; unlabeled clips get the smallest weight.
    repeats: [N] positions each row stands for (data.repeat_s), counted in count_c; the weight
    is then that of one of the row's positions, as if each position were a row of its own.
    """
    counts = (torch.ones(targets.shape[0]) if repeats is None else repeats) @ targets  # [C]
    per_class = torch.where(counts > 0, 1.0 / (counts + offset), torch.zeros_like(counts))
    weights = targets @ per_class  # [N]
    floor = weights[weights > 0].min() if (weights > 0).any() else torch.tensor(1.0)
    return torch.where(weights > 0, weights, floor)


class StepSampler:
    """Batch sampler yielding lists of (index, item_seed) for micro-steps `start`, `start + 1`, ...

    global_batch: items per micro-step over all ranks; each rank gets global_batch // world.
    weights: optional [N] sampling weights (with replacement) instead of shuffled epochs.
    steps: number of micro-steps to yield (None = endless).
    """

    def __init__(self, num_items: int, global_batch: int, seed: int = 0, start: int = 0, rank: int = 0,
                 world: int = 1, weights: torch.Tensor | None = None, steps: int | None = None):
        if num_items < 1:
            raise ValueError("StepSampler: the dataset is empty")
        if global_batch % world:
            raise ValueError(f"StepSampler: global batch {global_batch} is not divisible by {world} processes")
        self.num_items, self.global_batch, self.seed = num_items, global_batch, seed
        self.start, self.rank, self.world, self.steps = start, rank, world, steps
        self.weights = weights
        self.local = global_batch // world
        self._epoch, self._order = -1, None

    def order(self, epoch: int) -> torch.Tensor:
        """Item indices of epoch `epoch` ([N]), cached for the current epoch."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch)
            if self.weights is None:
                self._order = torch.randperm(self.num_items, generator=g)
            else:
                self._order = torch.multinomial(self.weights, self.num_items, replacement=True, generator=g)
            self._epoch = epoch
        return self._order

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This rank's (index, item_seed) pairs of micro-step `step`."""
        first = step * self.global_batch + self.rank * self.local
        items = []
        for p in range(first, first + self.local):
            epoch, j = divmod(p, self.num_items)
            items.append((int(self.order(epoch)[j]), (self.seed + 1) * SEED_STRIDE * 7919 + p))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while self.steps is None or step < self.start + self.steps:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("endless StepSampler has no length")
        return self.steps
