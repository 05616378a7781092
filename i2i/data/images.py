"""Reading and writing image files, listing image folders and the training transforms: the core's image I/O.

Two readers, for two pipelines. `read_image` gives every file as 8-bit PIL RGB, for the RGB pipeline (16-bit
and float pixels scaled to 0..255, grayscale repeated into three channels). `read_array` gives the pixels as an
(H, W, C) numpy array in the file's own depth and channel count (16-bit grayscale MR/CT slices, N-band TIFFs,
.npy arrays), and `write_array` writes such an array back without losing either. Every part of i2i that reads an
image file (datasets, `i2i translate`, `i2i evaluate`) goes through one of the two, so bad inputs (a truncated
file, a directory, a named pipe, an unsupported dtype, EXIF rotation) are handled the same everywhere and fail
with one line naming the file. Augmentation randomness comes from torch's global RNG, so seeding torch (and the
DataLoader's per-worker seeding) makes runs repeatable.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import png  # pypng: PIL reduces 16-bit RGB/RGBA/LA PNGs to 8 bits, pypng reads and writes them whole
import tifffile
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from i2i.errors import I2IError

__all__ = [
    "ARRAY_EXTENSIONS",
    "ARRAY_FORMATS",
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "image_opens",
    "image_size",
    "list_images",
    "read_array",
    "read_image",
    "transform_image",
    "transform_images",
    "write_array",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: what `read_array` reads: the image files and numpy's .npy arrays
ARRAY_EXTENSIONS = IMAGE_EXTENSIONS + (".npy",)
#: the `write_array` format for each file extension
ARRAY_FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy", ".jpg": "jpeg", ".jpeg": "jpeg",
                 ".bmp": "bmp", ".webp": "webp", ".ppm": "ppm", ".pgm": "ppm"}

# ---------------------------------------------------------------------------------------------------------
# Reading


def read_image(path: Path | str) -> Image.Image:
    """Decode the image file at `path` fully and return it as RGB, EXIF rotation applied; else raise I2IError.

    What PIL only warns about (a damaged EXIF block, a very large image) is warned again naming the file.
    """
    try:
        with _open_file(path) as file, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(file) as image:
                image.load()
                image = _exif_upright(image)
                image = _to_rgb(image)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        raise I2IError(f"cannot read image {path}: {_reason(exc, path)}") from exc
    for message in dict.fromkeys(_sentence(str(w.message)) for w in caught):
        warnings.warn(f"{path}: {message}", stacklevel=2)
    return image


class NotAFileError(OSError):
    """A path that names something other than a regular file, such as a named pipe or a device."""


def _open_file(path: Path | str) -> BinaryIO:
    """Open a regular file for reading; anything else is refused without blocking (opening a named pipe would
    wait for a writer forever)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            kind = ("a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
            raise NotAFileError(f"it is {kind}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _exif_upright(image: Image.Image) -> Image.Image:
    # A damaged EXIF block should not cost an otherwise good image: keep it as stored.
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: transparency over white, high bit depths scaled rather than clipped."""
    mode = image.mode
    if mode == "RGB" and not image.has_transparency_data:
        return image
    if mode.startswith("I") or mode == "F":
        pixels = np.asarray(image)
        _check_finite(pixels)
        return Image.fromarray(_deep_to_uint8(pixels, mode)).convert("RGB")
    if image.has_transparency_data:
        # Covers alpha bands (RGBA, LA, PA, premultiplied) and tRNS/palette transparency, which convert applies.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _deep_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Map 16/32-bit integer or float pixels to 0..255 (PIL's own convert clips everything above 255)."""
    values = array.astype(np.float64)
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0  # float images are conventionally in [0, 1]
    elif mode == "F" and low >= 0.0 and high <= 255.0:
        scaled = values
    elif mode != "F" and low >= 0 and high <= 65535:
        # 16-bit data (also what PIL gives as mode I for 16-bit PGM): 65535 -> 255, 0x8080 -> 128.
        scaled = values / 257.0
    else:
        # Signed or wider-than-16-bit ranges have no fixed white: stretch what is there.
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _reason(exc: BaseException, path: Path | str) -> str:
    """A short lower-case reason for a failed read, without repeating the path."""
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file (or a broken link)"
    if isinstance(exc, NotAFileError):
        return str(exc)
    if isinstance(exc, Image.DecompressionBombError):
        # PNG and JPEG are decoded whole; a TIFF is read a window at a time, so any size works
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = f" ({_megapixels(int(pixels.group(1)))} megapixels)" if pixels else ""
        return (f"the image{count} is over PIL's decompression bomb limit of"
                f" {_megapixels(2 * Image.MAX_IMAGE_PIXELS)} megapixels for files decoded whole: to translate it,"
                " save it as a tiled TIFF (e.g. `vips tiffsave IN OUT.tif --tile --bigtiff` or `gdal_translate -co"
                " TILED=YES IN OUT.tif`), which i2i reads window by window")
    if isinstance(exc, UnidentifiedImageError):
        try:
            if os.path.getsize(path) == 0:
                return "the file is empty (0 bytes)"
        except OSError:
            pass
        return "not an image file, or a format PIL cannot read"
    if isinstance(exc, OSError) and exc.strerror:  # errno errors: str() would repeat the path
        return _sentence(exc.strerror)
    return _sentence(str(exc)) or type(exc).__name__


def _megapixels(pixels: int) -> str:
    """A pixel count in megapixels for messages: 179, 0.0036."""
    return f"{pixels / 1e6:.0f}" if pixels >= 1e6 else f"{pixels / 1e6:.2g}"


def _sentence(text: str) -> str:
    """A library message on one line, starting lower-case unless it starts with an acronym."""
    text = " ".join(text.split()).rstrip(".")  # a sentence's period would clash with what callers append
    # PIL words its messages both ways ("Truncated File Read", "image file is truncated"); keep acronyms.
    return text[0].lower() + text[1:] if text[1:2].islower() else text


# ---------------------------------------------------------------------------------------------------------
# Reading arrays: the file's own depth and channels

# The integer dtypes read_array returns; float16 and float64 come as float32, the one float dtype downstream.
_INTEGER_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.int32))
_ACCEPTED = "uint8, uint16, int16, int32, float16, float32 or float64"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# TIFF photometrics whose samples are the pixel values; palette, YCbCr, CMYK and Lab go through PIL, into RGB.
_TIFF_DIRECT = (tifffile.PHOTOMETRIC.MINISWHITE, tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)


