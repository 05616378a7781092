"""The stock datasets: unpaired image folders, aligned A|B pairs and synthetic shapes.

Registered through the ``i2i_datasets`` hook like any third-party dataset; they read files through the core's
image helpers (`i2i.api.read_image` and friends). All augmentation randomness comes from torch's global RNG, so
seeding torch (and the DataLoader's per-worker seeding) makes runs repeatable.
"""

from __future__ import annotations

import colorsys
import hashlib
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageChops, ImageDraw

from i2i.api import (ARRAY_EXTENSIONS, Dataset, I2IError, IMAGE_EXTENSIONS, ImageFiles, Option, PIXEL_OPTIONS,
                    Pixels, ValueMap, hookimpl, image_opens, list_images, read_array, transform_image,
                    transform_images, transform_tensors)

__all__ = ["AlignedFolders", "SYNTHETIC_STYLES", "Synthetic", "UnpairedFolders", "draw_synthetic", "i2i_datasets"]


def _check_sizes(load_size: int, crop_size: int) -> None:
    if crop_size > load_size:
        raise I2IError(f"data.crop_size = {crop_size} is larger than data.load_size = {load_size}: set"
                       f" data.crop_size <= data.load_size (e.g. --set data.crop_size={load_size})")


def _check_root(root: Path, holding: str) -> None:
    """I2IError naming the fix when data.root does not exist or is not a folder (the one `holding` the data)."""
    if not root.exists():
        raise I2IError(f"data.root {root} does not exist: set data.root to the folder holding {holding}")
    if not root.is_dir():
        raise I2IError(f"data.root {root} is not a folder: set data.root to the folder holding {holding}")


class _PixelFolders(Dataset):
    """What the folder datasets share about their pixels (`self.pixels`, from the data options in PIXEL_OPTIONS):
    the channels and value map they report, and which files they list."""

    pixels: Pixels

    def domain_channels(self) -> dict[str, int]:
        """The channels of domain A's and B's images (data.channels, data.channels_b)."""
        return self.pixels.domain_channels()

    def value_map(self) -> ValueMap | None:
        """How pixel values map to [-1, 1] (None: the 8-bit RGB pipeline)."""
        return None if self.pixels.rgb8 else self.pixels.value_map

    def _extensions(self) -> tuple[str, ...]:
        """The file extensions listed: images for the 8-bit RGB pipeline, .npy arrays too otherwise."""
        return IMAGE_EXTENSIONS if self.pixels.rgb8 else ARRAY_EXTENSIONS

    def has_split(self, split: str) -> bool:
        """Whether every domain's folder of `split` exists and holds images (root/<split>A and root/<split>B, or
        root/<split>/<domain>/), scanned once."""
        if split not in self._files:
            self._files[split] = self._scan(split, required=False)
        return self._files[split] is not None

    def _openable(self, listed: list[Path]) -> list[Path]:
        """The listed files worth reading: those PIL recognises (RGB pipeline; read_array checks the others when
        it reads them)."""
        return [path for path in listed if image_opens(path)] if self.pixels.rgb8 else listed


# ---------------------------------------------------------------------------------------------------------
# Unpaired image folders


