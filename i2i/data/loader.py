"""Data order and per-item randomness that depend on (seed, epoch, position) alone.

Each epoch's shuffle comes from the run seed and the epoch number, and each item is loaded under a seed of its
own. So a run can start mid-epoch (resume) and see exactly the batches and augmentations it would have seen,
whatever the number of loader workers. Under torchrun each process takes every world_size-th position of the
same order, so a global step of N processes sees the images one process with N times the batch would.
"""

from __future__ import annotations

import hashlib
import math
from itertools import cycle, islice
from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, Sampler


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any values, stable across processes and machines."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, item seed) in a shuffled order drawn from (seed, epoch); can start part way through.

    With `world_size` > 1 it yields this `rank`'s share: positions rank, rank + world_size, ... of the epoch's
    remaining order, padded by wrapping around so every process gets as many items (and steps) as the others.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw the order of `epoch` and skip its first `start` items."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return math.ceil(max(0, self.length - self.start) / self.world_size)

    def positions(self) -> list[int]:
        """The positions of the epoch's order this rank loads, in order."""
        remaining = range(self.start, self.length)
        if self.world_size == 1 or not remaining:
            return list(remaining)
        padded = list(islice(cycle(remaining), len(self) * self.world_size))
        return padded[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(derive_seed("order", self.seed, self.epoch))
        order = torch.randperm(self.length, generator=generator) if self.shuffle else torch.arange(self.length)
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator)
        for position in self.positions():
            yield int(order[position]), int(seeds[position])


class SeededItems(Dataset):
    """Loads item `index` of a dataset with torch's CPU RNG seeded from the sampler's item seed."""

    def __init__(self, items: Dataset) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        # fork_rng keeps the caller's RNG untouched, so loading on the training thread (workers = 0) does not
        # shift the draws of the image pool or dropout.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.items[index]
