"""The tiled translation loop: an image read band by band, its tiles translated in batches on the generator's
device, their outputs blended on the CPU and handed on as bands of finished rows, top to bottom.

Memory stays bounded by a band (a tile's height across the image's width), never the image: one band of input, one
of accumulated output. With `--norm-stats image` every instance norm first gets the whole image's statistics,
measured layer by layer over the pixels each tile owns (one pass over the tiles per norm layer, each stopping at
that layer); with `sample` they come from one pass over a picture of full-resolution crops spread over the image,
with `thumbnail` from one pass over a downscaled copy of it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from i2i.contract.parts import Generator, declared_sizes, fitting_side
from i2i.tiles.budget import (GIB, budget_bytes, budget_words, fitting_tile, footprint,
                              release_freed_memory)
from i2i.tiles.norms import NormControl, StopForward, norm_modules
from i2i.tiles.plan import Tiling, check_tile_side, plan_axis
from i2i.tiles.reduce import BoxReducer

__all__ = ["TileInput", "TiledTranslation", "choose_tile", "downscaled", "tensor_input", "translate_tensor"]

Progress = Callable[[int, int], None]
_REDUCE_VALUES = 1 << 24  # values of input read at a time while downscaling (64 MB of float32)
#: side of the crops --norm-stats sample takes: of 64, 128 and 256 px, 128 came closest to the whole image's
#: statistics (benchmarks/README.md, "Large images")
SAMPLE_CROP = 128


@dataclass
class TileInput:
    """An image read window by window in network values: read(top, left, height, width) -> (C, h, w) in [-1, 1]."""

    height: int
    width: int
    channels: int
    read: Callable[[int, int, int, int], Tensor]


def tensor_input(image: Tensor) -> TileInput:
    """A (C, H, W) image already in memory as a TileInput."""
    return TileInput(image.shape[1], image.shape[2], image.shape[0],
                     lambda top, left, h, w: image[:, top:top + h, left:left + w])


def choose_tile(generator: Generator, tiling: Tiling, height: int, width: int, channels: int,
                device: torch.device, images: int = 1) -> tuple[int | None, str]:
    """The tile side an image of `height` x `width` is translated with (None: whole; `images` of them at once),
    and, when the memory budget decided it, a sentence saying so and how to change it."""
    if tiling.tile == 0:
        return None, ""
    multiple, least = declared_sizes(generator)
    padded_h, padded_w = _padded(height, multiple), _padded(width, multiple)
    if tiling.tile:
        check_tile_side(tiling.tile, multiple, least, tiling.overlap)
        return (tiling.tile if max(padded_h, padded_w) > tiling.tile else None), ""
    cost = footprint(generator, channels)
    need = cost.per_pixel * padded_h * padded_w * images
    budget = budget_bytes(device, tiling.memory_budget)
    if need <= budget:
        return None, ""
    tile = fitting_tile(generator, cost, budget, tiling.batch_size, padded_w)
    return tile, (f"{width}x{height} needs about {need / GIB:.3g} GiB to translate whole, more than the memory"
                  f" budget of {budget / GIB:.3g} GiB ({budget_words(tiling.memory_budget, device)}): translating"
                  f" it in {tile} px tiles (--tile N sets the side, --memory-budget GB the budget, --tile 0 never"
                  " tiles)")


def _padded(side: int, multiple: int) -> int:
    return side + -side % multiple


class TiledTranslation:
    """One image translated in `tile` x `tile` tiles: `bands()` yields (top, (C, h, W) output rows)."""

    def __init__(self, generator: Generator, source: TileInput, tiling: Tiling, tile: int,
                 on_progress: Progress | None = None) -> None:
        self.generator, self.source, self.tiling = generator, source, tiling
        self.on_progress = on_progress
        multiple, least = declared_sizes(generator)
        self.multiple = multiple
        self.padded = (_padded(source.height, multiple), _padded(source.width, multiple))
        pads = (self.padded[0] - source.height, self.padded[1] - source.width)
        # As pad_to_multiple for a whole image: mirrored edges, or repeated ones when the image is thinner than the pad
        self.pad_mode = "reflect" if pads[0] < source.height and pads[1] < source.width else "replicate"
        overlap = tiling.overlap_for(tile)
        self.rows = plan_axis(self.padded[0], tile, overlap, multiple, least)
        self.columns = plan_axis(self.padded[1], tile, overlap, multiple, least)
        modules = norm_modules(generator, tiling.norm_stats)
        self.control = NormControl(modules) if modules and tiling.norm_stats != "tile" else None
        self.passes = 1 + (len(modules) if self.control is not None and tiling.norm_stats == "image" else 0)
        self.total = self.passes * len(self.rows.starts) * len(self.columns.starts)
        self.done = 0
        param = next(generator.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        self.started = time.perf_counter()

    @property
    def tiles(self) -> int:
        """How many tiles cover the image."""
        return len(self.rows.starts) * len(self.columns.starts)

    # -- the passes ----------------------------------------------------------------------------------------------

    def bands(self) -> Iterator[tuple[int, Tensor]]:
        """The translated image as (top, (C, h, W) float32 CPU rows in [-1, 1]), top to bottom."""
        self._progress(0)
        if self.control is not None:
            if self.tiling.norm_stats == "image":
                self._measure_image_statistics()
            elif self.tiling.norm_stats == "sample":
                self._record_statistics(sampled(self.source, self.tiling.stats_side))
            else:
                self._record_statistics(downscaled(self.source, self.tiling.stats_side))
        blend = self.tiling.blend
        row_cover, column_cover = self.rows.coverage(blend), self.columns.coverage(blend)
        column_weights = [self.columns.weights(j, blend) for j in range(len(self.columns.starts))]
        height, width = self.source.height, self.source.width
        accumulated: Tensor | None = None
        top = 0  # the image row accumulated[:, 0] holds
        for i, y in enumerate(self.rows.starts):
            row_weight = self.rows.weights(i, blend)
            for x, output in self._translate_row(y):
                if accumulated is None:
                    accumulated = torch.zeros(output.shape[0], 0, self.padded[1])
                needed = y + self.rows.size - top
                if needed > accumulated.shape[1]:
                    grow = torch.zeros(accumulated.shape[0], needed - accumulated.shape[1], self.padded[1])
                    accumulated = torch.cat([accumulated, grow], 1)
                weight = column_weights[self.columns.starts.index(x)]
                target = accumulated[:, y - top:y - top + self.rows.size, x:x + self.columns.size]
                target.add_(output * (row_weight[:, None] * weight[None, :]))
            assert accumulated is not None
            # Rows above the next tile row get no more contributions: normalize and hand them on.
            final = self.rows.starts[i + 1] if i + 1 < len(self.rows.starts) else self.padded[0]
            finished = accumulated[:, :final - top]
            accumulated = accumulated[:, final - top:].clone()
            # Normalized in place and handed on as a view: the band exists once, and once the consumer lets go of
            # it (before it asks for the next) it is freed before the next band is accumulated.
            finished.div_(row_cover[top:final, None] * column_cover[None, :])
            if top < height:
                rows = finished[:, :min(final, height) - top, :width]
                del finished
                yield top, rows
                del rows
            else:
                del finished
            top = final

    def _translate_row(self, y: int) -> Iterator[tuple[int, Tensor]]:
        """(x, output (C, h, w)) of each tile of the row starting at `y`, left to right, on the CPU in float32."""
        for starts, batch, _ in self._batches(y):
            with self._norms(), torch.inference_mode():
                result = self.generator(batch.to(self.device, self.dtype)).float().cpu()
            release_freed_memory()
            self._progress(len(batch))
            yield from zip(starts, result)

    def _measure_image_statistics(self) -> None:
        """Fix each norm's statistics in turn: the whole image's, summed over every tile's owned pixels."""
        assert self.control is not None
        self.control.input_size = (self.rows.size, self.columns.size)
        for index in range(len(self.control.modules)):
            self.control.start_measuring(index)
            for y in self.rows.starts:
                for _, batch, regions in self._batches(y):
                    self.control.regions = regions
                    try:
                        with self.control.active(), torch.inference_mode():
                            self.generator(batch.to(self.device, self.dtype))
                    except StopForward:
                        pass
                    release_freed_memory()
                    self._progress(len(batch))
            self.control.finish_measuring()

    def _record_statistics(self, picture: Tensor) -> None:
        """Fix each norm's statistics to those it takes of `picture` (C, h, w), a stand-in for the whole image."""
        assert self.control is not None
        multiple = self.multiple
        h, w = picture.shape[1:]
        side = fitting_side([self.generator])
        ph, pw = max(-h % multiple, side - h), max(-w % multiple, side - w)
        ph, pw = ph + -(h + ph) % multiple, pw + -(w + pw) % multiple
        mode = "reflect" if ph < h and pw < w else "replicate"
        batch = F.pad(picture[None], (0, pw, 0, ph), mode=mode) if ph or pw else picture[None]
        self.control.recording = self.control.stop_when_recorded = True
        try:
            with self.control.active(), torch.inference_mode():
                self.generator(batch.to(self.device, self.dtype))
        except StopForward:
            pass
        finally:
            self.control.recording = self.control.stop_when_recorded = False

    # -- pieces --------------------------------------------------------------------------------------------------

    def _norms(self):  # noqa: ANN202 (a context manager)
        from contextlib import nullcontext

        return self.control.active() if self.control is not None else nullcontext()

    def _window(self, y: int, left: int, right: int) -> Tensor:
        """Rows [y, y + tile) and columns [left, right) of the padded image, (C, h, w) float32: read from the image,
        and mirrored (or repeated) past its bottom and right edges as the whole-image path pads."""
        height, width = self.source.height, self.source.width
        bottom = min(y + self.rows.size, height)
        window = self.source.read(y, left, bottom - y, min(right, width) - left).float()
        pad_h, pad_w = y + self.rows.size - bottom, max(0, right - width)
        if pad_h or pad_w:
            window = F.pad(window[None], (0, pad_w, 0, pad_h), mode=self.pad_mode)[0]
        return window

    def _batches(self, y: int) -> Iterator[tuple[list[int], Tensor, list[tuple[int, int, int, int]]]]:
        """The tiles of the row at `y` in batches of --batch-size: their x, the (N, C, h, w) batch read as one
        window, and each tile's owned pixels in tile coordinates."""
        size = self.columns.size
        top, bottom = self.rows.owned[self.rows.starts.index(y)]
        columns = list(zip(self.columns.starts, self.columns.owned))
        step = self.tiling.batch_size
        for start in range(0, len(columns), step):
            chunk = columns[start:start + step]
            left = chunk[0][0]
            window = self._window(y, left, chunk[-1][0] + size)
            batch = torch.stack([window[:, :, x - left:x - left + size] for x, _ in chunk])
            yield ([x for x, _ in chunk], batch,
                   [(top - y, bottom - y, lo - x, hi - x) for x, (lo, hi) in chunk])

    def _progress(self, tiles: int) -> None:
        self.done += tiles
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


