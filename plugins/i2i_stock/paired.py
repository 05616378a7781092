"""The paired training step of pix2pix (Isola, Zhu, Zhou, Efros: "Image-to-Image Translation with Conditional
Adversarial Networks", CVPR 2017), in the order of its reference code."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from i2i.api import (AdversarialLoss, Augment, Discriminator, Generator, LossSlot, Method, Option, PartFactory,
                    ReconstructionLoss, Stepper, hookimpl)
from i2i_stock.steps import augmented, set_requires_grad, update_discriminator


class PairedMethod(Method):
    """Paired translation A->B with a conditional discriminator that sees input and output (pix2pix)."""

    name = "paired"
    options = (
        Option("batch_calls", bool, True,
               "score real and fake pairs in one discriminator call when its norm allows (same math)"),
    )
    losses = {
        "adversarial": LossSlot(AdversarialLoss, "vanilla", 1.0, "conditional GAN loss on (input, output) pairs"),
        "reconstruction": LossSlot(ReconstructionLoss, "l1", 100.0, "||G(a) - b|| (lambda_L1 = 100 in pix2pix)"),
    }
    parts = ("generator", "discriminator", "augment")
    paired_data = True
    groups = ("G", "D")

    def __init__(self, batch_calls: bool = True) -> None:
        self.batch_calls = batch_calls

    def build(self, parts: PartFactory) -> None:
        """One generator A->B and a discriminator over input and output stacked on the channel axis."""
        self.G: Generator = parts.generator(in_channels=parts.channels("A"), out_channels=parts.channels("B"))
        channels = parts.options_of(self.G)
        self.D: Discriminator = parts.discriminator(
            in_channels=channels.get("in_channels", 3) + channels.get("out_channels", 3))
        self.gan, self.w_gan = parts.loss("adversarial")
        self.augment: Augment = parts.augment()
        self.reconstruction, self.w_reconstruction = parts.loss("reconstruction")

    def augments(self) -> dict[str, Augment]:
        """D's augment, when active."""
        return {"D": self.augment} if self.augment.active else {}

    def networks(self) -> dict[str, nn.Module]:
        """G and D, as the reference names them."""
        return {"G": self.G, "D": self.D}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """One optimizer per network."""
        return {"G": list(self.G.parameters()), "D": list(self.D.parameters())}

    def generator_for(self, direction: str) -> Generator:
        """G translates A to B; pix2pix learns no way back."""
        return {"AtoB": self.G}[direction]

    def step(self, batch: dict[str, Any], optim: Stepper) -> dict[str, Tensor]:
        """D update on real and fake pairs (halved), then G update: conditional GAN + weighted L1."""
        real_A, real_B = batch["A"], batch["B"]
        with optim.autocast():
            fake_B = self.G(real_A)
            real_AB = torch.cat((real_A, real_B), 1)
            fake_AB = torch.cat((real_A, fake_B.detach()), 1)
        losses = update_discriminator(self.D, self.gan, real_AB, fake_AB, optim, batched=self.batch_calls,
                                      augment=self.augment)

        set_requires_grad([self.D], False)
        with optim.autocast():
            # the stacked pair goes through the augment as one image: one geometric transform for both halves
            scored = augmented(self.augment, torch.cat((real_A, fake_B), 1))
            losses["G_GAN"] = self.gan.generator_loss(self.D(scored)) * self.w_gan
            losses["G_L1"] = self.reconstruction(fake_B, real_B) * self.w_reconstruction
            loss_G = losses["G_GAN"] + losses["G_L1"]
        optim.zero_grad("G")
        optim.backward(loss_G)
        optim.step("G")
        return {name: value.detach() for name, value in losses.items()}

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Input, output and target."""
        return {"real_A": batch["A"], "fake_B": self.G(batch["A"]), "real_B": batch["B"]}


@hookimpl
def i2i_methods() -> list[type]:
    """The stock paired method."""
    return [PairedMethod]
