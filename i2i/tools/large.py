"""Translating one image in tiles, from a file read window by window (TIFF, GeoTIFF) or an image already decoded,
to an output written band by band: what `i2i translate` does with images over the tile size or memory budget.

The pixel conversions are the ones of the whole-image path: 8-bit RGB (or gray) in [-1, 1] for the RGB pipeline,
the run's value mapping for other data, and back. A GeoTIFF keeps its CRS, geotransform and nodata; its nodata
pixels stay nodata.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from i2i.contract.parts import Generator
from i2i.data.images import ARRAY_FORMATS, write_array
from i2i.data.values import ValueMap
from i2i.data.windows import ArraySink, GeoSink, TiffSink, WindowSink, WindowSource
from i2i.errors import I2IError
from i2i.storage.atomic import atomic_file
from i2i.tiles.budget import footprint
from i2i.tiles.engine import TiledTranslation, TileInput, downscaled
from i2i.tiles.plan import Tiling
from i2i.tiles.reduce import BoxReducer
from i2i.tools.generators import in_channels, to_image, to_uint8

__all__ = ["LargeOutput", "THUMBNAILS_DIR", "THUMBNAIL_SIDE", "needs_thumbnail", "source_input", "translate_large"]

#: longest side of the pictures index.html shows for outputs too large (or in a format) a browser cannot show
THUMBNAIL_SIDE = 512
#: the folder of an --out folder that holds those pictures
THUMBNAILS_DIR = ".thumbnails"
_SHOWN_SIDE = 4096  # outputs with a longer side get a thumbnail in index.html
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass
class LargeOutput:
    """What translating one large image wrote: the output and, when made, thumbnails of input and output."""

    target: Path
    thumbnails: tuple[Path, Path] | None = None


def source_input(source: WindowSource, values: ValueMap | None, generator: Generator) -> TileInput:
    """The network's view of a window source: its pixels mapped to [-1, 1] as the whole-image path maps them;
    an I2IError naming the file when its bands or dtype do not fit the generator."""
    channels = in_channels(generator)
    name = source.path
    if values is not None:
        if source.channels != channels:
            raise I2IError(f"{name} has {source.channels} channel{'s' * (source.channels != 1)} but the generator"
                           f" takes {channels}")
        return TileInput(source.height, source.width, channels,
                         lambda top, left, h, w: values.to_network(source.read(top, left, h, w), "A"))
    # The RGB pipeline: 8-bit RGB or gray, as read_image gives it; 16-bit scaled by 1/257 (65535 -> 255).
    if source.channels not in (1, 3) or source.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise I2IError(f"{name} has {source.channels} band{'s' * (source.channels != 1)} of {source.dtype} and"
                       f" the generator takes 8-bit {'gray' if channels == 1 else 'RGB'} images: convert it to 8 or"
                       " 16-bit RGB or gray (or train with data.values to translate other data)")

    def read(top: int, left: int, h: int, w: int) -> Tensor:
        array = source.read(top, left, h, w)
        if array.dtype == np.uint16:
            array = np.rint(array / 257.0).astype(np.uint8)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()
        if tensor.shape[0] != channels:  # gray file, RGB generator: repeat; RGB file, gray generator: PIL's L
            tensor = (tensor.expand(3, -1, -1) if channels == 3 else
                      (tensor[0:1] * 0.299 + tensor[1:2] * 0.587 + tensor[2:3] * 0.114).round())
        return tensor.div_(127.5).sub_(1.0)

    return TileInput(source.height, source.width, channels, read)


def needs_thumbnail(target: Path, height: int, width: int) -> bool:
    """Whether index.html shows a thumbnail for this output: a TIFF (browsers do not show them) or a huge image."""
    return target.suffix.lower() in _TIFF_SUFFIXES or max(height, width) > _SHOWN_SIDE


def translate_large(generator: Generator, image: TileInput, target: Path, tiling: Tiling, tile: int, *,
                    values: ValueMap | None, dtype: np.dtype | None, source: WindowSource | None = None,
                    thumbnails: Path | None = None,
                    on_progress: Callable[[int, int], None] | None = None) -> LargeOutput:
    """Translate `image` in `tile` px tiles into `target` (format by its suffix), band by band; TIFF targets are
    written as tiled BigTIFF (GeoTIFF when `source` has geo information) without holding the whole output.
    `thumbnails`: where index.html's pictures of input and output go (`<thumbnails>.input.png`, `.output.png`)."""
    translation = TiledTranslation(generator, image, tiling, tile, on_progress)
    out_dtype = np.dtype(np.uint8) if values is None else values.output_dtype("B", dtype or np.uint8)
    geo = source.geo if source is not None else None
    nodata = geo.nodata if geo is not None else None
    if nodata is not None and not _representable(nodata, out_dtype):
        nodata = None
    shrink = math.ceil(max(image.height, image.width) / THUMBNAIL_SIDE)
    make_thumbnails = thumbnails is not None and needs_thumbnail(target, image.height, image.width)
    reducer = BoxReducer(shrink) if make_thumbnails else None

    def bands() -> Iterator[tuple[int, np.ndarray]]:
        for top, rows in translation.bands():
            if reducer is not None:
                reducer.add(rows)
            array = _to_array(rows, values, out_dtype)
            del rows  # freed before the engine accumulates the next band
            if source is not None and source.geo is not None:
                mask = source.nodata_mask(top, 0, array.shape[0], array.shape[1])
                if mask is not None and nodata is not None:
                    array[mask] = np.asarray(nodata).astype(out_dtype)
            yield top, array

    out_channels = footprint(generator, image.channels).out_channels
    suffix = target.suffix.lower()
    sink: WindowSink
    if suffix in _TIFF_SUFFIXES and geo is not None:
        sink = GeoSink(target, image.height, image.width, out_channels, out_dtype, geo, nodata)
    elif suffix in _TIFF_SUFFIXES:
        sink = TiffSink(target, image.height, image.width, out_channels, out_dtype)
    else:
        sink = ArraySink(image.height, image.width, out_channels, out_dtype)
    sink.write(bands())
    if isinstance(sink, ArraySink):
        _write_whole(target, sink.array, values)
    result = LargeOutput(target)
    if reducer is not None and thumbnails is not None:
        result.thumbnails = _write_thumbnails(thumbnails, downscaled(image, THUMBNAIL_SIDE), reducer.result())
    return result


