"""A method of three or more domains, written against the public API alone: a hub domain (the data's first) and a
generator to and from each other domain ("<source>_to_<target>"), trained with the stock adversarial loss and a
cycle through the hub. It exists to show that a method declaring its own domains and directions goes through
translate, evaluate and export with no change to the core."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from i2i.api import (AdversarialLoss, Generator, I2IError, LossSlot, Method, PartFactory, ReconstructionLoss,
                     Stepper, hookimpl)


class HubMethod(Method):
    """N domains through a hub: a generator from the hub to each other domain and back, a discriminator per domain."""

    name = "hub"
    losses = {
        "adversarial": LossSlot(AdversarialLoss, "lsgan", 1.0, "GAN loss of every generator and discriminator"),
        "cycle": LossSlot(ReconstructionLoss, "l1", 10.0, "hub -> domain -> hub and domain -> hub -> domain"),
    }
    parts = ("generator", "discriminator")
    groups = ("G", "D")

    def build(self, parts: PartFactory) -> None:
        """Generators hub <-> each other domain; a discriminator for each domain."""
        self.names = parts.domains()
        if len(self.names) < 3:
            raise I2IError(f"method hub needs data of 3 or more domains; the data has {len(self.names)}")
        channels = parts.channels(self.names[0])
        hub = self.names[0]
        self.G = nn.ModuleDict()
        for other in self.names[1:]:
            self.G[f"{hub}_to_{other}"] = parts.generator(in_channels=channels, out_channels=channels)
            self.G[f"{other}_to_{hub}"] = parts.generator(in_channels=channels, out_channels=channels)
        self.D = nn.ModuleDict({name: parts.discriminator(in_channels=channels) for name in self.names})
        self.gan, self.w_gan = parts.loss("adversarial")
        self.cycle, self.w_cycle = parts.loss("cycle")

    def domains(self) -> tuple[str, ...]:
        """The data's domains; the first is the hub."""
        return tuple(self.names)

    def networks(self) -> dict[str, nn.Module]:
        """G_<direction> and D_<domain>."""
        return {**{f"G_{d}": g for d, g in self.G.items()}, **{f"D_{n}": d for n, d in self.D.items()}}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """All generators, all discriminators."""
        return {"G": list(self.G.parameters()), "D": list(self.D.parameters())}

    def generator_for(self, direction: str) -> Generator:
        """The generator of "<source>_to_<target>"."""
        return self.G[direction]

    def generators(self) -> dict[str, Generator]:
        """Every direction's generator."""
        return dict(self.G.items())

    def step(self, batch: dict[str, Any], optim: Stepper) -> dict[str, Tensor]:
        """G: fool the target's discriminator and come back (through the hub); then D: reals vs fakes."""
        images, own = batch["image"], torch.as_tensor(batch["domain"], device=batch["image"].device)
        hub = self.names[0]
        losses: dict[str, Tensor] = {}
        fakes: list[tuple[str, Tensor]] = []
        with optim.autocast():
            total = images.new_zeros(())
            for index, name in enumerate(self.names):
                mine = images[own == index]
                if not len(mine):
                    continue
                targets = self.names[1:] if name == hub else [hub]
                for target in targets:
                    fake = self.G[f"{name}_to_{target}"](mine)
                    back = self.G[f"{target}_to_{name}"](fake)
                    total = total + self.gan.generator_loss(self.D[target](fake)) * self.w_gan
                    total = total + self.cycle(back, mine) * self.w_cycle
                    fakes.append((target, fake.detach()))
        optim.zero_grad("G")
        optim.backward(total)
        optim.step("G")
        losses["G"] = total.detach()
        with optim.autocast():
            loss_d = images.new_zeros(())
            for target, fake in fakes:
                real = images[own == self.names.index(target)]
                loss_d = loss_d + self.gan(self.D[target](fake), False)
                if len(real):
                    loss_d = loss_d + self.gan(self.D[target](real), True)
        optim.zero_grad("D")
        optim.backward(loss_d)
        optim.step("D")
        losses["D"] = loss_d.detach()
        return losses

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The batch and its translations from the hub."""
        images = batch["image"]
        return {"real": images, **{d: g(images) for d, g in self.G.items() if d.startswith(self.names[0])}}


@hookimpl
def i2i_methods() -> list[type]:
    """The hub method."""
    return [HubMethod]
