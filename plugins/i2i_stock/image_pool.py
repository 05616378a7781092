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
        # capture-ready form (run.capture): the pool as one (size, C, H, W) tensor and its fill count, on the device
        self.on_device = False
        self.stored: Tensor | None = None
        self.count: Tensor | None = None

    def prepare_capture(self, device: torch.device) -> None:
        """Keep the pool, its count and its random choices on the device, without a branch on a drawn value."""
        self.on_device = True

    def query(self, images: Tensor) -> Tensor:
        """Return a batch of the same shape mixing the new fakes with stored ones."""
        if self.size == 0:
            return images
        if self.on_device:
            return self._query_on_device(images.detach())
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

    def _query_on_device(self, images: Tensor) -> Tensor:
        """The same rule as tensor operations on the images' device: every image draws its coin and slot (so the
        number of draws is fixed), and the pool is written in place (a captured step replays those writes)."""
        if self.stored is None:
            self._allocate(images)
        out = []
        for image in images:
            full = self.count >= self.size
            swap = full & (torch.rand((), device=images.device) > 0.5)
            index = torch.randint(0, self.size, (), device=images.device)
            slot = torch.where(full, index, self.count.clamp(max=self.size - 1)).reshape(1)
            old = self.stored.index_select(0, slot)
            out.append(torch.where(swap, old, image.unsqueeze(0)))
            # until full: store the image in the next free slot; then replace the drawn one only on a swap
            self.stored.index_copy_(0, slot, torch.where(swap | ~full, image.unsqueeze(0), old))
            self.count.add_((~full).long())
        return torch.cat(out, 0)

    def _allocate(self, images: Tensor) -> None:
        """The pool tensor for images like `images`, holding what a checkpoint restored into `images`."""
        self.stored = images.new_zeros((self.size, *images.shape[1:]))
        self.count = torch.zeros((), dtype=torch.long, device=images.device)
        if self.images:
            restored = torch.cat(self.images, 0)
            self.stored[: len(restored)].copy_(restored)
            self.count.fill_(len(restored))
            self.images = []

    def state_dict(self) -> dict[str, Tensor]:
        """The stored images as one (count, C, H, W) tensor."""
        if self.stored is not None:
            count = int(self.count.item())  # at checkpoints only, outside the step
            return {"images": self.stored[:count].cpu()} if count else {}
        if not self.images:
            return {}
        return {"images": torch.cat(self.images, 0).cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the stored images."""
        stored = state.get("images")
        self.images = [] if stored is None else [img.unsqueeze(0) for img in stored][: self.size]
        self.stored = self.count = None


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