def read_array(path: Path | str) -> np.ndarray:
    """Decode the image or .npy file at `path` as an (H, W, C) array in the file's own dtype; else raise I2IError.

    Grayscale gives C = 1, RGB C = 3, a TIFF of N bands or N pages C = N (every axis but Y and X becomes C).
    The dtype is uint8, uint16, int16, int32 or float32 (float16 and float64 files come as float32). A .npy file
    holds (H, W) or (H, W, C), channels last: a (C, H, W) array would read as C rows. As in `read_image`,
    transparency is flattened onto white, palettes become RGB and EXIF (or TIFF) orientation is applied; what
    PIL warns about is warned again naming the file.
    """
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    try:
        with _open_file(path) as file, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if os.fstat(file.fileno()).st_size == 0:
                raise ValueError("the file is empty (0 bytes)")  # said the same way for every format
            if suffix == ".npy":
                array = _npy_array(file)
            elif suffix in (".tif", ".tiff"):
                array = _tiff_array(file, os.path.basename(path))
            else:
                array = _image_array(file)
            array = np.ascontiguousarray(array, dtype=_pixel_dtype(array.dtype))
            _check_finite(array)
    except Exception as exc:  # numpy, tifffile, pypng and PIL each raise their own types for bad files
        raise I2IError(f"cannot read image {path}: {_reason(exc, path)}") from exc
    for message in dict.fromkeys(_sentence(str(w.message)) for w in caught):
        warnings.warn(f"{path}: {message}", stacklevel=2)
    return array


def _check_finite(array: np.ndarray) -> None:
    """ValueError saying how many values are NaN or infinite, if any (float pixels only: integers always are)."""
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return
    nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    counts = " and ".join(text for count, text in ((nan, f"{nan} NaN"), (inf, f"{inf} infinite")) if count)
    # a NaN reaching the networks makes every loss NaN from that step on: refused here, naming the file
    raise ValueError(f"it holds {counts} value{'s' * (nan + inf != 1)} (of {array.size}): pixels must be finite;"
                     " replace them (e.g. numpy.nan_to_num) or remove the file")


