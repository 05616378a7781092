"""The callback interface: what a callback sees of a run (TrainingContext) and the events it acts on (Callback)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from i2i.contract.parts import Dataset, Method, Part

if TYPE_CHECKING:  # the types callbacks are handed; their modules sit above the contract
    from i2i.engine.distributed import Distributed
    from i2i.recipe import Recipe
    from i2i.storage.rundir import RunFolder


class TrainingControl(Protocol):
    """How callbacks steer the loop (``context.control``), and the one answer to "is a checkpoint written at the
    end of this step" that the loop acts on and the stock finite-loss check reads."""

    stopping: bool  # a Ctrl-C reached a process: a checkpoint is written and training stops after this step
    stop_reason: str | None  # why a callback asked to stop (request_stop), or None
    checkpoint_requested: bool  # a callback asked for a checkpoint at the end of this step

    @property
    def checkpoint_due(self) -> bool:
        """Whether a checkpoint is written at the end of this step: one was requested, training stops (Ctrl-C or
        request_stop), or it is the last step. Read after your own request: callbacks of a higher order may
        still request one (the stock finite check runs at 250, so request before it)."""

    def request_checkpoint(self) -> None:
        """Have a checkpoint written at the end of this step (after the log point's callbacks)."""

    def request_stop(self, reason: str) -> None:
        """End training after this step, with a checkpoint (early stopping); `reason` is shown to the user. Call it
        alike on every process of a torchrun run."""


class RunCheckpoints(Protocol):
    """The run's checkpoints as callbacks reach them (``context.checkpoints``): read one, prune, keep the best.

    A checkpoint is a folder (``checkpoints/step-NNNNNNNN``, or ``checkpoints/best``); every read verifies the
    SHA-256 its training.json records and names a damaged file in an I2IError.
    """

    def newest(self) -> Path | None:
        """The newest complete step checkpoint, or None."""

    def best(self) -> Path | None:
        """The best checkpoint (what copy_to_best made) when it is complete, or None."""

    def step_of(self, checkpoint: Path) -> int | None:
        """The training step `checkpoint` holds; None when it records none."""

    def read_variant(self, checkpoint: Path, variant: str) -> dict[str, dict[str, Tensor]]:
        """The tensors of each network's `variant` file in `checkpoint` (what a callback's `checkpoint_variants`
        wrote there), {network: {key: tensor}} on the CPU; {} when the checkpoint holds no such variant."""

    def prune(self, keep: int) -> list[Path]:
        """Delete all but the `keep` newest step checkpoints (0 keeps all), never the current step's nor the final
        step's; returns the deleted folders."""

    def copy_to_best(self, checkpoint: Path) -> Path:
        """Make checkpoints/best an atomic copy of `checkpoint` (a crash leaves the previous best whole)."""


