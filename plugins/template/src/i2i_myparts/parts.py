"""My i2i parts: a small generator and a callback, registered by the hooks at the bottom."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
from torch import nn

import i2i
from i2i.api import Callback, Generator, TrainingContext


class MyGenerator(Generator):
    """A few 3x3 convs predicting a change to the input image (a small residual generator)."""

    name = "mygen"  # what recipes write: [generator] name = "mygen", or --set generator.name=mygen
    # Checked before __init__ runs; __init__ receives every one as a keyword with the same default.
    options = (
        i2i.Option("layers", int, 4, "number of 3x3 conv layers", min=2),
        i2i.Option("channels", int, 32, "width of the hidden layers", min=1),
        i2i.Option("in_channels", int, 3, "channels of the input images", min=1),
        i2i.Option("out_channels", int, 3, "channels of the output images", min=1),
    )
    size_multiple = 1  # no downsampling, so any image size works

    def __init__(self, *, layers: int = 4, channels: int = 32, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        widths = [in_channels] + [channels] * (layers - 1)
        body: list[nn.Module] = []
        for a, b in pairwise(widths):
            # Instance norm is per sample, so the default batch_independent = True holds.
            body += [nn.Conv2d(a, b, 3, padding=1, padding_mode="reflect"), nn.InstanceNorm2d(b), nn.ReLU(True)]
        body.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1, padding_mode="reflect"))
        self.model = nn.Sequential(*body)
        self.residual = in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate images in [-1, 1] to images of the same size in [-1, 1]."""
        y = self.model(x)
        return torch.tanh(x + y if self.residual else y)


class BestLoss(Callback):
    """Tracks the lowest logged mean of one loss and the step it was reached at (kept in checkpoints)."""

    name = "mybest"  # recipes enable it with a table: [callback.mybest] loss = "cycle_A"
    options = (i2i.Option("loss", str, "cycle_A", "the loss to watch (a name in metrics.jsonl's losses)"),)

    def __init__(self, *, loss: str = "cycle_A") -> None:
        self.loss = loss
        self.best: float | None = None
        self.best_step = 0

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """Compare the logged mean with the best so far, and add both to the record (so to metrics.jsonl)."""
        value = record["losses"].get(self.loss)
        if value is not None and (self.best is None or value < self.best):
            self.best, self.best_step = value, context.step
        record["mybest"] = {"loss": self.loss, "best": self.best, "step": self.best_step}

    def state_dict(self) -> dict[str, Any]:
        """What --resume needs to continue exactly: saved in every checkpoint."""
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""
        self.best, self.best_step = state["best"], state["best_step"]


@i2i.hookimpl
def i2i_generators() -> list[type[Generator]]:
    """The generators this package adds."""
    return [MyGenerator]


@i2i.hookimpl
def i2i_callbacks() -> list[type[Callback]]:
    """The callbacks this package adds."""
    return [BestLoss]
