"""The CycleGAN paper's losses: least-squares adversarial loss and L1 reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from i2i.hookspecs import hookimpl
from i2i.parts import AdversarialLoss, ReconstructionLoss


class LSGANLoss(AdversarialLoss):
    """Least-squares GAN loss (Mao et al. 2017): squared error of raw scores against 1 (real) or 0 (fake)."""

    name = "lsgan"

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        """Mean squared distance of `prediction` to the real (1) or fake (0) target."""
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        return F.mse_loss(prediction, target)


class L1Loss(ReconstructionLoss):
    """Mean absolute error between output and target images."""

    name = "l1"

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean absolute difference."""
        return F.l1_loss(output, target)


class L2Loss(ReconstructionLoss):
    """Mean squared error between output and target (DiscoGAN's reconstruction and feature matching)."""

    name = "l2"

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean squared difference."""
        return F.mse_loss(output, target)


@hookimpl
def i2i_losses() -> list[type]:
    """The stock losses."""
    return [LSGANLoss, L1Loss, L2Loss]
