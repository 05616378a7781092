"""A new kind of part, declared by a plugin: "regularizer", a penalty on generated images.

The whole declaration is the base class `Regularizer` (a subclass of `i2i.api.Part` that sets `kind`) and the
hook `i2i_kinds` returning it. Its one part, `tv`, and the method `smooth`, which builds it from a recipe's
`[regularizer]` table, register through `i2i_parts`, the hook that takes parts of any kind.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from i2i.api import Generator, LossSlot, Method, Option, Part, PartFactory, ReconstructionLoss, Stepper, hookimpl


class Regularizer(Part):
    """A penalty on a batch of generated images (N, C, H, W), added to the generator's loss."""

    kind = "regularizer"

    def __call__(self, images: Tensor) -> Tensor:  # pragma: no cover - interface
        """The weighted penalty of `images`: a scalar with a gradient to them."""
        raise NotImplementedError


class TotalVariation(Regularizer):
    """Total variation: the mean absolute difference of neighbouring pixels, ramped in over the first calls.

    The ramp counts the calls made so far, which a checkpoint keeps (state_dict), so a resumed run ramps on
    where it stopped.
    """

    name = "tv"
    options = (
        Option("weight", float, 1.0, "weight of the penalty once ramped in", min=0.0),
        Option("warmup", int, 0, "calls over which the weight rises linearly from weight/warmup (0: at once)",
               min=0),
    )

    def __init__(self, *, weight: float = 1.0, warmup: int = 0) -> None:
        self.weight, self.warmup = weight, warmup
        self.calls = 0

    def __call__(self, images: Tensor) -> Tensor:
        """weight * ramp * (mean |dy| + mean |dx|)."""
        self.calls += 1
        ramp = min(1.0, self.calls / self.warmup) if self.warmup else 1.0
        dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
        dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
        return self.weight * ramp * (dy + dx)

    def state_dict(self) -> dict[str, Any]:
        """The calls made so far (the ramp's position)."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the ramp where the checkpoint left it."""
        self.calls = int(state["calls"])


class SmoothMethod(Method):
    """One generator A->B kept close to the identity on B, with the recipe's regularizer on its outputs."""

    name = "smooth"
    options = ()
    losses = {"identity": LossSlot(ReconstructionLoss, "l1", 1.0, "||G(b) - b||: B images pass unchanged")}
    parts = ("generator", "regularizer")
    groups = ("G",)

    def build(self, parts: PartFactory) -> None:
        """G from [generator], the regularizer from [regularizer], the identity loss from [loss.identity]."""
        self.G: Generator = parts.generator(in_channels=parts.channels("A"), out_channels=parts.channels("B"))
        self.regularizer: Regularizer = parts.build("regularizer")
        self.identity, self.w_identity = parts.loss("identity")

    def networks(self) -> dict[str, nn.Module]:
        """The generator."""
        return {"G": self.G}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """One optimizer, for G."""
        return {"G": list(self.G.parameters())}

    def generator_for(self, direction: str) -> Generator:
        """G translates A to B only."""
        return {"AtoB": self.G}[direction]

    def step(self, batch: dict[str, Any], optim: Stepper) -> dict[str, Tensor]:
        """G update: the identity loss on B plus the regularizer on G(A), logged under the regularizer's name."""
        real_A, real_B = batch["A"], batch["B"]
        with optim.autocast():
            fake_B = self.G(real_A)
            losses = {"G_idt": self.identity(self.G(real_B), real_B) * self.w_identity,
                      f"G_{self.regularizer.name}": self.regularizer(fake_B)}
            total = sum(losses.values())
        optim.zero_grad("G")
        optim.backward(total)
        optim.step("G")
        return {name: value.detach() for name, value in losses.items()}

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Input and output."""
        return {"real_A": batch["A"], "fake_B": self.G(batch["A"])}


@hookimpl
def i2i_kinds() -> list[type[Part]]:
    """The kind this package adds."""
    return [Regularizer]


@hookimpl
def i2i_parts() -> list[type[Part]]:
    """Parts of two kinds in one list: a regularizer and a method."""
    return [TotalVariation, SmoothMethod]
