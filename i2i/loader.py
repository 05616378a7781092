"""Data order and per-item randomness that depend on (seed, epoch, position) alone.

Each epoch's shuffle comes from the run seed and the epoch number, and each item is loaded under a seed of its
own. So a run can start mid-epoch (resume) and see exactly the batches and augmentations it would have seen,
whatever the number of loader workers.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, Sampler


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any values, stable across processes and machines."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, item seed) in a shuffled order drawn from (seed, epoch); can start part way through."""

    def __init__(self, length: int, seed: int, shuffle: bool = True) -> None:
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw the order of `epoch` and skip its first `start` items."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, self.length - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(derive_seed("order", self.seed, self.epoch))
        order = torch.randperm(self.length, generator=generator) if self.shuffle else torch.arange(self.length)
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator)
        for position in range(self.start, self.length):
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
