"""Where the tiles of an image go, which pixels each one owns, and how their outputs are blended.

Tiles lie on a grid of the image padded to the generator's size multiple: along each axis they start every
`tile - overlap` pixels and the last one is moved back to end at the image's end, so every tile has the same size
(tiles batch together) and every start is a multiple of the generator's multiple (so a tile's pixels map to whole
pixels at every downsampled level). Each pixel is *owned* by one tile: the boundary between two neighbours is the
middle of their overlap. Blend weights are separable (a row weight times a column weight), so the sum of the
weights that normalizes the blend is separable too and never has to be stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from i2i.errors import I2IError
from i2i.tiles import BLENDS, NORM_STATS

__all__ = ["BLENDS", "NORM_STATS", "Axis", "Tiling", "check_tile_side", "plan_axis", "seam_borders"]

_GAUSSIAN_SIGMA = 0.125  # of the tile side, as MONAI's sliding_window_inference (sigma_scale)
_DEFAULT_OVERLAP = 64  # px: about the effective receptive field's reach of the paper's ResNet (see benchmarks)
_FLOOR = 1e-6  # weights never reach 0 where a tile is the only one covering a pixel


@dataclass(frozen=True)
class Tiling:
    """How images too large to translate whole are translated (translate's --tile, --overlap, --blend,
    --norm-stats, --memory-budget, --stats-side)."""

    tile: int | None = None  # tile side in pixels; None: tile only images over the memory budget; 0: never tile
    overlap: int | None = None  # None: 64 px, at most a quarter of the tile
    blend: str = "cosine"
    norm_stats: str = "sample"
    memory_budget: float | None = None  # GiB; None: half of the memory free when translation starts
    stats_side: int = 1024  # side of the picture --norm-stats sample or thumbnail takes statistics from
    batch_size: int = 1  # tiles translated together

    def check(self) -> "Tiling":
        """This tiling, or an I2IError naming the flag that is out of range."""
        if self.tile is not None and self.tile < 0:
            raise I2IError(f"--tile {self.tile} must be a side in pixels (0: never tile)")
        if self.overlap is not None and self.overlap < 0:
            raise I2IError(f"--overlap {self.overlap} must be at least 0")
        if self.tile and self.overlap is not None and self.overlap >= self.tile:
            raise I2IError(f"--overlap {self.overlap} must be smaller than --tile {self.tile} (tiles would not"
                           " advance): use an overlap of at most a quarter of the tile, e.g."
                           f" --overlap {max(0, self.tile // 8)}")
        if self.blend not in BLENDS:
            raise I2IError(f"--blend {self.blend!r} is not one of {', '.join(BLENDS)}")
        if self.norm_stats not in NORM_STATS:
            raise I2IError(f"--norm-stats {self.norm_stats!r} is not one of {', '.join(NORM_STATS)}")
        if self.memory_budget is not None and not self.memory_budget > 0:
            raise I2IError(f"--memory-budget {self.memory_budget:g} must be more than 0 (GiB)")
        if self.stats_side < 1:
            raise I2IError(f"--stats-side {self.stats_side} must be at least 1 pixel")
        if self.batch_size < 1:
            raise I2IError(f"--batch-size {self.batch_size} must be at least 1")
        return self

    def overlap_for(self, tile: int) -> int:
        """The overlap of `tile` px tiles: --overlap, else 64 px or a quarter of the tile if that is less."""
        return self.overlap if self.overlap is not None else min(_DEFAULT_OVERLAP, tile // 4)


def check_tile_side(tile: int, multiple: int, least: int, overlap: int | None) -> None:
    """I2IError naming --tile (or --overlap) when the generator cannot take `tile` x `tile` tiles."""
    fitting = max(least, multiple)
    fitting = multiple * math.ceil(fitting / multiple)
    if tile < fitting:
        raise I2IError(f"--tile {tile} is smaller than the smallest tile this generator takes ({fitting} px: sides"
                       f" multiples of {multiple}, at least {least}): use --tile {max(fitting, 512)}")
    if tile % multiple:
        lower, upper = tile - tile % multiple, tile + multiple - tile % multiple
        choices = f"{upper} or {lower}" if lower >= fitting else f"{upper}"
        raise I2IError(f"--tile {tile} is not a multiple of {multiple}, the generator's size multiple: use --tile"
                       f" {choices}")
    if overlap is not None and overlap >= tile:
        raise I2IError(f"--overlap {overlap} must be smaller than --tile {tile}")


@dataclass(frozen=True)
class Axis:
    """The tiles along one axis of a padded image: their starts, their common side and the [lo, hi) each owns."""

    length: int  # the padded image's side
    size: int  # every tile's side along this axis
    starts: tuple[int, ...]
    owned: tuple[tuple[int, int], ...]

    def weights(self, index: int, blend: str) -> Tensor:
        """The 1-D blend weight of tile `index` over its `size` pixels."""
        start = self.starts[index]
        positions = torch.arange(self.size, dtype=torch.float64)
        if blend == "average":
            weight = torch.ones(self.size, dtype=torch.float64)
        elif blend == "crop":
            lo, hi = self.owned[index]
            weight = ((positions >= lo - start) & (positions < hi - start)).double()
        elif blend == "gaussian":
            sigma = max(_GAUSSIAN_SIGMA * self.size, 1.0)
            weight = torch.exp(-0.5 * ((positions - (self.size - 1) / 2) / sigma) ** 2)
        else:  # cosine: flat, with a half-cosine ramp over the overlap with each neighbour
            weight = torch.ones(self.size, dtype=torch.float64)
            if index > 0:
                ramp = self.starts[index - 1] + self.size - start
                weight[:ramp] = 0.5 - 0.5 * torch.cos(math.pi * (positions[:ramp] + 0.5) / ramp)
            if index + 1 < len(self.starts):
                ramp = start + self.size - self.starts[index + 1]
                weight[self.size - ramp:] = torch.minimum(
                    weight[self.size - ramp:], 0.5 + 0.5 * torch.cos(math.pi * (positions[:ramp] + 0.5) / ramp))
        if blend != "crop":
            weight = weight.clamp(min=_FLOOR)
        return weight.float()

    def coverage(self, blend: str) -> Tensor:
        """The sum of every tile's weight at each pixel of the axis (what blended values are divided by)."""
        total = torch.zeros(self.length, dtype=torch.float32)
        for index, start in enumerate(self.starts):
            total[start:start + self.size] += self.weights(index, blend)
        return total


