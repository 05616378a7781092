"""The stock learning-rate schedules: the reference's linear, constant, step and cosine, each with warm-up."""

from __future__ import annotations

import math
from typing import Any

from i2i.api import Option, Schedule, ScheduleClock, hookimpl

WARMUP = Option("warmup_steps", int, 0, "steps over which the rate ramps up linearly from 0 (0: none)", min=0)


class WarmupSchedule(Schedule):
    """Base of the stock schedules: a policy's factor, ramped up linearly over the first warmup_steps."""

    options = (WARMUP,)

    def __init__(self, warmup_steps: int = 0, **options: Any) -> None:
        self.warmup_steps = warmup_steps
        self.settings = options

    def policy(self, clock: ScheduleClock) -> float:  # pragma: no cover - interface
        """The factor before warm-up."""
        raise NotImplementedError

    def factor(self, clock: ScheduleClock) -> float:
        """The policy's factor, times (step + 1) / warmup_steps during warm-up."""
        factor = self.policy(clock)
        if clock.step < self.warmup_steps:
            factor = factor * (clock.step + 1) / self.warmup_steps
        return factor


class Linear(WarmupSchedule):
    """The reference's "linear": constant for train.epochs, then linear decay toward 0 over train.decay_epochs."""

    name = "linear"

    def policy(self, clock: ScheduleClock) -> float:
        """1, then 1 - (epoch + 1 - epochs) / (decay_epochs + 1) per epoch, as pytorch-CycleGAN-and-pix2pix."""
        if clock.decay_epochs == 0:
            return 1.0  # no decay phase (e.g. a run bounded by max_steps alone)
        return 1.0 - max(0, clock.epoch + 1 - clock.epochs) / float(clock.decay_epochs + 1)


class Constant(WarmupSchedule):
    """A constant learning rate (after the warm-up, if any)."""

    name = "constant"

    def policy(self, clock: ScheduleClock) -> float:
        """Always 1."""
        return 1.0


class Step(WarmupSchedule):
    """The reference's "step": the rate times gamma every step_epochs epochs."""

    name = "step"
    options = (Option("step_epochs", int, 50, "epochs between reductions (the reference's --lr_decay_iters)",
                      min=1),
               Option("gamma", float, 0.1, "the factor applied at each reduction", min=0.0), WARMUP)

    def policy(self, clock: ScheduleClock) -> float:
        """gamma ** (epoch // step_epochs)."""
        return self.settings["gamma"] ** (clock.epoch // self.settings["step_epochs"])


class Cosine(WarmupSchedule):
    """Cosine decay over the run's steps, from 1 to min_factor (the reference's "cosine" decays per epoch)."""

    name = "cosine"
    options = (Option("min_factor", float, 0.0, "the factor at the last step", min=0.0, max=1.0), WARMUP)

    def policy(self, clock: ScheduleClock) -> float:
        """min + (1 - min) * (1 + cos(pi * progress)) / 2, progress from 0 at the first step to 1 at the last."""
        low = self.settings["min_factor"]
        progress = clock.step / max(1, clock.total_steps - 1)
        return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@hookimpl
def i2i_schedules() -> list[type]:
    """The stock schedules."""
    return [Linear, Constant, Step, Cosine]
