"""i2i.testing.check_part on the loop's part kinds: every stock optimizer, schedule and callback passes, and the
checks catch an optimizer whose state does not survive a checkpoint and a schedule that goes negative."""

from __future__ import annotations

import pytest
import torch

import i2i
import i2i.api
from i2i.contract.registry import Registry
from i2i.testing import check_part


@pytest.mark.parametrize("kind", ["optimizer", "schedule", "callback"])
def test_every_stock_part_of_the_loop_passes_check_part(kind):
    names = i2i.available(kind)
    assert names
    for name in names:
        check_part(kind, name)


class ForgetfulSGD(torch.optim.SGD):
    """SGD with momentum whose state_dict leaves the momentum out."""

    def state_dict(self):
        state = super().state_dict()
        state["state"] = {}
        return state


class Forgetful(i2i.api.Optimizer):
    """An optimizer that loses its momentum in checkpoints."""

    name = "forgetful"
    options = (i2i.Option("lr", float, 0.1, "learning rate"),)

    def __init__(self, lr: float = 0.1) -> None:
        self.lr = lr

    def build(self, params):
        return ForgetfulSGD(params, lr=self.lr, momentum=0.9)


class NegativeSchedule(i2i.api.Schedule):
    """A schedule going below zero."""

    name = "negative"

    def factor(self, clock):
        return 1.0 - clock.step / 6


class FaultyPlugin:
    @i2i.hookimpl
    def i2i_optimizers(self) -> list[type]:
        return [Forgetful]

    @i2i.hookimpl
    def i2i_schedules(self) -> list[type]:
        return [NegativeSchedule]


def test_check_part_catches_an_optimizer_that_loses_state_and_a_negative_schedule():
    registry = Registry()
    registry.register(FaultyPlugin(), name="faulty")
    with pytest.raises(AssertionError, match="takes another step than the original"):
        check_part("optimizer", "forgetful", registry=registry)
    with pytest.raises(AssertionError, match=r"factor\(\) at step 7 is -0.16"):
        check_part("schedule", "negative", registry=registry)