class UnpairedFolders(_PixelFolders):
    """Unpaired images from folders trainA/ and trainB/ (and optionally testA/, testB/) under one root."""

    name = "unpaired"
    paired = False
    options = (
        Option("root", str, "", "folder holding trainA/ and trainB/ (and optionally testA/, testB/)"),
        Option("load_size", int, 286, "images are resized to load_size x load_size first", min=1),
        Option("crop_size", int, 256, "then cropped to crop_size x crop_size (random crop in training)", min=1),
        Option("flip", bool, True, "flip training images horizontally at random"),
        *PIXEL_OPTIONS,
    )

    def __init__(self, root: str = "", load_size: int = 286, crop_size: int = 256, flip: bool = True,
                 channels: int = 3, channels_b: int = 0, values: str = "auto", low: float = 0.0,
                 high: float = 0.0) -> None:
        if not root:
            raise I2IError("data.root is not set: set data.root to the folder holding trainA/ and trainB/"
                           " (e.g. --set data.root=path/to/horse2zebra)")
        self.root = Path(root).expanduser()
        self.load_size, self.crop_size, self.flip = load_size, crop_size, flip
        self.pixels = Pixels(channels, channels_b, values, low, high)
        _check_sizes(load_size, crop_size)
        try:
            self._check_layout()
        except PermissionError as err:
            raise I2IError(f"cannot read {err.filename or self.root}: permission denied") from err
        self._files: dict[str, tuple[list[Path], list[Path]] | None] = {}
        self._files["train"] = self._scan("train", required=True)
        train_a, train_b = self._files["train"]
        _fit_pixels(self.pixels, {"A": train_a, "B": train_b})

    def _check_layout(self) -> None:
        """Raise I2IError naming the fix when root, trainA/ or trainB/ is missing."""
        _check_root(self.root, "trainA/ and trainB/")
        for domain in "AB":
            if not (self.root / f"train{domain}").is_dir():
                raise I2IError(self._missing_message(f"train{domain}"))

    def _missing_message(self, sub: str) -> str:
        subs = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        # A root one level too high (data/ instead of data/horse2zebra/) is the usual slip.
        nested = [s for s in subs if (self.root / s / "trainA").is_dir() and (self.root / s / "trainB").is_dir()]
        if len(nested) == 1:
            hint = f"; did you mean data.root={self.root / nested[0]}?"
        elif nested:
            hint = f"; set data.root to one of {', '.join(str(self.root / s) for s in nested[:3])}"
            hint += ", ..." if len(nested) > 3 else ""
        else:
            hint = ""
        shown = ", ".join(s + "/" for s in subs[:8]) + (f" and {len(subs) - 8} more" if len(subs) > 8 else "")
        return (f"{self.root} has no {sub}/ folder (it has: {shown or 'no subfolders'}): unpaired data needs"
                f" trainA/ and trainB/ folders of images{hint}")

    def _scan(self, split: str, required: bool) -> tuple[list[Path], list[Path]] | None:
        """The readable image files of both domains of `split`; None (or I2IError when `required`) if absent."""
        domains = []
        for domain in "AB":
            folder = self.root / f"{split}{domain}"
            if not folder.is_dir():
                return None
            extensions = self._extensions()
            listed = list_images(folder, extensions=extensions)
            if not listed:
                if not required:
                    return None
                raise I2IError(f"{folder} has no images (looked for {', '.join(extensions)}, also in"
                               " subfolders): put the domain's images there or fix data.root")
            readable = self._openable(listed)
            if not readable:
                raise I2IError(f"{folder} has no readable images: all {len(listed)} image files failed to open"
                               " (see the warnings above)")
            domains.append(readable)
        return domains[0], domains[1]

    def load(self, split: str, augment: bool) -> torch.utils.data.Dataset:
        """Items of `split`: image i of A with image i (or, when augmenting, a random image) of B."""
        if not self.has_split(split):
            raise I2IError(f"{self.root} has no {split} split: expected folders {split}A/ and {split}B/ with images")
        files = self._files[split]
        assert files is not None
        return UnpairedItems(files[0], files[1], self.root / f"{split}A", self.root / f"{split}B",
                             self.load_size, self.crop_size, augment, self.flip, self.pixels)


class UnpairedItems(torch.utils.data.Dataset):
    """Dict items {"A", "B", "A_path", "B_path"} over two lists of image files, as the reference's unaligned set."""

    def __init__(self, files_a: list[Path], files_b: list[Path], folder_a: Path, folder_b: Path,
                 load_size: int, crop_size: int, augment: bool, flip: bool, pixels: Pixels | None = None) -> None:
        self.pixels = pixels or Pixels()
        reader = None if self.pixels.rgb8 else read_array
        self.a, self.b = ImageFiles(files_a, folder_a, reader=reader), ImageFiles(files_b, folder_b, reader=reader)
        self.load_size, self.crop_size, self.augment, self.flip = load_size, crop_size, augment, flip

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = _check_index(index, len(self))
        b_index = int(torch.randint(0, len(self.b), ())) if self.augment else index % len(self.b)
        path_a, image_a = self.a.read(index % len(self.a))
        path_b, image_b = self.b.read(b_index)
        if self.pixels.rgb8:
            tensor_a = transform_image(image_a, self.load_size, self.crop_size, self.augment, self.flip)
            tensor_b = transform_image(image_b, self.load_size, self.crop_size, self.augment, self.flip)
        else:
            (tensor_a,) = transform_tensors([self.pixels.to_network(image_a, "A", path_a)], self.load_size,
                                            self.crop_size, self.augment, self.flip)
            (tensor_b,) = transform_tensors([self.pixels.to_network(image_b, "B", path_b)], self.load_size,
                                            self.crop_size, self.augment, self.flip)
        return {"A": tensor_a, "B": tensor_b, "A_path": str(path_a), "B_path": str(path_b)}


