"""The unpaired cycle-consistent training step of CycleGAN (Zhu et al., ICCV 2017)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from i2i.api import (AdversarialLoss, Augment, Buffer, Discriminator, Generator, I2IError, LossSlot, Method, Option,
                    PartFactory, ReconstructionLoss, Stepper, hookimpl)
from i2i_stock.steps import BATCH_CALLS, augmented, call, discriminator_loss, set_requires_grad


class CycleMethod(Method):
    """Unpaired translation with two generators, two discriminators and cycle consistency (CycleGAN)."""

    name = "cycle"
    options = (
        BATCH_CALLS,
        Option("cycle", str, "both", "which cycle losses count: both, forward (A->B->A) or backward (B->A->B),"
               " for the paper's ablation", choices=("both", "forward", "backward")),
    )
    losses = {
        "adversarial": LossSlot(AdversarialLoss, "lsgan", 1.0, "GAN loss for G_A/D_A and G_B/D_B"),
        "cycle": LossSlot(ReconstructionLoss, "l1", 10.0, "||G_B(G_A(a)) - a|| and ||G_A(G_B(b)) - b||"),
        "identity": LossSlot(ReconstructionLoss, "l1", 0.5,
                             "||G_A(b) - b|| and ||G_B(a) - a||; weight is times the cycle weight"),
        "feature_matching": LossSlot(ReconstructionLoss, "l2", 0.0,
                                     "distance of the discriminator's mean features on fakes and reals"
                                     " (DiscoGAN); 0 disables it"),
    }
    parts = ("generator", "discriminator", "buffer", "augment")
    groups = ("G", "D")

    def __init__(self, batch_calls: bool = True, cycle: str = "both") -> None:
        self.batch_calls = batch_calls
        self.forward_cycle = cycle in ("both", "forward")
        self.backward_cycle = cycle in ("both", "backward")

    def build(self, parts: PartFactory) -> None:
        """Two generators (A->B, B->A), a discriminator per domain, a fake pool per domain."""
        a, b = parts.channels("A"), parts.channels("B")
        self.G_A: Generator = parts.generator(in_channels=a, out_channels=b)
        self.G_B: Generator = parts.generator(in_channels=b, out_channels=a)
        self.D_A: Discriminator = parts.discriminator(in_channels=b)  # scores domain B, as in the reference
        self.D_B: Discriminator = parts.discriminator(in_channels=a)
        self.gan, self.w_gan = parts.loss("adversarial")
        self.cycle, self.w_cycle = parts.loss("cycle")
        self.identity, w_identity = parts.loss("identity")
        self.matching, self.w_matching = parts.loss("feature_matching")
        self.w_identity = w_identity * self.w_cycle  # the reference scales identity by lambda_A/lambda_B
        if self.w_identity > 0 and a != b:
            # G_A(real_B) must be B again: impossible when the domains differ in channels (the reference asserts
            # input_nc == output_nc for the identity loss too)
            raise I2IError(f"the identity loss maps B images through G_A (A to B), which takes {a}-channel images,"
                           f" but B images have {b}: set loss.identity.weight = 0 for domains of different channels")
        self.fake_A_pool: Buffer = parts.buffer()
        self.fake_B_pool: Buffer = parts.buffer()
        # one per discriminator, so an adaptive one tunes itself to its own discriminator
        self.augment_A: Augment = parts.augment()
        self.augment_B: Augment = parts.augment()

    def networks(self) -> dict[str, nn.Module]:
        """G_A, G_B, D_A, D_B as the reference names them."""
        return {"G_A": self.G_A, "G_B": self.G_B, "D_A": self.D_A, "D_B": self.D_B}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """One optimizer for both generators, one for both discriminators."""
        return {"G": [*self.G_A.parameters(), *self.G_B.parameters()],
                "D": [*self.D_A.parameters(), *self.D_B.parameters()]}

    def buffers(self) -> dict[str, Buffer]:
        """The two pools of past fakes."""
        return {"fake_A_pool": self.fake_A_pool, "fake_B_pool": self.fake_B_pool}

    def augments(self) -> dict[str, Augment]:
        """The augments of D_A and D_B, when active."""
        return {name: a for name, a in (("D_A", self.augment_A), ("D_B", self.augment_B)) if a.active}

    def generator_for(self, direction: str) -> Generator:
        """G_A translates A to B, G_B translates B to A."""
        return {"AtoB": self.G_A, "BtoA": self.G_B}[direction]

    def step(self, batch: dict[str, Any], optim: Stepper) -> dict[str, Tensor]:
        """G update (adversarial + cycle + identity), then D update on real vs pooled fakes, D loss halved."""
        real_A, real_B = batch["A"], batch["B"]
        use_identity = self.w_identity > 0
        with optim.autocast():
            # G_A sees real_A (translation) and real_B (identity): one call when norms are per sample
            if use_identity:
                fake_B, idt_A = call(self.G_A, real_A, real_B, batched=self.batch_calls)
                fake_A, idt_B = call(self.G_B, real_B, real_A, batched=self.batch_calls)
            else:
                fake_B, fake_A = self.G_A(real_A), self.G_B(real_B)
            rec_A = self.G_B(fake_B) if self.forward_cycle else None
            rec_B = self.G_A(fake_A) if self.backward_cycle else None

            set_requires_grad([self.D_A, self.D_B], False)
            losses = {
                "G_A": self.gan.generator_loss(self.D_A(augmented(self.augment_A, fake_B))) * self.w_gan,
                "G_B": self.gan.generator_loss(self.D_B(augmented(self.augment_B, fake_A))) * self.w_gan,
            }
            if rec_A is not None:
                losses["cycle_A"] = self.cycle(rec_A, real_A) * self.w_cycle
            if rec_B is not None:
                losses["cycle_B"] = self.cycle(rec_B, real_B) * self.w_cycle
            if use_identity:
                losses["idt_A"] = self.identity(idt_A, real_B) * self.w_identity
                losses["idt_B"] = self.identity(idt_B, real_A) * self.w_identity
            if self.w_matching > 0:
                losses["fm_A"] = self._feature_matching(self.D_A, self.augment_A, real_B, fake_B) * self.w_matching
                losses["fm_B"] = self._feature_matching(self.D_B, self.augment_B, real_A, fake_A) * self.w_matching
            loss_G = sum(losses.values())
        optim.zero_grad("G")
        optim.backward(loss_G)
        optim.step("G")

        set_requires_grad([self.D_A, self.D_B], True)
        with optim.autocast():
            # pools are queried in the reference's order (B's fakes first), so a pool fills as it does there
            pooled_B = self.fake_B_pool.query(fake_B.detach())
            pooled_A = self.fake_A_pool.query(fake_A.detach())
            # reals first, as the reference; the halved loss (with any penalty) is logged per discriminator
            losses["D_A"], _ = discriminator_loss(self.D_A, self.gan, real_B, pooled_B, batched=self.batch_calls,
                                                  augment=self.augment_A)
            losses["D_B"], _ = discriminator_loss(self.D_B, self.gan, real_A, pooled_A, batched=self.batch_calls,
                                                  augment=self.augment_B)
        optim.zero_grad("D")
        optim.backward(losses["D_A"] + losses["D_B"])
        optim.step("D")
        return {name: value.detach() for name, value in losses.items()}

    def _feature_matching(self, net: Discriminator, augment: Augment, real: Tensor, fake: Tensor) -> Tensor:
        """Distance between the batch-mean features of fakes and of reals (as D sees them), summed over layers."""
        real, fake = augmented(augment, real), augmented(augment, fake)
        with torch.no_grad():
            targets = [f.mean(0) for f in net.features(real)]
        return sum(self.matching(f.mean(0), t) for f, t in zip(net.features(fake), targets))

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """real, translated and reconstructed images in both directions."""
        real_A, real_B = batch["A"], batch["B"]
        fake_B, fake_A = self.G_A(real_A), self.G_B(real_B)
        return {"real_A": real_A, "fake_B": fake_B, "rec_A": self.G_B(fake_B),
                "real_B": real_B, "fake_A": fake_A, "rec_B": self.G_A(fake_A)}


@hookimpl
def i2i_methods() -> list[type]:
    """The stock method."""
    return [CycleMethod]
