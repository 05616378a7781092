"""The callback interface: what a callback sees of a run (TrainingContext) and the events it acts on (Callback)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from i2i.contract.parts import Dataset, Method, Part


class TrainingContext(Protocol):
    """What a callback sees of the run: the trainer's public face (attributes and the two actions below)."""

    recipe: Any  # i2i.recipe.Recipe, resolved: every table and default written out
    folder: Any  # i2i.storage.rundir.RunFolder: the run folder's paths and readers
    method: Method
    networks: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    dataset: Dataset
    device: torch.device
    distributed: Any  # i2i.engine.distributed.Distributed: rank, world_size, and collectives (gather, any, sum)
    is_main: bool  # rank 0 (or the only process): the one that writes files
    step: int  # steps done
    epoch: int
    total_steps: int
    steps_per_epoch: int
    resumed_from: Any  # the checkpoint folder the run continued from, or None
    checkpoint_pending: bool  # a checkpoint will be written at the end of this step
    stopping: bool  # a Ctrl-C reached a process: a checkpoint is written and training stops after this step

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch of the dataset's items on the training device, in the networks' memory layout."""

    def learning_rates(self) -> dict[str, float]:
        """The current learning rate of each optimizer group."""

    def elapsed(self) -> float:
        """Seconds of training so far, over all sessions of a resumed run."""

    def due(self, every: int) -> bool:
        """Whether this step is one of every `every` (or the last step); 0 means only the last."""

    def request_checkpoint(self) -> None:
        """Have a checkpoint written at the end of this step (after the log point's callbacks)."""

    def request_stop(self, reason: str) -> None:
        """End training after this step, with a checkpoint (early stopping); `reason` is shown to the user."""

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

    def checkpoint_networks(self, context: TrainingContext) -> dict[str, dict[str, nn.Module]]:
        """Extra network files for each checkpoint (e.g. EMA weights), as {variant: {network: module}}: each module
        is written as `<network>.<variant>.safetensors` with the part metadata of `network` (so `i2i translate`
        can rebuild it), and training.json lists them under "variants" (e.g. {"ema": {"G_A": "G_A.ema"}})."""
        return {}

    def swap_in_for_evaluation(self, context: TrainingContext) -> AbstractContextManager[None]:
        """Weights to evaluate with instead of the training ones (e.g. an EMA average): a context manager that
        puts them into `context.networks` on entry and restores the training weights exactly on exit. Entered by
        `context.evaluation_weights()`; the default changes nothing."""
        return nullcontext()
