"""The stock losses: adversarial (LSGAN, the original GAN, WGAN-GP, hinge) and reconstruction (L1, L2).

Every adversarial loss also takes R1 (`r1_weight`, `r1_every`) from the AdversarialLoss base class."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2i.api import AdversarialLoss, Option, ReconstructionLoss, hookimpl


class LSGANLoss(AdversarialLoss):
    """Least-squares GAN loss (Mao et al. 2017): squared error of raw scores against 1 (real) or 0 (fake)."""

    name = "lsgan"
    threshold = 0.5  # halfway between the fake (0) and real (1) targets

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        """Mean squared distance of `prediction` to the real (1) or fake (0) target."""
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        return F.mse_loss(prediction, target)


class VanillaGANLoss(AdversarialLoss):
    """The original GAN loss (Goodfellow et al. 2014): binary cross-entropy of raw scores against 1 or 0."""

    name = "vanilla"

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        """Mean binary cross-entropy of sigmoid(`prediction`) with the real (1) or fake (0) target."""
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        # The logits form is the numerically stable one (no sigmoid that saturates to exactly 0 or 1).
        return F.binary_cross_entropy_with_logits(prediction, target)


class WGANGPLoss(AdversarialLoss):
    """Wasserstein GAN with gradient penalty (Gulrajani et al. 2017): critic scores, unit gradient norm enforced."""

    name = "wgangp"
    options = (Option("gp_weight", float, 10.0, "weight of the gradient penalty (lambda; 0 disables it)",
                      min=0.0), *AdversarialLoss.options)

    def __init__(self, *, gp_weight: float = 10.0, r1_weight: float = 0.0, r1_every: int = 1) -> None:
        super().__init__(r1_weight=r1_weight, r1_every=r1_every)
        self.gp_weight = gp_weight

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        """The critic's loss term: minus the mean score for real targets, the mean score for fake ones."""
        return -prediction.mean() if target_is_real else prediction.mean()

    def penalty(self, discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor | None:
        """gp_weight * mean((||grad D(x)||_2 - 1)^2) at random points x between each real and fake image, plus R1
        when set."""
        r1 = self.r1_penalty(discriminator, real)
        if self.gp_weight == 0:
            return r1
        # One mixing weight per sample, from torch's global RNG so that seeded runs repeat.
        alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
        mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
        scores = discriminator(mixed)
        # create_graph: the penalty is itself differentiated for the critic's update.
        grad, = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
        # The tiny offset keeps the norm's derivative finite where a gradient is exactly zero (as the reference).
        norms = (grad.flatten(1).float() + 1e-16).norm(2, dim=1)
        gp = self.gp_weight * ((norms - 1) ** 2).mean()
        return gp if r1 is None else gp + r1


class HingeLoss(AdversarialLoss):
    """Hinge GAN loss (Lim & Ye 2017; SAGAN, BigGAN): D gets relu(1 - D(real)) + relu(1 + D(fake)), G -D(G(x))."""

    name = "hinge"

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        """The discriminator's term: mean(relu(1 - prediction)) for reals, mean(relu(1 + prediction)) for fakes."""
        return F.relu(1.0 - prediction).mean() if target_is_real else F.relu(1.0 + prediction).mean()

    def generator_loss(self, prediction: Tensor) -> Tensor:
        """-mean(prediction): unlike D's hinge, G's push on its fakes' scores never stops."""
        return -prediction.mean()


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
    return [LSGANLoss, VanillaGANLoss, WGANGPLoss, HingeLoss, L1Loss, L2Loss]