def _check_index(index: int, length: int) -> int:
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} items")
    return index


# ---------------------------------------------------------------------------------------------------------
# Aligned pairs stored side by side


class AlignedFolders(_PixelFolders):
    """Paired images stored side by side (A|B) in root/train/ and root/test/ (or val/), as pix2pix's datasets."""

    name = "aligned"
    paired = True
    options = (
        Option("root", str, "", "folder holding train/ (and test/ or val/) of A|B side-by-side images"),
        Option("load_size", int, 286, "each half is resized to load_size x load_size first", min=1),
        Option("crop_size", int, 256, "then both halves get the same crop_size crop (random in training)", min=1),
        Option("flip", bool, True, "flip training pairs horizontally at random (both halves alike)"),
        Option("direction", str, "AtoB", "AtoB: the left half is A; BtoA: the right half is A",
               choices=("AtoB", "BtoA")),
        *PIXEL_OPTIONS,
    )

    def __init__(self, root: str = "", load_size: int = 286, crop_size: int = 256, flip: bool = True,
                 direction: str = "AtoB", channels: int = 3, channels_b: int = 0, values: str = "auto",
                 low: float = 0.0, high: float = 0.0) -> None:
        if not root:
            raise I2IError("data.root is not set: set data.root to the folder holding train/ with A|B images"
                           " (e.g. --set data.root=path/to/maps)")
        self.root = Path(root).expanduser()
        self.load_size, self.crop_size, self.flip, self.direction = load_size, crop_size, flip, direction
        self.pixels = Pixels(channels, channels_b, values, low, high)
        _check_sizes(load_size, crop_size)
        if not self.root.is_dir():
            raise I2IError(f"data.root {self.root} is not a folder: set data.root to the folder holding train/"
                           " with A|B side-by-side images")
        if not (self.root / "train").is_dir():
            subs = sorted(p.name + "/" for p in self.root.iterdir() if p.is_dir())
            hint = " (it looks like unpaired data: use data.name = \"unpaired\")" if "trainA/" in subs else ""
            raise I2IError(f"{self.root} has no train/ folder (it has: {', '.join(subs) or 'no subfolders'}):"
                           f" aligned data needs train/ with A|B side-by-side images{hint}")
        self._files = {"train": self._scan(self.root / "train", required=True)}
        if not self.pixels.rgb8:
            # a pair is A|B side by side in one file: both halves have the file's channels
            both = self.pixels.domain_channels()
            if both["A"] != both["B"]:
                raise I2IError(f"data.channels_b = {both['B']} differs from data.channels = {both['A']}, but"
                               " aligned A|B images hold both halves in one file with one channel count: remove"
                               " data.channels_b")
            _fit_pixels(self.pixels, {"A": self._files["train"], "B": self._files["train"]}, halves=True,
                        swap=self.direction == "BtoA")

    def _folder(self, split: str) -> Path:
        # pix2pix's datasets (maps, facades) hold val/ where others hold test/
        folder = self.root / split
        return self.root / "val" if split == "test" and not folder.is_dir() else folder

    def _scan(self, folder: Path, required: bool) -> list[Path] | None:
        extensions = self._extensions()
        listed = list_images(folder, extensions=extensions) if folder.is_dir() else []
        if not listed:
            if required:
                raise I2IError(f"{folder} has no images (looked for {', '.join(extensions)}): put the A|B"
                               " pairs there or fix data.root")
            return None
        readable = self._openable(listed)
        if not readable and required:
            raise I2IError(f"{folder} has no readable images: all {len(listed)} image files failed to open"
                           " (see the warnings above)")
        return readable or None

    def has_split(self, split: str) -> bool:
        """Whether root/<split> (root/val for "test") holds images."""
        if split not in self._files:
            self._files[split] = self._scan(self._folder(split), required=False)
        return self._files[split] is not None

    def load(self, split: str, augment: bool) -> torch.utils.data.Dataset:
        """Item i: the two halves of image i, cropped and flipped alike."""
        if not self.has_split(split):
            raise I2IError(f"{self.root} has no {split} split: expected {split}/ with A|B images")
        return AlignedItems(self._files[split], self._folder(split), self.load_size, self.crop_size, augment,
                            self.flip, self.direction == "BtoA", self.pixels)