class TrainingContext(Protocol):
    """What a callback sees of the run: its parts, where training stands, a few helpers, and `control`.

    ``request_checkpoint()``, ``request_stop(reason)``, ``checkpoint_pending`` (= ``control.checkpoint_due``) and
    ``stopping`` are kept as aliases of ``control``'s, for callbacks written before it.
    """

    recipe: Recipe  # resolved: every table and default written out
    folder: RunFolder  # the run folder's paths and readers
    method: Method
    networks: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    dataset: Dataset
    device: torch.device
    distributed: Distributed  # rank, world_size, is_main, active, and collectives (gather, any, sum, barrier)
    is_main: bool  # rank 0 (or the only process): the one that writes files
    step: int  # steps done
    epoch: int
    total_steps: int
    steps_per_epoch: int
    resumed_from: Path | None  # the checkpoint folder the run continued from, or None
    control: TrainingControl  # request a checkpoint or a stop; whether a checkpoint is written at this step
    checkpoints: RunCheckpoints  # the run's checkpoints: read a variant, prune, copy to best
    checkpoint_pending: bool  # alias of control.checkpoint_due
    stopping: bool  # alias of control.stopping

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch of the dataset's items on the training device, in the networks' memory layout."""

    def learning_rates(self) -> dict[str, float]:
        """The current learning rate of each optimizer group."""

    def elapsed(self) -> float:
        """Seconds of training so far, over all sessions of a resumed run."""

    def due(self, every: int) -> bool:
        """Whether this step is one of every `every` (or the last step); 0 means only the last."""

    def request_checkpoint(self) -> None:
        """Alias of control.request_checkpoint()."""

    def request_stop(self, reason: str) -> None:
        """Alias of control.request_stop(reason)."""

    def evaluation_weights(self) -> AbstractContextManager[None]:
        """Context under which a callback evaluates the networks (samples, validation): they are in eval mode
        and hold the weights every callback's `swap_in_for_evaluation` puts in (e.g. the EMA average); on exit
        the training weights and modes are back, bit for bit. Use: ``with context.evaluation_weights(): ...``."""


class Callback(Part):
    """Acts on the training loop's lifecycle events: logging, samples, checkpoints, EMA, validation, trackers.

    A recipe enables one with a ``[callback.<name>]`` table holding its options (``enabled = false`` turns off
    one that is on by default). Every event gets the :class:`TrainingContext`; callbacks run in ``order``
    (lowest first), on every process under torchrun (write files only where ``context.is_main``). State a
    callback returns from ``state_dict`` is saved in each checkpoint (tensors and JSON values, nested dicts and
    lists of them) and given back to ``load_state_dict`` on --resume, so a run that resumes equals one that did
    not.
    """

    kind = "callback"
    hook = "i2i_callbacks"
    #: the order callbacks run in each event, lowest first. The stock ones: metrics.jsonl 100, samples 110,
    #: report 120, checkpoint requests 200, finite-loss check 250, progress 300; the default 0 runs before them
    #: (e.g. an EMA update before samples are drawn, entries added to the log record before it is written)
    order: ClassVar[int] = 0
    #: True for callbacks that run when the recipe does not name them (the stock metrics, report, checkpoints...)
    default: ClassVar[bool] = False
    #: the variant of network weights this callback writes (see `checkpoint_variants`) that translate, evaluate,
    #: export and demo use by default (``--raw``: the trained weights), e.g. an EMA average's; "" for none. At most
    #: one enabled callback declares one; checkpoints record it in training.json as "weights_variant".
    weights_variant: ClassVar[str] = ""

    def on_setup(self, context: TrainingContext) -> None:
        """Once the run is built (data, method, networks, optimizers), before anything is written: raise
        I2IError here for what needs the dataset or the method to judge (e.g. a metric the data cannot give)."""

    def on_train_start(self, context: TrainingContext) -> None:
        """Before the first step (after a checkpoint was loaded on --resume)."""

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """After each step, before its log point; `losses` are the step's detached device tensors (reading one
        syncs the device)."""

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """At each log point (every train.log_every steps and the last). `record` holds step, epoch, elapsed,
        lr (per group), losses (means since the last log point, over all processes) and the method's
        `log_values` (e.g. augment_p); a callback may add entries that later ones (metrics.jsonl, trackers) then
        record."""

    def on_checkpoint_save(self, context: TrainingContext, folder: Any) -> None:
        """After a checkpoint was written to `folder` (on rank 0; e.g. to copy or upload it)."""

    def on_checkpoint_load(self, context: TrainingContext, folder: Any) -> None:
        """After the whole training state (this callback's included) was restored from `folder` on --resume,
        before on_train_start."""

    def on_train_end(self, context: TrainingContext, outcome: str, error: BaseException | None) -> None:
        """Once at the end: outcome is "finished", "stopped" (a callback asked), "interrupted" (Ctrl-C) or
        "failed" (e.g. a non-finite loss, with the error)."""

    def state_dict(self) -> dict[str, Any]:
        """What to keep in checkpoints: tensors, JSON values, and dicts and lists of them."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def checkpoint_variants(self, context: TrainingContext) -> dict[str, dict[str, dict[str, Tensor]]]:
        """Extra network files for each checkpoint (e.g. EMA weights), as {variant: {network: {key: tensor}}}: each
        is written as `<network>.<variant>.safetensors` with the part metadata of `network` (so `i2i translate`
        can rebuild it), and training.json lists them under "variants" ({variant: {network: file stem}}); read
        them back with `context.checkpoints.read_variant`. An nn.Module in place of the tensors is taken as its
        state_dict(), as is a `checkpoint_networks` method of callbacks written before this one."""
        return {}

    def swap_in_for_evaluation(self, context: TrainingContext) -> AbstractContextManager[None]:
        """Weights to evaluate with instead of the training ones (e.g. an EMA average): a context manager that
        puts them into `context.networks` on entry and restores the training weights exactly on exit. Entered by
        `context.evaluation_weights()`; the default changes nothing."""
        return nullcontext()
