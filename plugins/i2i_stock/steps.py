"""Helpers the stock methods share for computing a training step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from i2i.api import AdversarialLoss, Augment, Stepper


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    """Turn gradients of `nets` on or off (off while the generator updates, as the reference does)."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def call(net: nn.Module, *batches: Tensor, batched: bool) -> list[Tensor]:
    """net(b) for each batch; one call on the concatenation when `batched` (exact for per-sample norms)."""
    if not batched or len(batches) == 1:
        return [net(b) for b in batches]
    out = net(torch.cat(batches, 0))
    return list(out.split([b.shape[0] for b in batches], 0))


def augmented(augment: Augment | None, images: Tensor) -> Tensor:
    """`images` as the discriminator should see them: through `augment` when one is active, else as they are."""
    return augment(images) if augment is not None and augment.active else images


def update_discriminator(net: nn.Module, gan: AdversarialLoss, real: Tensor, fake: Tensor, optim: Stepper,
                         group: str = "D", batched: bool = False, augment: Augment | None = None
                         ) -> dict[str, Tensor]:
    """One update of `net` on real vs (detached) fake inputs (through `augment`, when active): GAN loss halved, plus
    the loss's penalty if any.

    Returns the terms for logging: D_fake, D_real and, when the loss has one, D_penalty.
    """
    fake = fake.detach()
    set_requires_grad([net], True)
    with optim.autocast():
        fake, real = augmented(augment, fake), augmented(augment, real)
        pred_fake, pred_real = call(net, fake, real, batched=batched)
        if augment is not None and augment.active:
            augment.observe(pred_real, gan.threshold)
        losses = {"D_fake": gan(pred_fake, False),
                  "D_real": gan(pred_real, True)}
        loss = (losses["D_fake"] + losses["D_real"]) * 0.5
        penalty = gan.penalty(net, real, fake)
        if penalty is not None:
            losses["D_penalty"] = penalty
            loss = loss + penalty
    optim.zero_grad(group)
    optim.backward(loss)
    optim.step(group)
    return losses