def _pair_problem(image: Image.Image | np.ndarray) -> str | None:
    """Why a side-by-side image cannot hold an A|B pair, or None."""
    width = image.shape[1] if isinstance(image, np.ndarray) else image.width
    if width < 2:
        return f"it is {width} pixel wide, so it cannot hold A and B side by side"
    return None


def _halves(array: np.ndarray, swap: bool) -> tuple[np.ndarray, np.ndarray]:
    """The A and B halves of an (H, W, C) side-by-side pair (B|A when `swap`)."""
    half = array.shape[1] // 2
    left, right = array[:, :half], array[:, half:2 * half]
    return (right, left) if swap else (left, right)


def _fit_pixels(pixels: Pixels, files: dict[str, list[Path]], halves: bool = False, swap: bool = False) -> None:
    """Fit the value map of `pixels` to the training files (percentiles), and check the first file of each domain
    has the data's channel count, so a mismatch is refused before training."""
    if pixels.rgb8:
        return
    def read(path: Path, domain: str) -> np.ndarray:
        array = read_array(path)
        return _halves(array, swap)["AB".index(domain)] if halves else array

    pixels.fit(files, read)
    dtypes = {}
    for domain, paths in files.items():
        first = read(paths[0], domain)
        pixels.to_network(first, domain, paths[0])
        dtypes[domain] = first.dtype
    pixels.value_map = pixels.value_map.with_dtypes(dtypes)


class AlignedItems(torch.utils.data.Dataset):
    """Dict items {"A", "B", "A_path", "B_path"} cut from side-by-side images."""

    def __init__(self, files: list[Path], folder: Path, load_size: int, crop_size: int, augment: bool,
                 flip: bool, swap: bool, pixels: Pixels | None = None) -> None:
        self.pixels = pixels or Pixels()
        self.pairs = ImageFiles(files, folder, check=_pair_problem, reader=None if self.pixels.rgb8 else read_array)
        self.load_size, self.crop_size, self.augment, self.flip = load_size, crop_size, augment, flip
        self.swap = swap

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = _check_index(index, len(self))
        path, image = self.pairs.read(index)
        if not self.pixels.rgb8:
            a, b = _halves(image, self.swap)
            tensor_a, tensor_b = transform_tensors([self.pixels.to_network(a, "A", path),
                                                    self.pixels.to_network(b, "B", path)],
                                                   self.load_size, self.crop_size, self.augment, self.flip)
            return {"A": tensor_a, "B": tensor_b, "A_path": str(path), "B_path": str(path)}
        width, height = image.size
        half = width // 2
        left, right = image.crop((0, 0, half, height)), image.crop((half, 0, width, height))
        a, b = (right, left) if self.swap else (left, right)
        tensor_a, tensor_b = transform_images([a, b], self.load_size, self.crop_size, self.augment, self.flip)
        return {"A": tensor_a, "B": tensor_b, "A_path": str(path), "B_path": str(path)}


# ---------------------------------------------------------------------------------------------------------
# Synthetic shapes


