"""Reading image files, listing image folders and the training transforms: the core's one image reader.

Every part of i2i that reads an image file (datasets, `i2i translate`, `i2i evaluate`) goes through
`read_image`, so bad inputs (a truncated file, a directory, a named pipe, a 16-bit PNG, EXIF rotation) are
handled the same everywhere and fail with one line naming the file. Augmentation randomness comes from torch's
global RNG, so seeding torch (and the DataLoader's per-worker seeding) makes runs repeatable.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from i2i.errors import I2IError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "image_opens",
    "list_images",
    "read_image",
    "transform_image",
    "transform_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

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
        return Image.fromarray(_deep_to_uint8(np.asarray(image), mode)).convert("RGB")
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


def _sentence(text: str) -> str:
    """A library message on one line, starting lower-case unless it starts with an acronym."""
    text = " ".join(text.split()).rstrip(".")  # a sentence's period would clash with what callers append
    # PIL words its messages both ways ("Truncated File Read", "image file is truncated"); keep acronyms.
    return text[0].lower() + text[1:] if text[1:2].islower() else text


# ---------------------------------------------------------------------------------------------------------
# Listing


def list_images(folder: Path | str) -> list[Path]:
    """Image files under `folder`, recursively and sorted; hidden files and folders are skipped."""
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
                     if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)
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


class ImageFiles:
    """A list of image files read by index, where a file that fails to decode is replaced by the next one.

    `check(image)` may name a reason why a decoded image is unusable too (e.g. too narrow for a pair).
    """

    def __init__(self, files: list[Path], folder: Path,
                 check: Callable[[Image.Image], str | None] | None = None) -> None:
        self.files, self.folder, self.check = list(files), folder, check
        # Indices that failed to decode, so each bad file is read and reported once per process.
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> tuple[Path, Image.Image]:
        """Image `index`, or the next one that decodes (the same one whatever was tried before)."""
        for step in range(len(self.files)):
            position = (index + step) % len(self.files)
            if position in self._bad:
                continue
            path = self.files[position]
            try:
                image = read_image(path)
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
