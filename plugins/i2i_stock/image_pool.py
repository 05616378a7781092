"""The history of generated images that the discriminator is trained on (Shrivastava et al. 2017)."""

from __future__ import annotations

import torch
from torch import Tensor

from i2i.api import Buffer, Option, hookimpl


class ImagePool(Buffer):
    """Pool of past fakes: until full, stores and returns each fake; then swaps it for a stored one at p=0.5."""

    name = "image_pool"
    options = (Option("size", int, 50, "how many past fakes to keep (0 returns the new fakes unchanged)", min=0),)

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.images: list[Tensor] = []

    def query(self, images: Tensor) -> Tensor:
        """Return a batch of the same shape mixing the new fakes with stored ones."""
        if self.size == 0:
            return images
        out = []
        # torch's RNG (not python's) so seeding and checkpointed RNG state reproduce the draws exactly
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif torch.rand(()).item() > 0.5:
                index = int(torch.randint(0, self.size, ()).item())
                out.append(self.images[index].to(image.device, copy=True))
                self.images[index] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Tensor]:
        """The stored images as one (count, C, H, W) tensor."""
        if not self.images:
            return {}
        return {"images": torch.cat(self.images, 0).cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the stored images."""
        stored = state.get("images")
        self.images = [] if stored is None else [img.unsqueeze(0) for img in stored][: self.size]


class NoBuffer(Buffer):
    """No history: the discriminator sees the newest fakes only (as DualGAN and DiscoGAN)."""

    name = "none"

    def query(self, images: Tensor) -> Tensor:
        """Return `images` unchanged."""
        return images


@hookimpl
def i2i_buffers() -> list[type]:
    """The stock buffers."""
    return [ImagePool, NoBuffer]
