"""Box-filtering an image that arrives band by band into a copy `factor` times smaller: the thumbnails of a large
output, and the downscaled picture `--norm-stats thumbnail` takes its statistics from."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BoxReducer"]


class BoxReducer:
    """Averages each `factor` x `factor` block of the rows handed to `add`, in order; blocks cut by the right or
    bottom edge average the pixels they have."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.pending: Tensor | None = None  # the last few rows, short of a whole block
        self.pieces: list[Tensor] = []

    def add(self, rows: Tensor) -> None:
        """Take the next band of (C, h, W) rows (only the rows short of a whole block are kept, copied)."""
        if self.pending is not None:  # complete the pending block from the band's first rows
            block = torch.cat([self.pending, rows[:, :self.factor - self.pending.shape[1]]], 1)
            rows = rows[:, self.factor - self.pending.shape[1]:]
            if block.shape[1] < self.factor:
                self.pending = block
                return
            self.pieces.append(self._pooled(block))
        whole = rows.shape[1] // self.factor * self.factor
        if whole:
            self.pieces.append(self._pooled(rows[:, :whole]))
        self.pending = rows[:, whole:].float().clone() if whole < rows.shape[1] else None

    def result(self) -> Tensor:
        """The reduced image (C, ceil(H / factor), ceil(W / factor))."""
        if self.pending is not None:
            self.pieces.append(F.avg_pool2d(self.pending[None], (self.pending.shape[1], self.factor),
                                            ceil_mode=True)[0])
            self.pending = None
        return torch.cat(self.pieces, 1)

    def _pooled(self, rows: Tensor) -> Tensor:
        return F.avg_pool2d(rows[None].float(), self.factor, ceil_mode=True)[0]
