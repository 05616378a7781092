"""What a callback receives: the run's parts and where training stands (Context), and the one object through which
callbacks and the user steer the loop (Control).

Callbacks get a Context, never the Trainer: the stepper, the checkpoint writer and the loop's bookkeeping stay out of
their reach, so a plugin depends only on what i2i.contract.callbacks.TrainingContext documents.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from i2i.contract.callbacks import RunCheckpoints
from i2i.contract.parts import Dataset, Method
from i2i.engine.distributed import Distributed
from i2i.engine.events import Events
from i2i.engine.placement import to_device
from i2i.engine.state import LoopState
from i2i.recipe import Recipe
from i2i.storage.rundir import RunFolder


class Control:
    """Requests to the loop (from callbacks, and the user's Ctrl-C) and the one answer to "is a checkpoint written at
    the end of this step", which the loop acts on and the finite-loss check reads (context.control)."""

    def __init__(self, last_step: Callable[[], bool]) -> None:
        self._last_step = last_step
        self._ctrl_c = False  # this process received a Ctrl-C
        #: a Ctrl-C reached some process: the same on every process after each step (set before on_step_end)
        self.stopping = False
        #: why a callback asked to end training (request_stop), or None
        self.stop_reason: str | None = None
        #: a callback asked for a checkpoint at the end of this step (reset once it is written)
        self.checkpoint_requested = False

    def request_checkpoint(self) -> None:
        """Have a checkpoint written at the end of this step. Ask before order 250 (the finite-loss check), so the
        step is checked before it is saved."""
        self.checkpoint_requested = True

    def request_stop(self, reason: str) -> None:
        """End training after this step, with a checkpoint (early stopping); call it alike on every process."""
        self.stop_reason = reason

    @property
    def checkpoint_due(self) -> bool:
        """Whether a checkpoint is written at the end of this step: one was asked for, training stops (Ctrl-C or
        request_stop), or this is the last step (the final checkpoint is always written)."""
        return self.checkpoint_requested or self.stopping or self.stop_reason is not None or self._last_step()

    # -- the loop's side -----------------------------------------------------------------------------------------
    def interrupt(self) -> bool:
        """A Ctrl-C reached this process; returns whether one had already (the second one stops at once)."""
        again, self._ctrl_c = self._ctrl_c, True
        return again

    def agree(self, distributed: Distributed) -> None:
        """After each step, before its callbacks: a Ctrl-C reaching any process stops them all at this step."""
        self.stopping = distributed.any(self._ctrl_c) if distributed.active else self._ctrl_c

    def checkpoint_written(self) -> None:
        """The due checkpoint was written: requests start afresh for the next step."""
        self.checkpoint_requested = False


class Context:
    """The TrainingContext (i2i.contract.callbacks) every callback receives: the run's parts, where training stands,
    the helpers below and `control`."""

    def __init__(self, *, recipe: Recipe, folder: RunFolder, method: Method, networks: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], dataset: Dataset, device: torch.device,
                 distributed: Distributed, state: LoopState, steps_per_epoch: int, events: Events,
                 checkpoints: RunCheckpoints) -> None:
        self.recipe, self.folder, self.method, self.networks = recipe, folder, method, networks
        self.checkpoints = checkpoints  # the checkpoint owner's face for callbacks
        self.optimizers, self.dataset, self.device, self.distributed = optimizers, dataset, device, distributed
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = 0  # set by the trainer once it knows where training stands (again after a resume)
        self.resumed_from: Path | None = None
        self.control = Control(lambda: self._state.step >= self.total_steps)
        self._state, self._events = state, events

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0, or the only process)."""
        return self.distributed.is_main

    @property
    def step(self) -> int:
        """Steps done."""
        return self._state.step

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._state.epoch

    def elapsed(self) -> float:
        """Seconds of training so far, over all sessions of a resumed run."""
        return self._state.elapsed()

    def learning_rates(self) -> dict[str, float]:
        """The current learning rate of each optimizer group."""
        # float(): a captured step's rates are device tensors (read here at log points only)
        return {group: float(optimizer.param_groups[0]["lr"]) for group, optimizer in self.optimizers.items()}

    def due(self, every: int) -> bool:
        """Whether this step is one of every `every` steps, or the last; 0 means the last only."""
        step = self._state.step
        return (every > 0 and step % every == 0) or step == self.total_steps

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch from the data on the training device, in the networks' layout."""
        return to_device(batch, self.device, self.recipe["run"]["channels_last"])

    @contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """The networks in eval mode, holding the weights callbacks swap in to evaluate (e.g. EMA), until exit."""
        modes = {net: net.training for net in self.networks.values()}
        with ExitStack() as swaps:
            for _, callback in self._events.items():
                swaps.enter_context(callback.swap_in_for_evaluation(self))
            for net in modes:
                net.eval()
            try:
                yield
            finally:
                for net, training in modes.items():
                    net.train(training)

    # -- aliases of `control`, as callbacks written before it call them ------------------------------------------
    def request_checkpoint(self) -> None:
        """context.control.request_checkpoint()."""
        self.control.request_checkpoint()

    def request_stop(self, reason: str) -> None:
        """context.control.request_stop(reason)."""
        self.control.request_stop(reason)

    @property
    def checkpoint_pending(self) -> bool:
        """context.control.checkpoint_due: a checkpoint is written at the end of this step."""
        return self.control.checkpoint_due

    @property
    def stopping(self) -> bool:
        """context.control.stopping: a Ctrl-C stops training after this step, with a checkpoint."""
        return self.control.stopping
