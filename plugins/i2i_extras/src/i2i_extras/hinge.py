"""The hinge adversarial loss of geometric GAN (Lim & Ye 2017) and SN-GAN (Miyato et al. 2018)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

import i2i
from i2i.api import AdversarialLoss


class HingeLoss(AdversarialLoss):
    """Hinge GAN loss: relu(1 - D(x)) on reals, relu(1 + D(x)) on fakes; G gets the hinge on real."""

    name = "hinge"

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        """mean(relu(1 - prediction)) for the real target, mean(relu(1 + prediction)) for the fake one.

        Methods call `loss(D(fake), True)` for the generator too, and the interface does not say which network
        is being trained, so the generator's objective is mean(relu(1 - D(G(x)))) rather than the papers'
        -mean(D(G(x))). Both push D(G(x)) up; the hinge form stops pushing once a fake scores above 1, as in
        several CycleGAN re-implementations that offer a hinge loss.
        """
        return F.relu(1.0 - prediction).mean() if target_is_real else F.relu(1.0 + prediction).mean()


@i2i.hookimpl
def i2i_losses() -> list[type[AdversarialLoss]]:
    """The hinge loss."""
    return [HingeLoss]