def sampled(source: TileInput, side: int, crop: int = SAMPLE_CROP) -> Tensor:
    """A `side` x `side` picture (at most) of `crop` px crops of the image at full resolution, spread evenly over it
    and put side by side; along an axis no longer than `side`, the whole axis (a small image comes whole).

    Instance-norm statistics of a downscaled copy (`downscaled`) are those of a different picture: every layer sees
    coarser detail than the tiles will. Crops keep the scale; measured, they come far closer (benchmarks/README.md).
    """
    crop = min(crop, side)

    def spans(length: int) -> list[tuple[int, int]]:
        if length <= side:
            return [(0, length)]
        count = max(1, side // crop)
        return [(round((length - crop) * (i + 0.5) / count), crop) for i in range(count)]

    rows = [torch.cat([source.read(top, left, height, width).float() for left, width in spans(source.width)], 2)
            for top, height in spans(source.height)]
    return torch.cat(rows, 1)


def downscaled(source: TileInput, side: int) -> Tensor:
    """The image box-filtered down so its longer side is at most `side` (C, h, w), read a band at a time."""
    factor = math.ceil(max(source.height, source.width) / side)
    if factor <= 1:
        return source.read(0, 0, source.height, source.width).float()
    reducer = BoxReducer(factor)
    chunk_rows = factor * max(1, _REDUCE_VALUES // (factor * source.width * max(1, source.channels)))
    for top in range(0, source.height, chunk_rows):
        reducer.add(source.read(top, 0, min(chunk_rows, source.height - top), source.width))
    return reducer.result()


def translate_tensor(generator: Generator, image: Tensor, tiling: Tiling, tile: int,
                     on_progress: Progress | None = None) -> Tensor:
    """A (C, H, W) image in memory translated in tiles: the (C, H, W) output, on the CPU."""
    translation = TiledTranslation(generator, tensor_input(image.detach().cpu()), tiling, tile, on_progress)
    return torch.cat([rows for _, rows in translation.bands()], 1)
