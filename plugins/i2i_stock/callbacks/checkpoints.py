"""Periodic checkpoints, and pruning the old ones."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from i2i.api import Callback, Option, TrainingContext


class Checkpoints(Callback):
    """Saves a checkpoint every `every` steps and keeps the newest `keep` of them (the final one always stays)."""

    # Turned off (callback.checkpoints.enabled = false), a run writes no periodic checkpoints: the loop still writes
    # the final one, and those a stop or another callback asks for.

    name = "checkpoints"
    order = 200
    default = True
    options = (Option("every", int, 1000, "steps between periodic checkpoints (0: only the final one)", min=0,
                      replaces="train.checkpoint_every"),
               Option("keep", int, 3, "periodic checkpoints kept, newest first (0: all); the final one stays",
                      min=0, replaces="train.keep_checkpoints"))

    def __init__(self, *, every: int = 1000, keep: int = 3) -> None:
        self.every, self.keep = every, keep

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """Ask for a checkpoint on every `every`-th step (the loop writes the final one anyway)."""
        if self.every and context.step % self.every == 0:
            context.control.request_checkpoint()

    def on_checkpoint_save(self, context: TrainingContext, folder: Path) -> None:
        """Delete all but the newest `keep` periodic ones (never this one or the final one)."""
        context.checkpoints.prune(self.keep)
