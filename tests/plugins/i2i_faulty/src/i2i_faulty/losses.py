"""A reconstruction loss that becomes NaN after a given number of calls, as a diverging run would."""

import torch
import torch.nn.functional as F

import i2i
from i2i.api import ReconstructionLoss


class NanAfter(ReconstructionLoss):
    """L1 loss that returns NaN from call number `after` on."""

    name = "nan_after"
    options = (i2i.Option("after", int, 3, "calls before the loss turns NaN", min=0),)

    def __init__(self, after: int = 3) -> None:
        super().__init__()
        self.after = after
        self.calls = 0

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = F.l1_loss(output, target)
        return loss * float("nan") if self.calls > self.after else loss


@i2i.hookimpl
def i2i_losses():
    return [NanAfter]