def _pixel_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype read_array returns for pixels stored as `dtype` (in native byte order); else ValueError."""
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return np.dtype(np.float32)
    if dtype.kind in "ui" and dtype.newbyteorder("=") in _INTEGER_DTYPES:
        return dtype.newbyteorder("=")
    name = "structured" if dtype.fields else dtype.name
    raise ValueError(f"{name} pixels are not supported: the dtype must be {_ACCEPTED}")


def _npy_array(file: BinaryIO) -> np.ndarray:
    """A .npy array as (H, W, C). The header is checked first, so an object array is refused without unpickling
    anything and a truncated file is named as such."""
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(file)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(file)
    else:  # 3.0 only differs for structured dtypes with non-latin-1 field names, which are refused anyway
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (1.0 or 2.0)")
    _pixel_dtype(dtype)
    if len(shape) not in (2, 3) or 0 in shape:
        raise ValueError(f"a {dtype.name} array of shape {shape} is not an image: .npy images are (H, W) or"
                         " (H, W, C), channels last")
    needed = math.prod(shape) * dtype.itemsize
    if os.fstat(file.fileno()).st_size - file.tell() < needed:
        raise ValueError(f"the file is truncated (its {dtype.name} array of shape {shape} needs {needed} bytes of"
                         " data)")
    file.seek(0)
    array = np.load(file, allow_pickle=False)
    return array.reshape(shape[0], shape[1], -1)


def _tiff_array(file: BinaryIO, name: str) -> np.ndarray:
    """A TIFF's first series as (H, W, C): samples, planes and pages all become channels."""
    # name: tifffile takes a file's name from the object, and a file opened from a descriptor has none
    with tifffile.TiffFile(file, name=name) as tiff:
        if not tiff.series:
            raise ValueError("the TIFF holds no image")
        series = tiff.series[0]
        page = series.keyframe
        data = None
        if page.photometric in _TIFF_DIRECT:
            try:
                data = series.asarray()
            except Exception as exc:
                # tifffile decodes only deflate, LZMA and PackBits itself; LZW and JPEG need imagecodecs. PIL
                # decodes those too, but keeps only one page of at most 4 samples, and colour at 8 bits.
                if "imagecodecs" not in str(exc):
                    raise
                if series.axes not in ("YX", "YXS") or page.samplesperpixel not in (1, 3) or (
                        page.samplesperpixel == 3 and page.bitspersample > 8):
                    compression = getattr(page.compression, "name", page.compression)
                    raise ValueError(f"its {compression} compression needs the imagecodecs package (pip install"
                                     " imagecodecs), or save it uncompressed or with deflate compression") from exc
        axes, photometric, bits = series.axes, page.photometric, page.bitspersample
        orientation = page.tags.get(274)  # TIFF's own orientation tag, the one EXIF copies
        orientation = int(orientation.value) if orientation is not None else 1
        stored = series.dtype
    if data is None:
        file.seek(0)
        array = _pil_array(file)  # its EXIF orientation is the TIFF tag, applied there
        # PIL widens signed 16-bit to 32-bit: back to the file's own dtype
        if array.dtype.kind in "iu" and stored.kind in "iu" and stored.itemsize < array.dtype.itemsize:
            array = array.astype(stored.newbyteorder("="))
        return array
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"the TIFF's first image has axes {axes}, not Y and X")
    data = np.moveaxis(data, (axes.index("Y"), axes.index("X")), (0, 1))
    data = data.reshape(data.shape[0], data.shape[1], -1)
    return _orient(_stored_to_pixels(data, photometric, bits), orientation)


def _stored_to_pixels(data: np.ndarray, photometric: int, bits: int) -> np.ndarray:
    """A TIFF's stored samples as read_array gives them (whole, or a window of them)."""
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        # 0 is white in these (fax-style scans): inverted so that larger is brighter, as PIL shows them
        if data.dtype == np.bool_:
            data = ~data
        elif data.dtype.kind == "u":
            data = data.dtype.type((1 << bits) - 1) - data
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255  # bilevel: black and white as 0 and 255, like PIL's mode "1"
    return data