class Synthetic(Dataset):
    """Built-in toy data, no files: flat-coloured shapes (A) to striped shapes (B) on light backgrounds."""

    name = "synthetic"
    paired = False
    options = (
        Option("count", int, 256, "images per domain in each split", min=1),
        Option("load_size", int, 72, "images are drawn at load_size x load_size", min=1),
        Option("crop_size", int, 64, "then cropped to crop_size x crop_size (random crop in training)", min=1),
        Option("flip", bool, True, "flip training images horizontally at random"),
        Option("seed", int, 0, "which images are drawn (independent of the run's seed)"),
        Option("paired", bool, False, "B is the striped twin of A (for paired methods such as pix2pix)"),
        Option("channels", int, 3, "channels of the drawn images: 3 RGB, 1 their luma, N the RGB bands repeated",
               min=1),
    )
    splits = ("train", "test")

    def __init__(self, count: int = 256, load_size: int = 72, crop_size: int = 64, flip: bool = True,
                 seed: int = 0, paired: bool = False, channels: int = 3) -> None:
        _check_sizes(load_size, crop_size)
        self.count, self.load_size, self.crop_size, self.flip, self.seed = count, load_size, crop_size, flip, seed
        self.paired, self.channels = paired, channels

    def domain_channels(self) -> dict[str, int]:
        """data.channels for both domains."""
        return {"A": self.channels, "B": self.channels}

    def value_map(self) -> ValueMap | None:
        """8-bit values (None for RGB, which keeps the RGB pipeline)."""
        return None if self.channels == 3 else ValueMap("depth")

    def has_split(self, split: str) -> bool:
        """True for "train" and "test", which hold different images."""
        return split in self.splits

    def load(self, split: str, augment: bool) -> torch.utils.data.Dataset:
        """`count` items of `split`, drawn on demand."""
        if not self.has_split(split):
            raise I2IError(f"synthetic data has no {split!r} split: it has {', '.join(self.splits)}")
        return SyntheticItems(self.seed, split, self.count, self.load_size, self.crop_size, augment, self.flip,
                              self.paired, self.channels)


class SyntheticItems(torch.utils.data.Dataset):
    """Dict items of synthetic shape images, each drawn from (seed, split, domain, index) alone."""

    def __init__(self, seed: int, split: str, count: int, load_size: int, crop_size: int, augment: bool,
                 flip: bool, paired: bool = False, channels: int = 3) -> None:
        self.seed, self.split, self.count, self.paired = seed, split, count, paired
        self.load_size, self.crop_size, self.augment, self.flip = load_size, crop_size, augment, flip
        self.channels = channels

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = _check_index(index, self.count)
        image_a = draw_synthetic(self.seed, self.split, "A", index, self.load_size)
        if self.paired:
            b_index = index
            image_b = draw_synthetic(self.seed, self.split, "A", index, self.load_size, style="B")
            tensor_a, tensor_b = transform_images([image_a, image_b], self.load_size, self.crop_size, self.augment,
                                                  self.flip)
        else:
            b_index = int(torch.randint(0, self.count, ())) if self.augment else index
            image_b = draw_synthetic(self.seed, self.split, "B", b_index, self.load_size)
            tensor_a = transform_image(image_a, self.load_size, self.crop_size, self.augment, self.flip)
            tensor_b = transform_image(image_b, self.load_size, self.crop_size, self.augment, self.flip)
        if self.channels != 3:
            tensor_a, tensor_b = _bands(tensor_a, self.channels), _bands(tensor_b, self.channels)
        return {
            "A": tensor_a,
            "B": tensor_b,
            "A_path": f"synthetic/{self.split}A/{index:05d}.png",
            "B_path": f"synthetic/{self.split}B/{b_index:05d}.png",
        }


