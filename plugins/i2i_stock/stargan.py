"""StarGAN (Choi et al., CVPR 2018): one generator for every pair of N domains, conditioned on the target domain.

The generator takes an image and the target domain's one-hot code (appended as constant input channels, so any
generator with an `in_channels` option serves); one discriminator scores real/fake patches and, with an auxiliary
head (`discriminator.classes`), classifies the domain. The discriminator learns the domains of real images; the
generator learns to fool it, to be classified as the target, and to come back to the input when translated back to
its own domain (the reconstruction loss). The paper's objective: WGAN-GP, lambda_cls = 1, lambda_rec = 10, the
generator updated every 5 discriminator updates, Adam(1e-4, 0.5, 0.999).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2i.api import (AdversarialLoss, ConditionedGenerator, Discriminator, Generator, I2IError, LossSlot, Method,
                    Option, PartFactory, ReconstructionLoss, Stepper, hookimpl, one_hot, with_condition)
from i2i_stock.steps import set_requires_grad


class StarGAN(Method):
    """Translation between N domains with one target-conditioned generator and a domain-classifying discriminator."""

    name = "stargan"
    options = (
        Option("lambda_cls", float, 1.0, "weight of the domain classification losses (the paper's 1)", min=0.0),
        Option("critic_steps", int, 5, "discriminator updates per generator update (the paper's n_critic = 5)",
               min=1),
    )
    losses = {
        "adversarial": LossSlot(AdversarialLoss, "wgangp", 1.0, "GAN loss of G and D (the paper's WGAN-GP)"),
        "reconstruction": LossSlot(ReconstructionLoss, "l1", 10.0,
                                   "||G(G(x, target), own domain) - x|| (lambda_rec = 10 in the paper)"),
    }
    parts = ("generator", "discriminator")
    groups = ("G", "D")

    def __init__(self, *, lambda_cls: float = 1.0, critic_steps: int = 5) -> None:
        self.lambda_cls, self.critic_steps = lambda_cls, critic_steps
        self.updates = 0  # discriminator updates so far: the generator updates on every critic_steps-th

    def build(self, parts: PartFactory) -> None:
        """G (image + domain code in, image out) and D (with a domain-classifying head) for the data's domains."""
        self.domain_names = parts.domains()
        count = len(self.domain_names)
        if count < 2:
            raise I2IError(f"method stargan needs data of at least 2 domains; the data has {count}")
        channels = {parts.channels(domain) for domain in self.domain_names}
        if len(channels) > 1:
            raise I2IError("method stargan translates with one generator, so every domain needs images of the same"
                           f" channels, but the data's have {', '.join(map(str, sorted(channels)))}")
        c = channels.pop()
        self.G: Generator = parts.generator(in_channels=c + count, out_channels=c)
        self.D: Discriminator = parts.discriminator(in_channels=c, classes=count)
        if not hasattr(self.D, "scores_and_logits"):
            raise I2IError(f"method stargan needs a discriminator with a domain classifier (scores_and_logits), which"
                           f" discriminator {getattr(self.D, 'name', '?')!r} has not: use discriminator.name ="
                           " \"patchgan\"")
        self.gan, self.w_gan = parts.loss("adversarial")
        self.rec, self.w_rec = parts.loss("reconstruction")
        self.targets = {f"to_{domain}": ConditionedGenerator(self.G, index, count)
                        for index, domain in enumerate(self.domain_names)}

    def domains(self) -> tuple[str, ...]:
        """The data's domains."""
        return tuple(self.domain_names)

    def networks(self) -> dict[str, nn.Module]:
        """G and D."""
        return {"G": self.G, "D": self.D}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """One optimizer each."""
        return {"G": list(self.G.parameters()), "D": list(self.D.parameters())}

    def generator_for(self, direction: str) -> Generator:
        """G bound to the target domain of `direction` ("to_<domain>")."""
        return self.targets[direction]

    def generators(self) -> dict[str, Generator]:
        """G bound to each target domain, "to_<domain>"."""
        return dict(self.targets)

    def stateful(self) -> dict[str, Any]:
        """The count of discriminator updates (which step updates G), so a resumed run alternates as before."""
        return {**super().stateful(), "method.stargan": _Counter(self)}

    def prepare_capture(self, device: torch.device) -> None:
        """A captured step cannot skip the generator's update on some steps."""
        if self.critic_steps > 1:
            raise I2IError("method stargan: critic_steps > 1 updates the generator on some steps only, which a"
                           " captured step cannot replay: set method.critic_steps = 1 or run.capture = false")

    def _images(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The batch's images and their domain indices: N-domain items ("image", "domain"), or two-domain ones
        ("A", "B": domains 0 and 1)."""
        if "image" in batch:
            return batch["image"], torch.as_tensor(batch["domain"], device=batch["image"].device).long()
        a, b = batch["A"], batch["B"]
        labels = torch.cat([torch.zeros(a.shape[0]), torch.ones(b.shape[0])]).long().to(a.device)
        return torch.cat([a, b], 0), labels

    def step(self, batch: dict[str, Any], optim: Stepper) -> dict[str, Tensor]:
        """D update (adversarial + classification of reals, with the loss's penalty); every critic_steps-th step
        also the G update (adversarial + classification as the target + reconstruction)."""
        real, own = self._images(batch)
        count = len(self.domain_names)
        # a target other than the image's own domain, uniformly among the others
        target = (own + torch.randint(1, count, own.shape, device=own.device)) % count
        code_own, code_target = one_hot(own, count, real), one_hot(target, count, real)

        with optim.autocast():
            fake = self.G(with_condition(real, code_target))
            scores_real, logits_real = self.D.scores_and_logits(real)
            scores_fake, _ = self.D.scores_and_logits(fake.detach())
            losses = {"D_real": self.gan(scores_real, True) * self.w_gan,
                      "D_fake": self.gan(scores_fake, False) * self.w_gan,
                      "D_cls": F.cross_entropy(logits_real.float(), own) * self.lambda_cls}
            penalty = self.gan.penalty(self.D, real, fake.detach())
            if penalty is not None:
                losses["D_penalty"] = penalty
            loss_D = sum(losses.values())
        optim.zero_grad("D")
        optim.backward(loss_D)
        optim.step("D")
        self.updates += 1
        if self.updates % self.critic_steps:
            return {name: value.detach() for name, value in losses.items()}

        set_requires_grad([self.D], False)
        with optim.autocast():
            fake = self.G(with_condition(real, code_target))
            scores, logits = self.D.scores_and_logits(fake)
            back = self.G(with_condition(fake, code_own))
            terms = {"G_adv": self.gan.generator_loss(scores) * self.w_gan,
                     "G_cls": F.cross_entropy(logits.float(), target) * self.lambda_cls,
                     "G_rec": self.rec(back, real) * self.w_rec}
            loss_G = sum(terms.values())
        optim.zero_grad("G")
        optim.backward(loss_G)
        optim.step("G")
        set_requires_grad([self.D], True)
        losses.update(terms)
        return {name: value.detach() for name, value in losses.items()}

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Each image of the batch and its translation to every domain (a source x target grid)."""
        real, _ = self._images(batch)
        return {"real": real, **{name: generator(real) for name, generator in self.targets.items()}}


class _Counter:
    """The method's count of discriminator updates as a checkpoint piece."""

    def __init__(self, method: StarGAN) -> None:
        self.method = method

    def state_dict(self) -> dict[str, int]:
        """The count."""
        return {"updates": self.method.updates}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the count."""
        self.method.updates = int(state["updates"])


@hookimpl
def i2i_methods() -> list[type]:
    """StarGAN."""
    return [StarGAN]