def _image_array(file: BinaryIO) -> np.ndarray:
    """PNG and every other PIL format as (H, W, C); 16-bit colour PNGs through pypng."""
    head = file.read(26)
    file.seek(0)
    # The PNG header's bit depth (byte 24) and colour type (byte 25: 2 RGB, 4 gray + alpha, 6 RGBA). PIL reduces
    # these three to 8 bits; 16-bit gray (type 0) it reads whole, and faster than pypng's pure-python filters.
    deep_colour = head[24:26] in (b"\x10\x02", b"\x10\x04", b"\x10\x06")
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and deep_colour:
        return _png16_array(file)
    return _pil_array(file)


def _png16_array(file: BinaryIO) -> np.ndarray:
    """A 16-bit RGB, RGBA or gray + alpha PNG as uint16 (H, W, C), transparency over white, EXIF applied."""
    try:
        # read, not asDirect: asDirect rescales the values to the depth of an sBIT chunk
        width, height, rows, info = png.Reader(file=file).read()
        planes = info["planes"]
        pixels = [np.frombuffer(row, dtype=np.uint16) for row in rows]  # native-order array("H") rows
        if len(pixels) != height or any(row.size != width * planes for row in pixels):
            raise png.FormatError("image data ends early")
    except (png.Error, zlib.error) as exc:
        message = str(exc).split(": ", 1)[-1] if isinstance(exc, png.Error) else str(exc)  # drop "FormatError: "
        raise ValueError(f"damaged or truncated PNG ({_sentence(message)})") from exc
    array = np.stack(pixels).reshape(height, width, planes)
    if info["alpha"]:
        array = _over_white(array, 65535)
    elif "transparent" in info:  # a tRNS chunk: one colour is fully transparent
        array[(array == np.asarray(info["transparent"], dtype=np.uint16)).all(axis=2)] = 65535
    file.seek(0)
    return _orient(array, _png_orientation(file))


