"""What a dataset's pixels are: channels per domain and how their values map to [-1, 1] (data options channels,
channels_b, values, low, high), and the reading and transforms of images that are not 8-bit RGB.

3-channel data with `values = "auto"` keeps the 8-bit RGB pipeline of `i2i.data.images` (read_image, PIL resizing), so
every RGB recipe trains exactly as before. Anything else reads each file with `read_array` in its own depth and
channels, maps it with the run's `ValueMap`, and resizes the float tensor (bicubic, antialiased).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from i2i.errors import I2IError
from i2i.contract.options import Option
from i2i.data.values import VALUE_MODES, DomainRange, ValueMap, percentiles

__all__ = ["PERCENTILE_SAMPLE", "PIXEL_OPTIONS", "Pixels", "transform_tensors"]

PIXEL_OPTIONS = (
    Option("channels", int, 3, "channels of the images (of domain A when channels_b is set): 1 grayscale, 3 RGB,"
           " N bands", min=1),
    Option("channels_b", int, 0, "channels of domain B's images when they differ from A's (0: as channels)", min=0),
    Option("values", str, "auto", "how pixel values map to [-1, 1]: depth (the file's bit depth), window"
           " (low..high), percentile (the low-th..high-th percentile of the training images); auto: the 8-bit RGB"
           " pipeline for 3-channel data, else depth", choices=VALUE_MODES),
    Option("low", float, 0.0, "values = window: the value that maps to -1; percentile: its percentile (0-100)"),
    Option("high", float, 0.0, "values = window: the value that maps to +1; percentile: its percentile (0-100)"),
)
#: training images per domain the percentiles of values = "percentile" are computed from (evenly spaced)
PERCENTILE_SAMPLE = 64


@dataclass
class Pixels:
    """A dataset's pixel options, checked; the value map once `fit` has seen the training files."""

    channels: int = 3
    channels_b: int = 0
    values: str = "auto"
    low: float = 0.0
    high: float = 0.0
    value_map: ValueMap = field(default_factory=ValueMap)

    def __post_init__(self) -> None:
        if self.values == "window" and not self.high > self.low:
            raise I2IError(f"data.values = \"window\" needs data.low < data.high (got low = {self.low:g}, high ="
                           f" {self.high:g}): e.g. --set data.low=-1000 --set data.high=1000")
        if self.values == "percentile" and not 0 <= self.low < self.high <= 100:
            raise I2IError(f"data.values = \"percentile\" needs 0 <= data.low < data.high <= 100 (got low ="
                           f" {self.low:g}, high = {self.high:g}): e.g. --set data.low=0.5 --set data.high=99.5")
        mode = self.mode
        window = DomainRange(self.low, self.high) if mode == "window" else DomainRange()
        self.value_map = ValueMap(mode, {"A": window, "B": window})

    @property
    def mode(self) -> str:
        """The value mode in effect: "rgb8" (the 8-bit RGB pipeline), "depth", "window" or "percentile"."""
        if self.values == "auto":
            return "rgb8" if self.channels == 3 and self.channels_b in (0, 3) else "depth"
        return self.values

    @property
    def rgb8(self) -> bool:
        """Whether images go through the 8-bit RGB pipeline (read_image and PIL resizing), as before this existed."""
        return self.mode == "rgb8"

    def domain_channels(self) -> dict[str, int]:
        """{"A": channels, "B": channels} of the two domains."""
        return {"A": self.channels, "B": self.channels_b or self.channels}

    def fit(self, files: dict[str, list[Path]], read: Callable[[Path, str], np.ndarray]) -> None:
        """Compute the percentiles of values = "percentile" from up to PERCENTILE_SAMPLE files per domain, each
        read as `read(path, domain)` gives it."""
        if self.mode != "percentile":
            return
        ranges = {}
        for domain, paths in files.items():
            step = max(1, len(paths) // PERCENTILE_SAMPLE)
            sample = [read(p, domain) for p in paths[::step][:PERCENTILE_SAMPLE]]
            ranges[domain] = percentiles(sample, self.low, self.high)
        self.value_map = ValueMap("percentile", ranges)

    def to_network(self, array: np.ndarray, domain: str, path: Path | str) -> Tensor:
        """`array` (H, W, C) of domain `domain`, read from `path`, as a (C, H, W) tensor in [-1, 1]; an image
        with another channel count than the data's is an I2IError naming the file."""
        expected = self.domain_channels()[domain]
        if array.shape[2] != expected:
            key = "data.channels" if domain == "A" or not self.channels_b else "data.channels_b"
            raise I2IError(f"{path} has {array.shape[2]} channel{'s' * (array.shape[2] != 1)} but {key} ="
                           f" {expected} (domain {domain}): fix the file, or set {key} = {array.shape[2]}")
        return self.value_map.to_network(array, domain)


def transform_tensors(tensors: list[Tensor], load_size: int, crop_size: int, augment: bool,
                      flip: bool = True) -> list[Tensor]:
    """Resize (C, H, W) tensors in [-1, 1] to load_size (bicubic, antialiased), crop (random if `augment`, else
    centre) and maybe flip, all alike: the float counterpart of `i2i.data.images.transform_images`."""
    if augment:
        # the same draws, in the same order, as transform_images: torch's global RNG, seeded per worker
        top = int(torch.randint(0, load_size - crop_size + 1, ()))
        left = int(torch.randint(0, load_size - crop_size + 1, ()))
        flipped = flip and bool(torch.rand(()) < 0.5)
    else:
        top = left = int(round((load_size - crop_size) / 2))  # as torchvision's center_crop
        flipped = False
    out = []
    for tensor in tensors:
        resized = F.interpolate(tensor[None].float(), size=(load_size, load_size), mode="bicubic",
                                align_corners=False, antialias=True)[0].clamp_(-1, 1)
        cropped = resized[:, top:top + crop_size, left:left + crop_size]
        out.append((cropped.flip(-1) if flipped else cropped).contiguous())
    return out