def plan_axis(length: int, tile: int, overlap: int, multiple: int, least: int = 1) -> Axis:
    """The tiles along an axis of `length` padded pixels (a multiple of `multiple`, as `tile`): as few as cover it
    with at least `overlap` px between neighbours, evenly spread, each as small as that allows (at most `tile`), so
    no pixel is translated more often than the overlap needs; and at least `least` px (the generator's minimum)."""
    if tile >= length:
        return Axis(length, length, (0,), ((0, length),))
    overlap = min(overlap, tile - multiple)
    count = math.ceil((length - overlap) / (tile - overlap))
    size = multiple * math.ceil(max(least, (length + (count - 1) * overlap) / count) / multiple)
    size = min(tile, size)
    starts = [(length - size) * i // (count - 1) // multiple * multiple for i in range(count)]
    owned, lo = [], 0
    for before, after in zip(starts, starts[1:]):
        # the middle of the overlap, on the multiple so it is a whole pixel at every downsampled level
        border = (after + before + size) // 2 // multiple * multiple
        owned.append((lo, border))
        lo = border
    owned.append((lo, length))
    return Axis(length, size, tuple(starts), tuple(owned))


def seam_borders(axis: Axis) -> list[int]:
    """The pixel positions where one tile's owned pixels end and the next one's begin (where seams would show)."""
    return [hi for _, hi in axis.owned[:-1]]
