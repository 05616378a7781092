"""Lifecycle events: the enabled callbacks, called in their declared order."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from i2i.contract.callbacks import Callback, TrainingContext


class Events:
    """The run's callbacks by name, sorted by `order` (then name); each event calls every one in turn."""

    def __init__(self, callbacks: dict[str, Callback]) -> None:
        self.callbacks = dict(sorted(callbacks.items(), key=lambda item: (item[1].order, item[0])))

    def items(self):
        """(name, callback) pairs in calling order."""
        return self.callbacks.items()

    def setup(self, context: TrainingContext) -> None:
        """The run is built; nothing is written yet."""
        for callback in self.callbacks.values():
            callback.on_setup(context)

    def train_start(self, context: TrainingContext) -> None:
        """Before the first step."""
        for callback in self.callbacks.values():
            callback.on_train_start(context)

    def step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """After each step."""
        for callback in self.callbacks.values():
            callback.on_step_end(context, losses)

    def log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """At each log point; each callback sees what the ones before it added to `record`."""
        for callback in self.callbacks.values():
            callback.on_log(context, record)

    def checkpoint_save(self, context: TrainingContext, folder: Path) -> None:
        """After a checkpoint was written."""
        for callback in self.callbacks.values():
            callback.on_checkpoint_save(context, folder)

    def checkpoint_load(self, context: TrainingContext, folder: Path) -> None:
        """After the training state was restored from a checkpoint."""
        for callback in self.callbacks.values():
            callback.on_checkpoint_load(context, folder)

    def train_end(self, context: TrainingContext, outcome: str, error: BaseException | None) -> None:
        """Once at the end. With an error on its way out, a callback's own failure is a warning, so the
        error the user must see is not replaced by a follow-up one."""
        for name, callback in self.callbacks.items():
            try:
                callback.on_train_end(context, outcome, error)
            except Exception as exc:
                if error is None:
                    raise
                warnings.warn(f"callback {name!r} failed while training ended: {type(exc).__name__}: {exc}")
