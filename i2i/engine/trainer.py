"""The trainer: set up in named steps, then the loop (step, events, checkpoint) as the algorithm reads.

Everything the loop does beside stepping — metrics.jsonl, the progress bar, sample grids, report.html, the
finite-loss check, periodic checkpoints — is a callback (stock ones in i2i_stock.callbacks), so a plugin can
add to it or replace any of it.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from i2i.storage.checkpoint import step_name
from i2i.engine.capture import TrainingStep, check_capture, prepare_parts
from i2i.engine.checkpoints import Checkpoints
from i2i.engine.context import Context
from i2i.engine.distributed import Distributed
from i2i.engine.events import Events
from i2i.engine.setup import (seed_everything, setup_callbacks, setup_data, setup_device, setup_method,
                              setup_networks, setup_optimizers)
from i2i.engine.sharing import CpuShare
from i2i.engine.starting import start_networks
from i2i.engine.state import LoopState, LossMeter
from i2i.engine.stepper import Stepper
from i2i.errors import I2IError, Interrupted
from i2i.data.loader import derive_seed
from i2i.contract.callbacks import Callback
from i2i.contract.parts import ScheduleClock
from i2i.recipe import Recipe, ResumeChanges, RESUMABLE_KEYS, resume_changes
from i2i.contract.registry import Registry, default_registry
from i2i.storage.rundir import RunFolder


class Trainer:
    """Trains a method on a recipe into a run folder; everything is built and checked before anything is written.

    Callbacks receive its `context` (i2i.engine.context), not the trainer. The trainer owns the torchrun process
    group: it joins it while it is built (and leaves it if building fails), and leaves it when `run()` ends or
    `close()` is called (`with Trainer(...) as trainer:` for code that builds one without running it).
    """

    def __init__(self, recipe: Recipe, run_dir: Path, registry: Registry | None = None,
                 overwrite: bool = False, resume: bool = False,
                 on_note: Callable[[str], None] | None = None,
                 callbacks: dict[str, Callback] | None = None) -> None:
        if overwrite and resume:
            raise I2IError("--resume continues the run in the folder and --overwrite replaces it: pass only one")
        self.recipe, self.folder = recipe, RunFolder(Path(run_dir))
        self.overwrite, self.resume = overwrite, resume
        #: where what a resume applies is said (rank 0 only); a warning each without it
        self.on_note = on_note or (lambda text: warnings.warn(text, stacklevel=2))
        #: set when --resume found the run at its end: the line saying so and how to train longer (nothing trained)
        self.finished_earlier: str | None = None
        self.folder.check_new(overwrite or resume)
        self.registry = registry or default_registry()
        # `callbacks`: what a program adds beside the recipe's (e.g. a search's trial reporter); they get every event
        # but are not part of the run: not in recipe.toml, not in its checkpoints
        self.recipe_callbacks = setup_callbacks(recipe, self.registry)
        self.events = Events({**self.recipe_callbacks, **(callbacks or {})})
        schedule, schedule_options = recipe.part("schedule")
        self.schedule = self.registry.create("schedule", schedule, **schedule_options)
        self.distributed = Distributed.from_environment()
        check_capture(recipe, self.distributed.world_size)
        self.device = setup_device(recipe, self.distributed)
        self._session = ExitStack()  # what run() or close() ends: the process group
        # this run's share of the CPUs among the i2i runs on them (a CUDA run leaves torch's threads alone)
        self.cpu_share = CpuShare(recipe["run"]["threads"], self.on_note if self.distributed.is_main else None) \
            if self.device.type == "cpu" else None
        self._session.enter_context(process_group(self.distributed, self.device,
                                                  recipe["run"]["distributed_timeout"]))
        try:
            self._build(recipe, resume)
        except BaseException:
            self.close()  # a failure after the group started still leaves it
            raise

    def _build(self, recipe: Recipe, resume: bool) -> None:
        """Data, method, networks, optimizers and the callbacks' context, checked; nothing written yet."""
        seed_everything(recipe["run"]["seed"])  # the same on every process, so all build the same initial weights
        self.data = setup_data(recipe, self.registry, self.distributed, self.device)
        resuming = resume and bool(self.folder.checkpoints())  # then the checkpoint holds the weights
        self.method, self.builder = setup_method(recipe, self.registry, self.data.dataset, initial_weights=not resuming)
        # [init.<network>]: trained starting weights (read and checked now, before anything is written), and freezing
        self.started = start_networks(recipe, self.method, self.builder.options_of, load=not resuming)
        self.networks = setup_networks(self.method, recipe, self.device, self.distributed)
        self.optimizers = setup_optimizers(recipe, self.registry, self.method, self.device)
        self.base_lr = {group: recipe.optimizer(group)[1]["lr"] for group in self.optimizers}
        self.stepper = Stepper(self.optimizers, self.device, recipe["run"]["precision"], self.distributed)
        # run.capture: capture-ready parts, and the step recorded as a CUDA graph (eager on the CPU)
        if recipe["run"]["capture"]:
            prepare_parts(self.method, [built.part for built in self.builder.records.values()], self.device)
            self.stepper.capture = self.device.type == "cuda"
        self.train_step = TrainingStep(self.method, self.stepper, self.device, recipe["run"]["capture"])
        self._seed_rank(0)

        self.state, self.meter = LoopState(), LossMeter(self.device)
        # the one owner of the checkpoints; every stateful piece is declared by what holds it (see stateful())
        self.checkpoints = Checkpoints(self.folder, recipe, self.method, self.builder, self.device, loop=self.state,
                                       sources=(self, self.stepper, self.method, self.builder),
                                       callbacks=self.recipe_callbacks, processes=self.distributed.world_size,
                                       final_step=lambda: self.total_steps)
        self.context = Context(recipe=recipe, folder=self.folder, method=self.method, networks=self.networks,
                               optimizers=self.optimizers, dataset=self.data.dataset, device=self.device,
                               distributed=self.distributed, state=self.state,
                               steps_per_epoch=self.data.steps_per_epoch, events=self.events,
                               checkpoints=self.checkpoints)
        self.control = self.context.control
        self.total_steps = self._plan_total_steps()
        if self.total_steps == 0:
            raise I2IError("nothing to train: train.epochs + train.decay_epochs is 0 and train.max_steps is 0")
        self.events.setup(self.context)  # callbacks check what needs the built run, before anything is written

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Leave the process group (run() does it when training ends); a second call does nothing."""
        self._session.close()

    # -- where training stands (the callbacks' context holds it; scripts that drive a trainer read it here) -------
    @property
    def total_steps(self) -> int:
        """The step at which training ends."""
        return self.context.total_steps

    @total_steps.setter
    def total_steps(self, steps: int) -> None:
        self.context.total_steps = steps

    @property
    def resumed_from(self) -> Path | None:
        """The checkpoint folder the run continued from, or None."""
        return self.context.resumed_from

    @resumed_from.setter
    def resumed_from(self, folder: Path | None) -> None:
        self.context.resumed_from = folder

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0, or the only process)."""
        return self.distributed.is_main

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch from the data on the training device, in the networks' layout."""
        return self.context.to_device(batch)

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train to the end (or continue from the newest checkpoint with resume); returns the run folder. A resumed run
        already at its end trains nothing and says why in `finished_earlier`."""
        with self._session:  # leaves the process group however training ends
            if self.cpu_share is not None:
                self.cpu_share.start()
                self._session.callback(self.cpu_share.stop)
            self.distributed.barrier("starting")  # every process has checked the run folder before rank 0 writes
            self._open_run_folder()
            if self.finished_earlier is not None:
                return self.folder.path
            outcome, error = "failed", None
            try:
                with self._stop_on_ctrl_c():
                    self.events.train_start(self.context)
                    outcome = self._loop()
            except BaseException as exc:
                error = exc
                outcome = "interrupted" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "failed"
                raise
            finally:
                self.events.train_end(self.context, outcome, error)
            self.distributed.barrier("finishing")
        return self.folder.path

    def _loop(self) -> str:
        """Step, events, checkpoint, until the last step; returns how training ended."""
        log_every, state, context, control = self.recipe["train"]["log_every"], self.state, self.context, self.control
        while state.step < self.total_steps:
            self.data.sampler.set_epoch(state.epoch, start=state.position)
            for batch in self.data.loader:
                self._apply_schedule()
                if self.cpu_share is not None:
                    self.cpu_share.poll()  # other runs on these CPUs started or ended: take a fair share
                self.stepper.frozen = self.started.freezing.at(state.step)
                losses = self.train_step(self.to_device(batch))
                state.advance(self.data.global_batch)
                self.meter.add(losses)
                control.agree(self.distributed)  # a Ctrl-C on any process stops them all at this step
                self.events.step_end(context, losses)  # EMA, checkpoint requests, finite check, progress ...
                if self._log_due(log_every):
                    self.events.log(context, self._log_record())  # metrics.jsonl, samples, report, trackers ...
                if control.checkpoint_due:  # asked for, stopping, or the last step: decided in one place
                    folder = self.save_checkpoint()
                    control.checkpoint_written()
                if control.stopping:
                    raise Interrupted(f"stopped at step {state.step}; saved {folder}; continue with --resume")
                if control.stop_reason is not None:
                    warnings.warn(f"training stopped at step {state.step}: {control.stop_reason}; saved {folder}")
                    return "stopped"
                if state.step >= self.total_steps:
                    return "finished"
            state.next_epoch()
        return "finished"

    def _log_due(self, log_every: int) -> bool:
        """Whether this step is a log point: every train.log_every steps and the last one, and also step 1 of a run
        that ends before its first log_every step. Such a short first try (30 steps of the paper recipe, whose
        log_every is 100, take 20 minutes on a CPU) would otherwise show its first losses, samples and report only
        at its end. Runs that reach log_every keep their log points, so their metrics.jsonl and checkpoints stay
        as they were, and a run split by --resume logs where the whole run does."""
        return self.context.due(log_every) or (self.state.step == 1 and log_every > self.total_steps)

    def _apply_schedule(self) -> None:
        """Set each group's learning rate for the coming step: its base rate times the schedule's factor."""
        train = self.recipe["train"]
        clock = ScheduleClock(self.state.step, self.state.epoch, self.data.steps_per_epoch, self.total_steps,
                              train["epochs"], train["decay_epochs"])
        factor = self.schedule.factor(clock)
        for group, optimizer in self.optimizers.items():
            for param_group in optimizer.param_groups:
                if isinstance(param_group["lr"], torch.Tensor):  # a captured step reads it from the device
                    param_group["lr"].fill_(self.base_lr[group] * factor)
                else:
                    param_group["lr"] = self.base_lr[group] * factor

    def _log_record(self) -> dict[str, Any]:
        """What a log point reports: where training is, the learning rates, the mean losses since the last, and the
        method's `log_values`."""
        record = {"step": self.state.step, "epoch": self.state.epoch, "lr": self.context.learning_rates(),
                  "elapsed": round(self.state.elapsed(), 3), "losses": self.meter.means(self.distributed)}
        # the method's own values (e.g. an adaptive augment's p) after them, never in place of the loop's entries
        record.update({k: v for k, v in self.method.log_values().items() if k not in record})
        return record

    def _seed_rank(self, step: int) -> None:
        """Give each process other than rank 0 its own random stream (pools, dropout), derived from the seed."""
        if self.distributed.rank > 0:
            seed_everything(derive_seed("rank", self.recipe["run"]["seed"], self.distributed.rank, step))

    def _plan_total_steps(self, train: dict[str, Any] | None = None) -> int:
        """The step at which training ends, from where it stands (so a resumed run may change process count), by
        `train` (default: the recipe's [train])."""
        train = train or self.recipe["train"]
        total = self._epochs_end(train)
        if train["max_steps"]:
            total = min(total, train["max_steps"]) if total else train["max_steps"]
        return total

    def _epochs_end(self, train: dict[str, Any]) -> int:
        """The step at which train.epochs + train.decay_epochs end, from where training stands (0: already past)."""
        state, epochs = self.state, train["epochs"] + train["decay_epochs"]
        if epochs <= state.epoch:
            return 0
        left = math.ceil(max(0, len(self.data.items) - state.position) / self.data.global_batch)
        return state.step + left + (epochs - state.epoch - 1) * self.data.steps_per_epoch

    def _open_run_folder(self) -> None:
        """Continue from the newest checkpoint (--resume), or start the run folder afresh; save the recipe (unless a
        resumed run is already at its end: then nothing is trained, so nothing of the recipe changes)."""
        if self.resume and (folder := self.checkpoints.restore_newest()) is not None:  # on every process
            recorded = self.folder.read_state(folder).get("recipe", {})
            changes = resume_changes(recorded, self.recipe, self.registry)
            if changes.refused:
                raise I2IError(resume_refusal(changes, folder))
            self._seed_rank(self.state.step)
            self.total_steps = self._plan_total_steps()
            if self.is_main:
                self.folder.forget_after(self.state.step)  # what an interrupted session wrote after the checkpoint
            self.resumed_from = folder
            self.events.checkpoint_load(self.context, folder)
            if self.state.step >= self.total_steps:
                self.finished_earlier = self._finished_text()
                return
            if changes.applied and self.is_main:
                self._note_applied(changes, recorded)
        else:
            if self.is_main:
                self.folder.prepare(self.overwrite or self.resume)
                if self.started.record:
                    self.folder.save_starting_weights(self.started.record)
                for note in self.started.notes:
                    self.on_note(note)
            self.state.start_clock()
        if self.is_main:
            self.folder.save_recipe(self.recipe)

    def _finished_text(self) -> str:
        """What a resumed run at (or past) its end says: where it stands, which key ended it, how to train longer."""
        train, step, path = self.recipe["train"], self.state.step, self.folder.path
        max_steps, epochs_end = train["max_steps"], self._epochs_end(train)
        if max_steps and step > max_steps:
            return (f"{path} is at step {step}, past train.max_steps = {max_steps}: nothing to train (to train"
                    f" longer, --resume with train.max_steps above {step})")
        if max_steps and (not epochs_end or max_steps < epochs_end):
            return (f"{path} had already finished: it is at step {step}, where train.max_steps = {max_steps} ends it;"
                    f" to train longer, --resume with a higher one, e.g. --set train.max_steps={2 * step} --resume")
        epochs = train["epochs"] + train["decay_epochs"]
        also = f" and train.max_steps above {step}" if max_steps and max_steps <= step else ""
        return (f"{path} had already finished: it is at step {step}, the end of its {epochs} epochs (train.epochs +"
                f" train.decay_epochs); to train longer, --resume with more epochs{also}, e.g. --set"
                f" train.epochs={train['epochs'] + max(1, epochs // 2)} --resume (the learning-rate schedule follows"
                " the new epochs)")

    def _note_applied(self, changes: ResumeChanges, recorded: dict[str, Any]) -> None:
        """Say which recipe changes the resumed run takes, and what a new length does to the learning rates."""
        train = self.recipe["train"]
        end = f"; it trains to step {self.total_steps}"
        if train["max_steps"] > self.total_steps:
            end += f", the end of its {train['epochs'] + train['decay_epochs']} epochs"
        self.on_note(f"--resume from step {self.state.step} applies {ResumeChanges.describe(changes.applied)}{end}")
        if any(key.startswith("train.") for key in changes.applied):
            old_train = {**self.recipe["train"], **{k: v for k, v in recorded.get("train", {}).items()
                                                    if k in self.recipe["train"]}}
            old_total = self._plan_total_steps(old_train)
            if self._rates_differ(old_train, old_total):
                self.on_note(f"the learning-rate schedule ({self.recipe['schedule']['name']}) depends on the run's"
                             f" length: from step {self.state.step} it follows the new one ({self.total_steps}"
                             f" steps), while the steps before had the rates of the old one ({old_total} steps), so"
                             " this run differs from one started with the new length")

    def _rates_differ(self, old_train: dict[str, Any], old_total: int) -> bool:
        """Whether the schedule gives other rates before this step under the new length than under `old_train`
        (asked of a copy, as a schedule may keep state)."""
        train, spe, probe = self.recipe["train"], self.data.steps_per_epoch, copy.deepcopy(self.schedule)
        for step in sorted({0, self.state.step // 2, max(0, self.state.step - 1)}):
            old = ScheduleClock(step, step // spe, spe, old_total, old_train["epochs"], old_train["decay_epochs"])
            new = ScheduleClock(step, step // spe, spe, self.total_steps, train["epochs"], train["decay_epochs"])
            if probe.factor(old) != probe.factor(new):
                return True
        return False

    @contextmanager
    def _stop_on_ctrl_c(self):
        """First Ctrl-C: finish the step, save a checkpoint, stop. A second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.control.interrupt():
                raise KeyboardInterrupt
            warnings.warn("stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- checkpoints ------------------------------------------------------------------------------------
    def stateful(self) -> dict[str, Any]:
        """The trainer's own pieces of training state (the loop, the loss sums, the schedule); the checkpoint owner
        gathers the others from the stepper, the method, the part builder and the callbacks."""
        return {"loop": self.state, "log": self.meter, "schedule": self.schedule}

    def save_checkpoint(self) -> Path:
        """Write the whole training state as checkpoints/step-NNNNNNNN (rank 0 writes; every process calls it)."""
        if not self.is_main:
            return self.folder.checkpoints_dir / step_name(self.state.step)
        folder = self.checkpoints.save(self.context)
        self.events.checkpoint_save(self.context, folder)
        return folder


@contextmanager
def process_group(distributed: Distributed, device: torch.device, timeout_s: float) -> Iterator[None]:
    """This process in the torchrun process group until exit, however it is left (a no-op for one process)."""
    distributed.start(device, timeout_s)
    try:
        yield
    finally:
        distributed.stop()


def resume_refusal(changes: ResumeChanges, folder: Path) -> str:
    """The one line refusing recipe changes a resumed run could not apply, naming each key and the fix."""
    allowed = ", ".join(RESUMABLE_KEYS)
    return (f"--resume cannot change {ResumeChanges.describe(changes.refused)}: the state it restores from"
            f" {folder.name} was made with the recorded value, so the change would not take effect; remove it, or"
            f" train a new run (--out DIR). --resume takes changes of {allowed}")


def train(recipe: Recipe, run_dir: Path | None = None, overwrite: bool = False, resume: bool = False,
          registry: Registry | None = None) -> Path:
    """Train `recipe` into `run_dir` (default runs/<run.name>) and return the run folder."""
    return Trainer(recipe, run_dir or default_run_dir(recipe), registry, overwrite, resume).run()


def default_run_dir(recipe: Recipe) -> Path:
    """runs/<run.name>, relative to the working directory."""
    return Path("runs") / recipe["run"]["name"]
