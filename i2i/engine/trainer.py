"""The trainer: set up in named steps, then the loop (step, events, checkpoint) as the algorithm reads.

Everything the loop does beside stepping — metrics.jsonl, the progress bar, sample grids, report.html, the
finite-loss check, periodic checkpoints — is a callback (stock ones in i2i_stock.callbacks), so a plugin can
add to it or replace any of it.
"""

from __future__ import annotations

import math
import signal
import threading
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from i2i.storage.checkpoint import RandomState, step_name
from i2i.engine.distributed import Distributed
from i2i.engine.events import Events
from i2i.engine.placement import to_device
from i2i.engine.setup import (seed_everything, setup_callbacks, setup_data, setup_device, setup_method,
                              setup_networks, setup_optimizers)
from i2i.engine.snapshots import Snapshots
from i2i.engine.state import LoopState, LossMeter
from i2i.engine.stepper import Stepper
from i2i.errors import I2IError, Interrupted
from i2i.data.loader import derive_seed
from i2i.contract.parts import ScheduleClock
from i2i.recipe import Recipe
from i2i.contract.registry import Registry, default_registry
from i2i.storage.rundir import RunFolder


class Trainer:
    """Trains a method on a recipe into a run folder; everything is built and checked before anything is written.

    It is the TrainingContext (i2i.contract.callbacks) every callback receives.
    """

    def __init__(self, recipe: Recipe, run_dir: Path, registry: Registry | None = None,
                 overwrite: bool = False, resume: bool = False) -> None:
        if overwrite and resume:
            raise I2IError("--resume continues the run in the folder and --overwrite replaces it: pass only one")
        self.recipe, self.folder = recipe, RunFolder(Path(run_dir))
        self.overwrite, self.resume = overwrite, resume
        self.folder.check_new(overwrite or resume)
        self.registry = registry or default_registry()
        self.events = Events(setup_callbacks(recipe, self.registry))
        schedule, schedule_options = recipe.part("schedule")
        self.schedule = self.registry.create("schedule", schedule, **schedule_options)
        self.distributed = Distributed.from_environment()
        self.device = setup_device(recipe, self.distributed)
        self.distributed.start(self.device, recipe["run"]["distributed_timeout"])
        seed_everything(recipe["run"]["seed"])  # the same on every process, so all build the same initial weights
        self.data = setup_data(recipe, self.registry, self.distributed, self.device)
        self.method, self.builder = setup_method(recipe, self.registry, self.data.dataset,
                                                 initial_weights=not (resume and self.folder.checkpoints()))
        self.networks = setup_networks(self.method, recipe, self.device, self.distributed)
        self.optimizers = setup_optimizers(recipe, self.registry, self.method)
        self.base_lr = {group: recipe.optimizer(group)[1]["lr"] for group in self.optimizers}
        self.stepper = Stepper(self.optimizers, self.device, recipe["run"]["precision"], self.distributed)
        self.snapshots = Snapshots(self.folder, recipe, self.method, self.builder, self.device)
        self._seed_rank(0)

        self.state, self.meter = LoopState(), LossMeter(self.device)
        self.total_steps = self._plan_total_steps()
        if self.total_steps == 0:
            raise I2IError("nothing to train: train.epochs + train.decay_epochs is 0 and train.max_steps is 0")
        self.resumed_from: Path | None = None
        self.stopping = False  # a Ctrl-C reached a process; the same on every process after each step
        self._ctrl_c = False
        self._stop_reason: str | None = None
        self._checkpoint_requested = False
        self.events.setup(self)  # callbacks check what needs the built run, before anything is written

    # -- what callbacks see (i2i.contract.callbacks.TrainingContext) ---------------------------------------------
    @property
    def step(self) -> int:
        """Steps done."""
        return self.state.step

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self.state.epoch

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0, or the only process)."""
        return self.distributed.is_main

    @property
    def dataset(self):
        """The dataset part (e.g. to load held-out items)."""
        return self.data.dataset

    @property
    def steps_per_epoch(self) -> int:
        """Steps in one epoch of this process."""
        return self.data.steps_per_epoch

    def elapsed(self) -> float:
        """Seconds of training so far, over all sessions of a resumed run."""
        return self.state.elapsed()

    def learning_rates(self) -> dict[str, float]:
        """The current learning rate of each optimizer group."""
        return {group: optimizer.param_groups[0]["lr"] for group, optimizer in self.optimizers.items()}

    def due(self, every: int) -> bool:
        """Whether this step is one of every `every` steps, or the last; 0 means the last only."""
        return (every > 0 and self.state.step % every == 0) or self.state.step == self.total_steps

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch from the data on the training device, in the networks' layout."""
        return to_device(batch, self.device, self.recipe["run"]["channels_last"])

    @property
    def checkpoint_pending(self) -> bool:
        """Whether a checkpoint will be written at the end of this step."""
        return self._checkpoint_requested

    def request_checkpoint(self) -> None:
        """Write a checkpoint at the end of this step (after the log point's callbacks)."""
        self._checkpoint_requested = True

    def request_stop(self, reason: str) -> None:
        """End training after this step, with a checkpoint; call it alike on every process."""
        self._stop_reason = reason

    @contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """The networks in eval mode, holding the weights callbacks swap in to evaluate (e.g. EMA), until exit."""
        modes = {net: net.training for net in self.networks.values()}
        with ExitStack() as swaps:
            for _, callback in self.events.items():
                swaps.enter_context(callback.swap_in_for_evaluation(self))
            for net in modes:
                net.eval()
            try:
                yield
            finally:
                for net, training in modes.items():
                    net.train(training)

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train to the end (or continue from the newest checkpoint with resume); returns the run folder."""
        try:
            self.distributed.barrier("starting")  # every process has checked the run folder before rank 0 writes
            self._open_run_folder()
            outcome, error = "failed", None
            try:
                with self._stop_on_ctrl_c():
                    self.events.train_start(self)
                    outcome = self._loop()
            except BaseException as exc:
                error = exc
                outcome = "interrupted" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "failed"
                raise
            finally:
                self.events.train_end(self, outcome, error)
            self.distributed.barrier("finishing")
        finally:
            self.distributed.stop()
        return self.folder.path

    def _loop(self) -> str:
        """Step, events, checkpoint, until the last step; returns how training ended."""
        log_every, state = self.recipe["train"]["log_every"], self.state
        while state.step < self.total_steps:
            self.data.sampler.set_epoch(state.epoch, start=state.position)
            for batch in self.data.loader:
                self._apply_schedule()
                losses = self.method.step(self.to_device(batch), self.stepper)
                self.stepper.end_of_step()
                state.advance(self.data.global_batch)
                self.meter.add(losses)
                self._agree_on_stopping()
                self.events.step_end(self, losses)  # finite check, EMA, checkpoint requests, progress ...
                if self.due(log_every):
                    self.events.log(self, self._log_record())  # metrics.jsonl, samples, report, trackers ...
                if self._checkpoint_requested or self.stopping or self._stop_reason:
                    folder = self.save_checkpoint()
                if self.stopping:
                    raise Interrupted(f"stopped at step {state.step}; saved {folder}; continue with --resume")
                if self._stop_reason:
                    warnings.warn(f"training stopped at step {state.step}: {self._stop_reason}; saved {folder}")
                    return "stopped"
                if state.step >= self.total_steps:
                    return "finished"
            state.next_epoch()
        return "finished"

    def _apply_schedule(self) -> None:
        """Set each group's learning rate for the coming step: its base rate times the schedule's factor."""
        train = self.recipe["train"]
        clock = ScheduleClock(self.state.step, self.state.epoch, self.data.steps_per_epoch, self.total_steps,
                              train["epochs"], train["decay_epochs"])
        factor = self.schedule.factor(clock)
        for group, optimizer in self.optimizers.items():
            for param_group in optimizer.param_groups:
                param_group["lr"] = self.base_lr[group] * factor

    def _log_record(self) -> dict[str, Any]:
        """What a log point reports: where training is, the learning rates, the mean losses since the last, and the
        method's `log_values`."""
        record = {"step": self.state.step, "epoch": self.state.epoch, "lr": self.learning_rates(),
                  "elapsed": round(self.state.elapsed(), 3), "losses": self.meter.means(self.distributed)}
        # the method's own values (e.g. an adaptive augment's p) after them, never in place of the loop's entries
        record.update({k: v for k, v in self.method.log_values().items() if k not in record})
        return record

    def _agree_on_stopping(self) -> None:
        """A Ctrl-C reaching any process stops them all at the same step."""
        self.stopping = self.distributed.any(self._ctrl_c) if self.distributed.active else self._ctrl_c

    def _seed_rank(self, step: int) -> None:
        """Give each process other than rank 0 its own random stream (pools, dropout), derived from the seed."""
        if self.distributed.rank > 0:
            seed_everything(derive_seed("rank", self.recipe["run"]["seed"], self.distributed.rank, step))

    def _plan_total_steps(self) -> int:
        """The step at which training ends, from where it stands (so a resumed run may change process count)."""
        train, state = self.recipe["train"], self.state
        epochs = train["epochs"] + train["decay_epochs"]
        total = 0
        if epochs > state.epoch:
            left = math.ceil(max(0, len(self.data.items) - state.position) / self.data.global_batch)
            total = state.step + left + (epochs - state.epoch - 1) * self.data.steps_per_epoch
        if train["max_steps"]:
            total = min(total, train["max_steps"]) if total else train["max_steps"]
        return total

    def _open_run_folder(self) -> None:
        """Continue from the newest checkpoint (--resume), or start the run folder afresh; save the recipe."""
        if self.resume and (folder := self.snapshots.restore_newest(self.stateful())) is not None:  # on every process
            self._seed_rank(self.state.step)
            self.total_steps = self._plan_total_steps()
            if self.is_main:
                self.folder.forget_after(self.state.step)  # what an interrupted session wrote after the checkpoint
            self.resumed_from = folder
            self.events.checkpoint_load(self, folder)
        else:
            if self.is_main:
                self.folder.prepare(self.overwrite or self.resume)
            self.state.start_clock()
        if self.is_main:
            self.folder.save_recipe(self.recipe)

    @contextmanager
    def _stop_on_ctrl_c(self):
        """First Ctrl-C: finish the step, save a checkpoint, stop. A second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._ctrl_c:
                raise KeyboardInterrupt
            self._ctrl_c = True
            warnings.warn("stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- checkpoints ------------------------------------------------------------------------------------
    def stateful(self) -> dict[str, Any]:
        """Every piece of training state a checkpoint holds, by name (each has state_dict/load_state_dict)."""
        pieces: dict[str, Any] = {"loop": self.state, "log": self.meter, "rng": RandomState(),
                                  "schedule": self.schedule}
        pieces.update({f"optim.{group}": optimizer for group, optimizer in self.optimizers.items()})
        pieces.update({f"buffer.{name}": buffer for name, buffer in self.method.buffers().items()})
        pieces.update({f"augment.{name}": augment for name, augment in self.method.augments().items()})
        # only losses that hold state (e.g. the lazy R1 count), so checkpoints of stateless ones stay as they were
        pieces.update({f"loss.{slot}": loss for slot, loss in self.builder.losses.items() if loss.state_dict()})
        if self.stepper.scaler:
            pieces["scaler"] = self.stepper.scaler
        pieces.update({f"callback.{name}": callback for name, callback in self.events.items()})
        return pieces

    def save_checkpoint(self) -> Path:
        """Write the whole training state as checkpoints/step-NNNNNNNN (rank 0 writes; every process calls it)."""
        self._checkpoint_requested = False
        if not self.is_main:
            return self.folder.checkpoints_dir / step_name(self.state.step)
        variants: dict[str, dict[str, Any]] = {}
        for _, callback in self.events.items():
            for variant, modules in callback.checkpoint_networks(self).items():
                variants.setdefault(variant, {}).update(modules)
        folder = self.snapshots.save(self.stateful(), self.state, self.distributed.world_size, variants)
        self.events.checkpoint_save(self, folder)
        return folder


def train(recipe: Recipe, run_dir: Path | None = None, overwrite: bool = False, resume: bool = False,
          registry: Registry | None = None) -> Path:
    """Train `recipe` into `run_dir` (default runs/<run.name>) and return the run folder."""
    return Trainer(recipe, run_dir or default_run_dir(recipe), registry, overwrite, resume).run()


def default_run_dir(recipe: Recipe) -> Path:
    """runs/<run.name>, relative to the working directory."""
    return Path("runs") / recipe["run"]["name"]