def _bands(rgb: torch.Tensor, channels: int) -> torch.Tensor:
    """A (3, H, W) image as `channels` channels: its luma (ITU-R 601, as PIL's "L") for 1, else the RGB bands
    repeated in turn."""
    if channels == 1:
        return (rgb * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    return rgb[[i % 3 for i in range(channels)]]


#: the styles draw_synthetic draws shapes in, by letter (a style or domain it does not know draws striped)
SYNTHETIC_STYLES = {"A": "flat", "B": "striped", "C": "dotted", "D": "outlined"}


def draw_synthetic(seed: int, split: str, domain: str, index: int, size: int, style: str | None = None) -> Image.Image:
    """Synthetic image `index` of `domain` as a size x size RGB image in a style of SYNTHETIC_STYLES: "A" flat
    shapes, "B" striped, "C" dotted, "D" outlined.

    The shapes come from (seed, split, domain, index) and the fill from `style` (default: the domain), so
    drawing domain "A" in style "B" gives the striped twin of an A image (paired data).
    """
    # A digest rather than hash(): python's str hashing changes per process (PYTHONHASHSEED).
    key = hashlib.blake2b(f"i2i-synthetic/{seed}/{split}/{domain}/{index}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(key, "little"))
    # stripes draw from their own stream so that a striped twin keeps exactly the same shapes and colours
    stripe_rng = random.Random(int.from_bytes(key, "little") ^ 0x5EED)
    background = tuple(rng.randint(210, 250) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 4)):
        colour = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0),
                                                                     rng.uniform(0.45, 0.9)))
        shape = _random_shape(rng, size)
        drawn = style or domain
        if drawn == "A":
            _draw_shape(draw, shape, colour)
            continue
        if drawn == "D":
            _draw_shape(draw, shape, colour, outline=max(1, size // 24))
            continue
        mask = Image.new("L", (size, size), 0)
        _draw_shape(ImageDraw.Draw(mask), shape, 255)
        if drawn == "C":
            # coloured dots on the background: textured like stripes, but with no black
            period = stripe_rng.choice((4, 5)) * max(1, size // 64)
            image.paste(colour, mask=ImageChops.multiply(mask, _dot_mask(size, period, stripe_rng.randrange(period))))
            continue
        half = stripe_rng.choice((2, 3)) * max(1, size // 64)
        stripes = _stripe_mask(size, stripe_rng.choice(("horizontal", "diagonal", "antidiagonal")), half,
                               stripe_rng.randrange(2 * half))
        image.paste((0, 0, 0), mask=mask)
        image.paste(colour, mask=ImageChops.multiply(mask, stripes))
    return image


def _random_shape(rng: random.Random, size: int) -> tuple[str, tuple[float, ...]]:
    """A circle, rectangle or triangle with random size and position, as (kind, geometry)."""
    kind = rng.choice(("circle", "rectangle", "triangle"))
    radius = rng.uniform(0.12, 0.26) * size
    cx, cy = rng.uniform(0.1, 0.9) * size, rng.uniform(0.1, 0.9) * size
    if kind == "circle":
        return kind, (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "rectangle":
        half_w, half_h = radius * rng.uniform(0.6, 1.2), radius * rng.uniform(0.6, 1.2)
        return kind, (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    return kind, (cx, cy, radius * 1.2, rng.uniform(0.0, 120.0))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: tuple[str, tuple[float, ...]], fill: Any, outline: int = 0) -> None:
    """Draw `shape` filled with `fill`, or, when `outline` > 0, only its outline that many pixels wide."""
    kind, geometry = shape
    paint = {"fill": fill} if outline <= 0 else {"outline": fill, "width": outline}
    if kind == "circle":
        draw.ellipse(geometry, **paint)
    elif kind == "rectangle":
        draw.rectangle(geometry, **paint)
    else:
        cx, cy, radius, rotation = geometry
        draw.regular_polygon((cx, cy, radius), 3, rotation=rotation, **paint)


@lru_cache(maxsize=256)
def _stripe_mask(size: int, orientation: str, half: int, phase: int) -> Image.Image:
    """An L mask of stripes `half` pixels wide: 255 on the coloured stripes, 0 on the black ones."""
    rows, cols = np.indices((size, size))
    position = {"horizontal": rows, "diagonal": rows + cols, "antidiagonal": rows - cols + size}[orientation]
    on = ((position + phase) // half) % 2 == 0
    return Image.fromarray(np.where(on, 255, 0).astype(np.uint8))


@lru_cache(maxsize=256)
def _dot_mask(size: int, period: int, phase: int) -> Image.Image:
    """An L mask of round dots on a square grid `period` pixels apart: 255 on the dots, 0 between them."""
    rows, cols = np.indices((size, size))
    dy, dx = (rows + phase) % period - period / 2, (cols + phase) % period - period / 2
    on = dy * dy + dx * dx <= (period / 3) ** 2
    return Image.fromarray(np.where(on, 255, 0).astype(np.uint8))


# ---------------------------------------------------------------------------------------------------------


@hookimpl
def i2i_datasets() -> list[type[Dataset]]:
    """The stock datasets: unpaired image folders, aligned A|B pairs and synthetic shapes."""
    return [UnpairedFolders, AlignedFolders, Synthetic]
