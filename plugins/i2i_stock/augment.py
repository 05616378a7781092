"""Differentiable augmentation of what the discriminators score: none, DiffAugment and its adaptive form (ADA).

DiffAugment (Zhao et al., NeurIPS 2020) transforms real and fake images alike with differentiable colour,
translation and cutout transforms, so a discriminator trained on few images overfits less while the generator
still learns through the transforms. ADA (Karras et al., NeurIPS 2020) applies each transform with a
probability p that it raises while the discriminator is too sure of the real images and lowers otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from i2i.api import Augment, I2IError, Option, hookimpl

TRANSFORMS = ("color", "translation", "cutout")


class NoAugment(Augment):
    """No augmentation: the discriminators see the images as they are."""

    name = "none"
    active = False

    def draw(self, images: Tensor) -> None:
        """Nothing to draw (no random numbers are used)."""
        return None

    def apply(self, images: Tensor, params: Any) -> Tensor:
        """The images unchanged."""
        return images


@dataclass
class Params:
    """One draw of transform parameters for a batch of N images; None for a transform the policy leaves out."""

    brightness: Tensor | None = None  # (N,) added
    saturation: Tensor | None = None  # (N,) scales the deviation from the per-pixel channel mean
    contrast: Tensor | None = None  # (N,) scales the deviation from the image mean
    shift: Tensor | None = None  # (N, 2) integer pixels (dy, dx) the content moves by
    keep: Tensor | None = None  # (N, 1, H, W) 1 where the image is kept, 0 inside the cutout square


def _colour_groups(images: Tensor) -> Tensor:
    """Images viewed as (N, G, C', H, W): RGB triples (a stacked input|output pair is two), or one grey channel."""
    n, c, h, w = images.shape
    if c % 3 == 0:
        return images.view(n, c // 3, 3, h, w)
    if c == 1:
        return images.view(n, 1, 1, h, w)
    raise I2IError(f"augment: the color transform needs RGB images (3 channels, or stacks of them) or grey ones,"
                   f" but the discriminator scores {c}-channel images; set augment.policy without color")


def _pair(first: int, second: int, device: torch.device) -> Tensor:
    """The integers (first, second) as a tensor made on `device` (no copy from the host, which a captured step
    cannot hold)."""
    return torch.arange(2, device=device) * (second - first) + first


def translate(images: Tensor, shift: Tensor) -> Tensor:
    """Each image moved by its integer (dy, dx), the uncovered border filled with 0 (mid-grey in [-1, 1])."""
    n, _, h, w = images.shape
    padded = F.pad(images, [1, 1, 1, 1])
    # output (y, x) reads input (y - dy, x - dx); indices that fall outside read the zero border of the padding
    rows = (torch.arange(h, device=images.device)[None, :] - shift[:, :1] + 1).clamp(0, h + 1)  # (N, H)
    cols = (torch.arange(w, device=images.device)[None, :] - shift[:, 1:] + 1).clamp(0, w + 1)  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    picked = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return picked.permute(0, 3, 1, 2)


class DiffAugment(Augment):
    """DiffAugment (Zhao et al. 2020): random colour, translation and cutout on every image D scores."""

    name = "diffaug"
    options = (
        Option("policy", str, "color,translation,cutout", "the transforms, comma-separated: color (brightness,"
               " saturation, contrast), translation (zero-filled shift), cutout (a zeroed square)"),
        Option("translation", float, 0.125, "largest shift, as a share of the image's height and width",
               min=0.0, max=1.0),
        Option("cutout", float, 0.5, "side of the cutout square, as a share of the image's height and width",
               min=0.0, max=1.0),
    )

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """policy names known transforms."""
        _policy(options["policy"])

    def __init__(self, *, policy: str = "color,translation,cutout", translation: float = 0.125,
                 cutout: float = 0.5) -> None:
        self.policy = _policy(policy)
        self.translation_ratio, self.cutout_ratio = translation, cutout

    def probability(self) -> float:
        """The chance that each transform is applied to an image: always, for DiffAugment."""
        return 1.0

    def draw(self, images: Tensor) -> Params:
        """Parameters of the policy's transforms per image; a transform not picked (with `probability`) for an
        image gets identity values."""
        n, _, h, w = images.shape
        device, p = images.device, self.probability()

        def picked() -> Tensor | None:  # per image: 1 if the transform applies, None when all do
            if isinstance(p, float) and p >= 1.0:  # a tensor p (capture-ready ADA) is never branched on
                return None
            return (torch.rand(n, device=device) < p).float()

        def uniform(low: float, high: float, identity: float) -> Tensor:
            value, gate = torch.rand(n, device=device) * (high - low) + low, picked()
            return value if gate is None else identity + (value - identity) * gate

        params = Params()
        if "color" in self.policy:
            params.brightness = uniform(-0.5, 0.5, 0.0)
            params.saturation = uniform(0.0, 2.0, 1.0)
            params.contrast = uniform(0.5, 1.5, 1.0)
        if "translation" in self.policy:
            reach = _pair(int(h * self.translation_ratio + 0.5), int(w * self.translation_ratio + 0.5), device)
            # uniform integers in [-reach, reach] for dy and dx
            shift = (torch.rand(n, 2, device=device) * (2 * reach + 1)).floor().long() - reach
            gate = picked()
            params.shift = shift if gate is None else shift * gate.long()[:, None]
        if "cutout" in self.policy:
            params.keep = self._cutout_mask(n, h, w, device, picked())
        return params

    def _cutout_mask(self, n: int, h: int, w: int, device: torch.device, gate: Tensor | None) -> Tensor:
        """(N, 1, H, W): 0 inside a square of cutout * size centred anywhere in the image (clipped at its
        borders), 1 elsewhere; all 1 for images `gate` leaves out."""
        size_y, size_x = int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)
        centre = (torch.rand(n, 2, device=device) * _pair(h, w, device)).floor().long()
        top, left = centre[:, :1] - size_y // 2, centre[:, 1:] - size_x // 2  # (N, 1) each
        rows, cols = torch.arange(h, device=device)[None, :], torch.arange(w, device=device)[None, :]
        in_rows = (rows >= top) & (rows < top + size_y)  # (N, H)
        in_cols = (cols >= left) & (cols < left + size_x)  # (N, W)
        square = (in_rows[:, :, None] & in_cols[:, None, :]).float()
        if gate is not None:
            square = square * gate[:, None, None]
        return (1.0 - square)[:, None]

    def apply(self, images: Tensor, params: Params) -> Tensor:
        """The drawn transforms, in DiffAugment's order: colour, translation, cutout."""
        if params.brightness is not None:
            groups = _colour_groups(images)
            per_image = (-1, 1, 1, 1, 1)
            dtype = images.dtype
            groups = groups + params.brightness.to(dtype).view(per_image)
            mean = groups.mean(2, keepdim=True)
            groups = (groups - mean) * params.saturation.to(dtype).view(per_image) + mean
            mean = groups.mean((2, 3, 4), keepdim=True)
            groups = (groups - mean) * params.contrast.to(dtype).view(per_image) + mean
            images = groups.reshape(images.shape)
        if params.shift is not None:
            images = translate(images, params.shift)
        if params.keep is not None:
            images = images * params.keep.to(images.dtype)
        return images


class AdaptiveAugment(DiffAugment):
    """ADA (Karras et al. 2020): DiffAugment's transforms, each with a probability p tuned to D's overfitting."""

    name = "ada"
    options = (
        *DiffAugment.options,
        Option("target", float, 0.6, "the wanted r_t = mean(sign(D(real) - threshold)): above it p rises, below it"
               " p falls (ADA's 0.6)", min=-1.0, max=1.0),
        Option("speed", int, 10000, "images over which p can go from 0 to 1 (ADA uses 500k for its long runs; the"
               " default suits runs of thousands of steps)", min=1),
        Option("interval", int, 4, "discriminator updates between adjustments of p", min=1),
        Option("p_init", float, 0.0, "p at the start", min=0.0, max=1.0),
        Option("p_max", float, 1.0, "the largest p (at 1 every transform always applies, as in DiffAugment)",
               min=0.0, max=1.0),
    )

    def __init__(self, *, policy: str = "color,translation,cutout", translation: float = 0.125,
                 cutout: float = 0.5, target: float = 0.6, speed: int = 10000, interval: int = 4,
                 p_init: float = 0.0, p_max: float = 1.0) -> None:
        super().__init__(policy=policy, translation=translation, cutout=cutout)
        self.target, self.speed, self.interval, self.p_max = target, speed, interval, p_max
        self.p = min(p_init, p_max)
        self._reset_interval()

    def _reset_interval(self) -> None:
        # the sum of signs stays on the scores' device, so observing forces no host sync between adjustments
        self.signs: Tensor | float = 0.0
        self.scores, self.images, self.updates = 0, 0, 0

    def prepare_capture(self, device: torch.device) -> None:
        """Keep p and the interval's counts as tensors on the device; p moves by a branch-free update inside the
        step (one step of a captured run replays it), and is read on the host only for logs and checkpoints."""
        if dist.is_available() and dist.is_initialized():
            raise I2IError("augment ada: a captured step (run.capture) runs one process; under torchrun set"
                           " run.capture = false")
        self.p, self.signs, self.scores, self.images, self.updates = (
            torch.tensor(float(value), dtype=torch.float64 if name == "p" else torch.float32, device=device)
            for name, value in (("p", self.p), ("signs", self.signs), ("scores", self.scores),
                                ("images", self.images), ("updates", self.updates)))

    def probability(self) -> float | Tensor:
        """The current p (a tensor on the device once capture-ready)."""
        return self.p

    def observe(self, real_scores: Tensor, threshold: float) -> None:
        """Add up the signs of D's scores on reals; every `interval` updates, step p toward the target r_t."""
        scores = real_scores.detach().float()
        if isinstance(self.p, Tensor):
            self._observe_on_device(scores, threshold)
            return
        self.signs = self.signs + torch.sign(scores - threshold).sum()
        self.scores += scores.numel()
        self.images += scores.shape[0]
        self.updates += 1
        if self.updates >= self.interval:
            self._adjust(scores.device)

    def _adjust(self, device: torch.device) -> None:
        """p += sign(r_t - target) * images seen / speed, clamped to [0, p_max]; over all processes of a run."""
        totals = torch.stack([torch.as_tensor(self.signs, dtype=torch.float32, device=device).reshape(()),
                              torch.tensor(float(self.scores), device=device),
                              torch.tensor(float(self.images), device=device)])
        if dist.is_available() and dist.is_initialized():  # every process moves p alike, by the global batch
            dist.all_reduce(totals)
        signs, scores, images = totals.tolist()
        r_t = signs / max(scores, 1.0)
        direction = (r_t > self.target) - (r_t < self.target)
        self.p = min(self.p_max, max(0.0, self.p + direction * images / self.speed))
        self._reset_interval()

    def _observe_on_device(self, scores: Tensor, threshold: float) -> None:
        """`observe` and `_adjust` as tensor operations: the adjustment is applied where it is due, and kept out
        where it is not, so the step has no branch on a value."""
        self.signs.add_(torch.sign(scores - threshold).sum())
        self.scores.add_(scores.numel())
        self.images.add_(scores.shape[0])
        self.updates.add_(1)
        due = self.updates >= self.interval
        r_t = self.signs / self.scores.clamp(min=1.0)
        moved = (self.p + torch.sign(r_t - self.target).double() * self.images.double() / self.speed)
        self.p.copy_(torch.where(due, moved.clamp(0.0, self.p_max), self.p))
        for count in (self.signs, self.scores, self.images, self.updates):
            count.mul_((~due).float())

    def log_values(self) -> dict[str, float]:
        """p."""
        return {"p": float(self.p)}

    def state_dict(self) -> dict[str, Any]:
        """p and the interval in progress."""
        return {"p": float(self.p), "signs": float(self.signs), "scores": int(self.scores), "images": int(self.images),
                "updates": int(self.updates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore p and the interval in progress (into the device tensors once capture-ready)."""
        values = {"p": float(state["p"]), "signs": float(state["signs"]), "scores": int(state["scores"]),
                  "images": int(state["images"]), "updates": int(state["updates"])}
        for name, value in values.items():
            if isinstance(getattr(self, name), Tensor):
                getattr(self, name).fill_(value)
            else:
                setattr(self, name, value)


def _policy(text: str) -> tuple[str, ...]:
    """The transforms a policy names, checked."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown or not names:
        raise I2IError(f"policy = {text!r}: use a comma-separated subset of {', '.join(TRANSFORMS)}"
                       + (f" ({unknown[0]!r} is none of them)" if unknown else ""))
    return names


@hookimpl
def i2i_augments() -> list[type[Augment]]:
    """The stock augments."""
    return [NoAugment, DiffAugment, AdaptiveAugment]
