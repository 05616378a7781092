"""The loop's own state: where training stands, and the running sums of the losses between log points."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from i2i.engine.distributed import Distributed
from i2i.engine.placement import tensors_to


class LoopState:
    """Step, epoch and position in the epoch's order (over all processes), and the training time so far."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.position = 0  # items of the current epoch's order already trained on, over all processes
        self._before = 0.0  # seconds trained in earlier sessions of a resumed run
        self._since = time.perf_counter()

    def start_clock(self) -> None:
        """Count training time from now (setup excluded)."""
        self._since = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of training, over all sessions of the run."""
        return self._before + time.perf_counter() - self._since

    def advance(self, items: int) -> None:
        """One step done, on `items` items of the epoch."""
        self.step += 1
        self.position += items

    def next_epoch(self) -> None:
        """The epoch's order is used up."""
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """Step, epoch, position and elapsed time."""
        return {"step": self.step, "epoch": self.epoch, "position": self.position, "elapsed": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state_dict` was taken."""
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self._before = state["elapsed"]
        self._since = time.perf_counter()


class LossMeter:
    """Sums of each loss since the last log point, on the device (adding forces no host sync). Each loss is counted
    on its own: a method may return some losses only on some steps (StarGAN updates G every few D updates)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    @property
    def count(self) -> int:
        """Steps added since the last log point (the most any loss was added)."""
        return max(self.counts.values(), default=0)

    def add(self, losses: dict[str, Tensor]) -> None:
        """Add one step's losses."""
        for name, value in losses.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.float().clone()
            self.counts[name] = self.counts.get(name, 0) + 1

    def means(self, distributed: Distributed) -> dict[str, float]:
        """The mean of each loss since the last call, over all processes (one sync), and start afresh."""
        sums = distributed.sum(list(self.sums.values()))
        means = {name: (value / (self.counts[name] * distributed.world_size)).item()
                 for name, value in zip(self.sums, sums)}
        self.sums, self.counts = {}, {}
        return means

    def state_dict(self) -> dict[str, Any]:
        """The sums and their counts (`count` alone where every loss was added alike, as checkpoints always had)."""
        if len(set(self.counts.values())) <= 1:
            return {"sums": dict(self.sums), "count": self.count}
        return {"sums": dict(self.sums), "count": self.count, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the sums (onto the device)."""
        self.sums = tensors_to(dict(state["sums"]), self.device)
        self.counts = dict(state.get("counts") or {name: state["count"] for name in self.sums})
