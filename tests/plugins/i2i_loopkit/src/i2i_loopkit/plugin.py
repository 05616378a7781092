"""The loopkit plugin: written against the public API alone (i2i.api), as a third party would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch
from torch import Tensor, nn

from i2i.api import (Callback, Combination, Executor, I2IError, Option, Optimizer, RunFolder, Schedule, ScheduleClock,
                     SweepRuns, TrainingContext, hookimpl)


class LossTally(Callback):
    """Counts steps and sums one loss over the run (its state goes into every checkpoint)."""

    name = "loopkit_tally"
    options = (Option("loss", str, "G_A", "the loss to sum"),
               Option("stop_at", int, 0, "end training after this step (early stopping; 0: never)", min=0))

    def __init__(self, loss: str = "G_A", stop_at: int = 0) -> None:
        self.loss = loss
        self.stop_at = stop_at
        self.steps = 0
        self.total = torch.zeros((), dtype=torch.float64)

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """Count the step and add its loss (on the device: no sync)."""
        if self.loss not in losses:
            raise I2IError(f"[callback.loopkit_tally] loss = {self.loss!r} is not a loss of this method"
                           f" ({', '.join(losses)})")
        self.steps += 1
        self.total = self.total.to(losses[self.loss].device) + losses[self.loss].double()
        if context.step == self.stop_at:
            context.request_stop(f"loopkit_tally.stop_at = {self.stop_at}")

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """Add the tally to the log record, so metrics.jsonl holds it."""
        record["loopkit"] = {"steps": self.steps, "total": float(self.total)}

    def on_train_end(self, context: TrainingContext, outcome: str, error: BaseException | None) -> None:
        """Leave a note of how training ended."""
        if context.is_main:
            note = {"outcome": outcome, "step": context.step, "steps": self.steps,
                    "error": str(error) if error else None}
            (context.folder.path / "loopkit.json").write_text(json.dumps(note))

    def state_dict(self) -> dict[str, Any]:
        """The count and the sum."""
        return {"steps": self.steps, "total": self.total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue counting from a checkpoint."""
        self.steps, self.total = state["steps"], state["total"]


class LionOptimizer(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum, with decoupled weight decay."""

    def __init__(self, params, lr: float, betas: tuple[float, float], weight_decay: float) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                momentum = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_((momentum * beta1 + p.grad * (1 - beta1)).sign_(), alpha=-group["lr"])
                momentum.mul_(beta2).add_(p.grad, alpha=1 - beta2)


class Lion(Optimizer):
    """Lion: sign updates of an interpolated momentum (use a rate 3-10x below Adam's)."""

    name = "loopkit_lion"
    options = (Option("lr", float, 3e-5, "learning rate", min=0.0),
               Option("beta1", float, 0.9, "interpolation of momentum and gradient", min=0.0, max=1.0),
               Option("beta2", float, 0.99, "momentum decay", min=0.0, max=1.0),
               Option("weight_decay", float, 0.0, "decoupled weight decay", min=0.0))

    def __init__(self, lr: float = 3e-5, beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0):
        self.settings = (lr, (beta1, beta2), weight_decay)

    def build(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """Lion over `params`."""
        lr, betas, weight_decay = self.settings
        return LionOptimizer(params, lr, betas, weight_decay)


class Exponential(Schedule):
    """The rate times gamma each epoch."""

    name = "loopkit_exp"
    options = (Option("gamma", float, 0.5, "the factor per epoch", min=0.0, max=1.0),)

    def __init__(self, gamma: float = 0.5) -> None:
        self.gamma = gamma

    def factor(self, clock: ScheduleClock) -> float:
        """gamma ** epoch."""
        return self.gamma ** clock.epoch


@click.command("loopkit")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--checkpoint", default=None, help="latest (default), best, or step-N.")
def loopkit(run: Path, checkpoint: str | None) -> None:
    """Show where a run stands: its checkpoint's step and its log lines."""
    folder = RunFolder(run)
    chosen = folder.checkpoint(checkpoint)
    state = folder.read_state(chosen)
    click.echo(f"{run}: {chosen.name} at step {state['step']}, {len(folder.read_metrics())} log lines")


@hookimpl
def i2i_callbacks() -> list[type]:
    """The tally."""
    return [LossTally]


@hookimpl
def i2i_optimizers() -> list[type]:
    """Lion."""
    return [Lion]


@hookimpl
def i2i_schedules() -> list[type]:
    """The exponential schedule."""
    return [Exponential]


class InOrder(Executor):
    """Runs a sweep's runs one after another, newest combination first (an executor a plugin adds)."""

    name = "in_order"

    def run(self, sweep: SweepRuns, combos: list[Combination]) -> None:
        """Each run as a subprocess, in reverse order, recording each start and end."""
        import subprocess

        for combo in reversed(combos):
            sweep.record(combo, "running", "started by loopkit's in_order", event=False)
            with open(sweep.log(combo), "w") as log:
                code = subprocess.run(sweep.command(combo), stdout=log, stderr=subprocess.STDOUT).returncode
            sweep.record(combo, "finished" if code == 0 else "failed", f"in_order, exit code {code}")


@hookimpl
def i2i_executors() -> list[type]:
    """The in-order executor."""
    return [InOrder]


@hookimpl
def i2i_commands() -> list[click.Command]:
    """`i2i loopkit RUN`."""
    return [loopkit]
