"""Periodic checkpoints, and pruning the old ones."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from i2i.storage.checkpoint import prune_checkpoints
from i2i.api import Callback, TrainingContext


class Checkpoints(Callback):
    """Saves a checkpoint every train.checkpoint_every steps and at the end; keeps train.keep_checkpoints."""

    name = "checkpoints"
    order = 200
    default = True

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """Ask for a checkpoint on every checkpoint_every-th step and the last."""
        if context.due(context.recipe["train"]["checkpoint_every"]):
            context.request_checkpoint()

    def on_checkpoint_save(self, context: TrainingContext, folder: Path) -> None:
        """Delete all but the newest keep_checkpoints periodic ones (never this one or the final one)."""
        prune_checkpoints(context.folder.checkpoints_dir, context.recipe["train"]["keep_checkpoints"],
                          protect={context.step, context.total_steps})