def _png_orientation(file: BinaryIO) -> int:
    """A PNG's EXIF orientation (its eXIf chunk, read by PIL); 1 when it has none or it is damaged."""
    try:
        with Image.open(file) as image:
            return int(image.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block should not cost an otherwise good image, as in _exif_upright
        return 1


def _pil_array(file: BinaryIO) -> np.ndarray:
    """An image PIL decodes as (H, W, C), EXIF rotation applied: gray stays one channel, 16-bit gray and float
    keep their depth, transparency goes over white, anything else becomes 8-bit RGB."""
    with Image.open(file) as image:
        image.load()
        mode, transparency = image.mode, image.info.get("transparency")
        # 16-bit gray PNG and PGM can open as 32-bit mode "I"; the format is gone once rotated.
        sixteen = mode in ("I;16", "I;16L", "I;16B", "I;16N") or (mode == "I" and image.format in ("PNG", "PPM"))
        image = _exif_upright(image)
        if sixteen:
            array = np.array(image).astype(np.uint16)  # PIL caps PGM values at the file's maxval, at most 65535
            if isinstance(transparency, int):
                array[array == transparency] = 65535
            return array[..., None]
        if mode == "F" or mode.startswith("I"):
            return np.array(image)[..., None]  # float32, int32 or signed 16-bit gray
        gray = mode in ("1", "L", "LA", "La")
        if image.has_transparency_data:
            return _over_white(np.array(image.convert("LA" if gray else "RGBA")), 255)
        array = np.array(image.convert("L" if gray else "RGB"))
    return array.reshape(array.shape[0], array.shape[1], -1)


def _over_white(array: np.ndarray, white: int) -> np.ndarray:
    """(H, W, C + 1) integer pixels with alpha last, composited over white: the (H, W, C) colour channels."""
    colour, alpha = array[..., :-1].astype(np.int64), array[..., -1:].astype(np.int64)
    return ((colour * alpha + white * (white - alpha) + white // 2) // white).astype(array.dtype)


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) pixels turned upright for an EXIF/TIFF orientation 1-8, as ImageOps.exif_transpose does."""
    if orientation in (5, 6, 7, 8):
        array = array.swapaxes(0, 1)
    flips = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation)
    return np.flip(array, flips) if flips else array


# ---------------------------------------------------------------------------------------------------------
# Writing arrays

# PIL's name and options for the formats that hold 8 bits only: JPEG and WebP as `i2i translate` writes them.
_PIL_FORMATS: dict[str, tuple[str, dict[str, object]]] = {
    "jpeg": ("JPEG", {"quality": 95}),
    "bmp": ("BMP", {}),
    "webp": ("WEBP", {"lossless": True}),
    "ppm": ("PPM", {}),
}
_WRITE_FORMATS = ("png", "tiff", "npy", *_PIL_FORMATS)


def write_array(file: BinaryIO, array: np.ndarray, fmt: str) -> None:
    """Write an (H, W, C) array to the open binary `file` in format `fmt` (see ARRAY_FORMATS) so that read_array
    gives it back; else raise I2IError.

    png: uint8 or uint16, 1 or 3 channels. tiff: any dtype read_array returns, any C (1 gray, 3 RGB, else C
    planar bands). npy: written as (H, W, C). jpeg, bmp, webp, ppm: uint8, 1 or 3 channels (WebP has no gray: one
    channel reads back as three equal ones). An (H, W) array is one channel; float16 and float64 are written as
    float32. Callers wrap `file` in i2i.storage.atomic.atomic_file, so a failed write never leaves half a file.
    """
    if fmt not in _WRITE_FORMATS:
        raise I2IError(f"cannot write format {fmt!r}: the formats are {', '.join(_WRITE_FORMATS)}")
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.size == 0:
        raise I2IError(f"cannot write an array of shape {array.shape}: images are (H, W, C) arrays")
    try:
        dtype = _pixel_dtype(array.dtype)
    except ValueError as exc:
        raise I2IError(f"cannot write the image: {exc}") from exc
    array = np.ascontiguousarray(array, dtype=dtype)
    height, width, channels = array.shape
    held = f"{dtype.name} pixels with {channels} channel{'s' * (channels != 1)}"
    if fmt == "npy":
        np.save(file, array, allow_pickle=False)
    elif fmt == "tiff":
        if channels in (1, 3):
            tifffile.imwrite(file, array[..., 0] if channels == 1 else array,
                             photometric="minisblack" if channels == 1 else "rgb")
        else:  # planar bands with no colour meaning: read_array (and most tools) give them back as C channels
            tifffile.imwrite(file, np.moveaxis(array, 2, 0), photometric="minisblack", planarconfig="separate")
    elif fmt == "png":
        if dtype not in (np.uint8, np.uint16) or channels not in (1, 3):
            raise I2IError(f"PNG holds uint8 or uint16 pixels with 1 or 3 channels, not {held}: write TIFF or"
                           " .npy")
        if dtype == np.uint8:
            Image.fromarray(array[..., 0] if channels == 1 else array).save(file, format="PNG")
        else:  # PIL cannot write 16-bit RGB PNGs; pypng takes big-endian rows as PNG stores them
            rows = array.astype(">u2").reshape(height, width * channels).view(np.uint8)
            png.Writer(width, height, greyscale=channels == 1, bitdepth=16).write_packed(
                file, (row.tobytes() for row in rows))
    else:
        name, options = _PIL_FORMATS[fmt]
        if dtype != np.uint8 or channels not in (1, 3):
            raise I2IError(f"{name} holds uint8 pixels with 1 or 3 channels, not {held}: write PNG (uint8 or"
                           " uint16, 1 or 3 channels), TIFF or .npy")
        Image.fromarray(array[..., 0] if channels == 1 else array).save(file, format=name, **options)


# ---------------------------------------------------------------------------------------------------------
# Listing


def list_images(folder: Path | str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under `folder` (those named with one of `extensions`, lower-case, e.g. ARRAY_EXTENSIONS to
    include .npy), recursively and sorted; hidden files and folders are skipped."""
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()

    def unreadable(error: OSError) -> None:
        warnings.warn(f"cannot list {error.filename}: {(error.strerror or str(error)).lower()}", stacklevel=3)

    # Symlinked folders are followed (datasets are often linked in), but each real folder is walked once, which
    # also stops link loops.
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):
        try:
            stat = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in visited:
            dirnames[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, name) for name in filenames
                     if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions)
    return sorted(found)