def _representable(value: float, dtype: np.dtype) -> bool:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return True


def _to_array(rows: Tensor, values: ValueMap | None, dtype: np.dtype) -> np.ndarray:
    """(C, h, W) output rows in [-1, 1] as an (h, W, C) array of the output dtype; `rows` may be overwritten (the
    engine hands each band over once), sparing a band-sized copy."""
    if values is not None:
        return values.from_network(rows, "B", dtype)
    return to_uint8(rows, in_place=True)


def _write_whole(target: Path, array: np.ndarray, values: ValueMap | None) -> None:
    """Write a whole output array in its target's format (as translate's whole-image path does)."""
    from i2i.tools.translate import output_format  # the format table is translate's

    suffix = target.suffix.lower()
    if values is None and suffix != ".npy":
        _, pil_format, params = output_format(target)
        with atomic_file(target) as f:
            Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(f, format=pil_format, **params)
        return
    with atomic_file(target) as f:
        write_array(f, array, ARRAY_FORMATS.get(suffix, "png"))


def _write_thumbnails(prefix: Path, source: Tensor, output: Tensor) -> tuple[Path, Path]:
    """Write the input and output thumbnails as 8-bit PNGs named after `prefix`; their paths."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for role, tensor in (("input", source), ("output", output)):
        picture = tensor if tensor.shape[0] in (1, 3) else tensor[:3] if tensor.shape[0] > 3 else tensor[:1]
        path = prefix.with_name(f"{prefix.name}.{role}.png")
        with atomic_file(path) as f:
            to_image(picture).save(f, format="PNG")
        paths.append(path)
    return paths[0], paths[1]
