"""Helpers the stock methods share for computing a training step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from i2i.api import AdversarialLoss, Augment, Option, Stepper

#: the option of the methods that batch the calls of a network sharing weights (see `call`)
BATCH_CALLS = Option("batch_calls", bool, True,
                     "run calls that share weights as one batch when the parts allow it (same math, faster)")


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    """Turn gradients of `nets` on or off (off while the generator updates, as the reference does)."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def batchable(net: nn.Module, allowed: bool) -> bool:
    """Whether calls of `net` may run as one batch: `allowed` (a method's batch_calls) and `net` treats each sample
    on its own (`batch_independent`: instance norm or none, not batch norm)."""
    return allowed and getattr(net, "batch_independent", False)


def call(net: nn.Module, *batches: Tensor, batched: bool) -> list[Tensor]:
    """net(b) for each batch; one call on the concatenation when `batched` and `net` allows it (`batchable`), which
    is exact for per-sample norms."""
    if not batchable(net, batched) or len(batches) == 1:
        return [net(b) for b in batches]
    out = net(torch.cat(batches, 0))
    return list(out.split([b.shape[0] for b in batches], 0))


def augmented(augment: Augment | None, images: Tensor) -> Tensor:
    """`images` as the discriminator should see them: through `augment` when one is active, else as they are."""
    return augment(images) if augment is not None and augment.active else images


def discriminator_loss(net: nn.Module, gan: AdversarialLoss, real: Tensor, fake: Tensor, *, batched: bool,
                       augment: Augment | None = None, real_first: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """D's loss on real vs fake images (each through `augment`, independent draws): the GAN loss halved, plus the
    loss's penalty (at what D saw, so R1 is measured on augmented reals); and its terms for logging: D_real,
    D_fake and, when the loss has one, D_penalty.

    `real_first` is the order of the augment draws, the batched call's rows and the terms: the reference's cycle
    step takes reals first, pix2pix's fakes first. The order changes the random draws and the float sums, so each
    method keeps its own, and a seed keeps giving the same weights.
    """
    order = ("D_real", "D_fake") if real_first else ("D_fake", "D_real")
    images = {"D_real": real, "D_fake": fake}
    seen = {name: augmented(augment, images[name]) for name in order}
    scores = dict(zip(order, call(net, *(seen[name] for name in order), batched=batched)))
    if augment is not None and augment.active:
        augment.observe(scores["D_real"], gan.threshold)
    terms = {name: gan(scores[name], name == "D_real") for name in order}
    loss = (terms[order[0]] + terms[order[1]]) * 0.5
    penalty = gan.penalty(net, seen["D_real"], seen["D_fake"])
    if penalty is not None:
        terms["D_penalty"] = penalty
        loss = loss + penalty
    return loss, terms


def update_discriminator(net: nn.Module, gan: AdversarialLoss, real: Tensor, fake: Tensor, optim: Stepper,
                         group: str = "D", batched: bool = False, augment: Augment | None = None
                         ) -> dict[str, Tensor]:
    """One update of `net` on real vs (detached) fake inputs, fakes first (pix2pix's order): `discriminator_loss`
    through optimizer `group`. Returns the loss's terms for logging."""
    set_requires_grad([net], True)
    with optim.autocast():
        loss, terms = discriminator_loss(net, gan, real, fake.detach(), batched=batched, augment=augment,
                                         real_first=False)
    optim.zero_grad(group)
    optim.backward(loss)
    optim.step(group)
    return terms