# ---------------------------------------------------------------------------------------------------------
# Checking and reading listed files


def image_opens(path: Path) -> bool:
    """Whether PIL recognises the file's header (cheap: nothing is decoded); warns naming the file if not."""
    try:
        with _open_file(path) as file, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a damaged EXIF block: read_image names the file when it reads it
            with Image.open(file):
                return True
    except Exception as exc:
        warnings.warn(f"skipping {path}: {_reason(exc, path)}", stacklevel=3)
        return False


def image_size(path: Path | str) -> tuple[int, int] | None:
    """(width, height) from the file's header, TIFFs of any size included (nothing is decoded); None when
    unreadable."""
    try:
        with _open_file(path) as file, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a damaged EXIF block, named when the image is read
            if Path(path).suffix.lower() in (".tif", ".tiff"):  # PIL refuses TIFFs over its pixel limit
                with tifffile.TiffFile(file, name=Path(path).name) as tiff:
                    shape = tiff.pages.first.shape
                    return (shape[1], shape[0]) if len(shape) >= 2 else None
            with Image.open(file) as image:
                return image.size
    except Exception:
        return None


class ImageFiles:
    """A list of image files read by index, where a file that fails to decode is replaced by the next one.

    `check(image)` may name a reason why a decoded image is unusable too (e.g. too narrow for a pair). `reader`
    decodes a file (None: read_image; read_array for the files' own depth and channels) and raises I2IError.
    """

    def __init__(self, files: list[Path], folder: Path, check: Callable[[Any], str | None] | None = None,
                 reader: Callable[[Path], Any] | None = None) -> None:
        self.files, self.folder, self.check = list(files), folder, check
        self.reader = reader or read_image
        # Indices that failed to decode, so each bad file is read and reported once per process.
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> tuple[Path, Any]:
        """Image `index`, or the next one that decodes (the same one whatever was tried before)."""
        for step in range(len(self.files)):
            position = (index + step) % len(self.files)
            if position in self._bad:
                continue
            path = self.files[position]
            try:
                image = self.reader(path)
                problem = self.check(image) if self.check else None
                if problem is None:
                    return path, image
                raise I2IError(f"cannot use image {path}: {problem}")
            except I2IError as err:
                self._bad.add(position)
                warnings.warn(f"{err}; using the next image of {self.folder} instead", stacklevel=3)
        raise I2IError(f"no image in {self.folder} could be decoded ({len(self.files)} files; see the"
                       " warnings above)")


# ---------------------------------------------------------------------------------------------------------
# Transforms


def transform_image(image: Image.Image, load_size: int, crop_size: int, augment: bool, flip: bool = True) -> Tensor:
    """Resize, crop (random if `augment`, else centre) and maybe flip `image`: a (3, crop, crop) tensor in [-1, 1]."""
    return transform_images([image], load_size, crop_size, augment, flip)[0]


def transform_images(images: list[Image.Image], load_size: int, crop_size: int, augment: bool,
                     flip: bool = True) -> list[Tensor]:
    """`transform_image` applied to several images with the same crop and flip (the halves of a pair)."""
    # imported here: torchvision pulls in torch._dynamo (1.6 s and 170 MB), which translate and the CLI never need
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if crop_size > load_size:
        raise ValueError(f"crop_size {crop_size} is larger than load_size {load_size}")
    if augment:
        # torch's global RNG (not python's random) so torch seeding and DataLoader worker seeding cover it.
        top = int(torch.randint(0, load_size - crop_size + 1, ()))
        left = int(torch.randint(0, load_size - crop_size + 1, ()))
        flipped = flip and bool(torch.rand(()) < 0.5)
    out = []
    for image in images:
        image = F.resize(image, [load_size, load_size], interpolation=InterpolationMode.BICUBIC)
        if augment:
            image = F.crop(image, top, left, crop_size, crop_size)
            if flipped:
                image = F.hflip(image)
        else:
            image = F.center_crop(image, [crop_size, crop_size])
        # pil_to_tensor gives a channels-last view; callers expect an ordinary contiguous (C, H, W) tensor.
        tensor = F.to_dtype(F.pil_to_tensor(image).contiguous(), torch.float32, scale=True)
        out.append(tensor.mul_(2.0).sub_(1.0))
    return out
