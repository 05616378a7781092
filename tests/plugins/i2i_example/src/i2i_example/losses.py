"""A loss registered under an entry-point name the stock package also uses ("losses")."""

import torch

import i2i
from i2i.api import ReconstructionLoss


class CharbonnierLoss(ReconstructionLoss):
    """Charbonnier loss: a smooth L1, sqrt((x - y)^2 + eps^2)."""

    name = "charbonnier"
    options = (i2i.Option("eps", float, 1e-3, "smoothing constant", min=0.0),)

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((output - target) ** 2 + self.eps**2).mean()


@i2i.hookimpl
def i2i_losses():
    return [CharbonnierLoss]
