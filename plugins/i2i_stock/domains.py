"""The stock datasets of more than two domains (StarGAN and other methods that declare N domains).

`domains` reads image folders ROOT/train/<domain>/ (and ROOT/test/<domain>/); `synthetic_domains` draws the
synthetic shapes in N styles. Their items are {"image", "domain", "path"}: one image, the index of its domain in
`domains()`, and where it came from. Files are listed and read with the same helpers as the two-domain datasets
(`i2i_stock.datasets`), so bad files, pixel options and augmentation behave alike.
"""

from __future__ import annotations

import bisect
import difflib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from i2i.api import (Dataset, I2IError, ImageFiles, Option, PIXEL_OPTIONS, Pixels, ValueMap, hookimpl, list_images,
                     read_array, transform_image, transform_tensors)

from i2i_stock.datasets import (SYNTHETIC_STYLES, _PixelFolders, _bands, _check_index, _check_root, _check_sizes,
                                _fit_pixels, draw_synthetic)

__all__ = ["DomainFolders", "DomainItems", "SyntheticDomains", "i2i_datasets"]

# channels_b names domain B, which N-domain data does not have: channels, values, low and high hold for every domain
_PIXEL_OPTIONS = tuple(replace(option, help="channels of every domain's images: 1 grayscale, 3 RGB, N bands")
                       if option.name == "channels" else option
                       for option in PIXEL_OPTIONS if option.name != "channels_b")


@dataclass
class _DomainPixels(Pixels):
    """Pixels whose channels and value window hold for each of the named domains (not just A and B)."""

    names: tuple[str, ...] = ("A", "B")

    def __post_init__(self) -> None:
        super().__post_init__()
        window = self.value_map.domains["A"]
        self.value_map = ValueMap(self.value_map.mode, {name: window for name in self.names})

    def domain_channels(self) -> dict[str, int]:
        """data.channels for every domain."""
        return {name: self.channels for name in self.names}


# ---------------------------------------------------------------------------------------------------------
# Image folders, one per domain


class DomainFolders(_PixelFolders):
    """Images of N domains from folders ROOT/train/<domain>/ (and optionally ROOT/test/<domain>/).

    Items are every image of every domain, domain by domain, each with its domain's index in data.domains.
    channels, values, low and high apply to every domain.
    """

    name = "domains"
    paired = False
    options = (
        Option("root", str, "", "folder holding train/<domain>/ folders of images (and optionally test/<domain>/)"),
        Option("domains", list, [], "the domains, in order: folder names under train/ ([]: every subfolder,"
               " sorted)"),
        Option("load_size", int, 286, "images are resized to load_size x load_size first", min=1),
        Option("crop_size", int, 256, "then cropped to crop_size x crop_size (random crop in training)", min=1),
        Option("flip", bool, True, "flip training images horizontally at random"),
        *_PIXEL_OPTIONS,
    )

    def __init__(self, root: str = "", domains: list[str] | None = None, load_size: int = 286,
                 crop_size: int = 256, flip: bool = True, channels: int = 3, values: str = "auto",
                 low: float = 0.0, high: float = 0.0) -> None:
        if not root:
            raise I2IError("data.root is not set: set data.root to the folder holding train/<domain>/ folders"
                           " (e.g. --set data.root=path/to/seasons)")
        self.root = Path(root).expanduser()
        self.load_size, self.crop_size, self.flip = load_size, crop_size, flip
        _check_sizes(load_size, crop_size)
        try:
            names = self._pick_domains(list(domains or []))
        except PermissionError as err:
            raise I2IError(f"cannot read {err.filename or self.root}: permission denied") from err
        self._names = tuple(names)
        self.pixels = _DomainPixels(channels, 0, values, low, high, names=self._names)
        self._files: dict[str, list[list[Path]] | None] = {"train": self._scan("train", required=True)}
        _fit_pixels(self.pixels, dict(zip(self._names, self._files["train"])))

    def _pick_domains(self, wanted: list[str]) -> list[str]:
        """The domain names: `wanted` checked against the folders of train/, or all of them, sorted."""
        _check_root(self.root, "train/<domain>/ folders")
        train = self.root / "train"
        if not train.is_dir():
            # a root one level too high (data/ instead of data/seasons/) is the usual slip
            nested = [sub for sub in _subfolders(self.root) if (self.root / sub / "train").is_dir()]
            hint = f"; did you mean data.root={self.root / nested[0]}?" if len(nested) == 1 else ""
            raise I2IError(f"{self.root} has no train/ folder (it has: {_listing(self.root)}): N-domain data"
                           f" needs train/<domain>/ folders of images, one per domain{hint}")
        present = _subfolders(train)
        for name in wanted:
            if name not in present:
                close = difflib.get_close_matches(name, present, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise I2IError(f"data.domains names {name!r}, but {train} has no {name}/ folder (it has:"
                               f" {_listing(train)}): fix data.domains or add the folder{hint}")
        repeated = sorted({name for name in wanted if wanted.count(name) > 1})
        if repeated:
            raise I2IError(f"data.domains lists {', '.join(map(repr, repeated))} more than once: list each domain"
                           " once")
        names = wanted or present
        if len(names) < 2:
            where = "data.domains lists" if wanted else f"{train} holds"
            raise I2IError(f"{where} {len(names)} domain{'s' * (len(names) != 1)}"
                           f"{': ' + names[0] if names else ''}, but N-domain data needs at least 2: "
                           + ("list at least two in data.domains" if wanted else
                              "add a folder of images per domain under train/"))
        return names

    def _scan(self, split: str, required: bool) -> list[list[Path]] | None:
        """The readable image files of each domain of `split`; None (or I2IError when `required`) if one lacks
        them."""
        extensions = self._extensions()
        found = []
        for name in self._names:
            folder = self.root / split / name
            listed = list_images(folder, extensions=extensions) if folder.is_dir() else []
            if not listed:
                if not required:
                    return None
                raise I2IError(f"{folder} has no images (looked for {', '.join(extensions)}, also in subfolders):"
                               f" put domain {name!r}'s images there, or leave it out of data.domains")
            readable = self._openable(listed)
            if not readable:
                if not required:
                    return None
                raise I2IError(f"{folder} has no readable images: all {len(listed)} image files failed to open"
                               " (see the warnings above)")
            found.append(readable)
        return found

    def domains(self) -> tuple[str, ...]:
        """The domain names, in the order of data.domains (or the folders' sorted order)."""
        return self._names

    def load(self, split: str, augment: bool) -> torch.utils.data.Dataset:
        """Every image of every domain of `split`, domain by domain, files sorted."""
        if not self.has_split(split):
            raise I2IError(f"{self.root} has no {split} split: expected folders"
                           f" {', '.join(f'{split}/{name}/' for name in self._names)} with images")
        files = self._files[split]
        assert files is not None
        return DomainItems(self._names, files, [self.root / split / name for name in self._names], self.load_size,
                           self.crop_size, augment, self.flip, self.pixels)


def _subfolders(folder: Path) -> list[str]:
    """The names of the visible subfolders of `folder`, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _listing(folder: Path) -> str:
    """The subfolders of `folder` as a message shows them: "a/, b/" (the first 8), or "no subfolders"."""
    subs = _subfolders(folder)
    shown = ", ".join(s + "/" for s in subs[:8]) + (f" and {len(subs) - 8} more" if len(subs) > 8 else "")
    return shown or "no subfolders"


class DomainItems(torch.utils.data.Dataset):
    """Dict items {"image", "domain", "path"} over one list of image files per domain, domain by domain."""

    def __init__(self, names: tuple[str, ...], files: list[list[Path]], folders: list[Path], load_size: int,
                 crop_size: int, augment: bool, flip: bool, pixels: Pixels) -> None:
        self.names, self.pixels = names, pixels
        reader = None if pixels.rgb8 else read_array
        self.files = [ImageFiles(paths, folder, reader=reader) for paths, folder in zip(files, folders)]
        # item i belongs to the domain whose range of starts holds it
        self.starts = [0]
        for domain_files in self.files[:-1]:
            self.starts.append(self.starts[-1] + len(domain_files))
        self.load_size, self.crop_size, self.augment, self.flip = load_size, crop_size, augment, flip

    def __len__(self) -> int:
        return self.starts[-1] + len(self.files[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = _check_index(index, len(self))
        domain = bisect.bisect_right(self.starts, index) - 1
        path, image = self.files[domain].read(index - self.starts[domain])
        if self.pixels.rgb8:
            tensor = transform_image(image, self.load_size, self.crop_size, self.augment, self.flip)
        else:
            (tensor,) = transform_tensors([self.pixels.to_network(image, self.names[domain], path)],
                                          self.load_size, self.crop_size, self.augment, self.flip)
        return {"image": tensor, "domain": domain, "path": str(path)}


# ---------------------------------------------------------------------------------------------------------
# Synthetic shapes in N styles


class SyntheticDomains(Dataset):
    """Built-in toy data of N domains, no files: random shapes drawn flat, striped, dotted or outlined."""

    name = "synthetic_domains"
    paired = False
    options = (
        Option("domains", int, 3, "how many domains, each a drawing style: the first of "
               + ", ".join(SYNTHETIC_STYLES.values()), min=2, max=len(SYNTHETIC_STYLES)),
        Option("count", int, 256, "images per domain in each split", min=1),
        Option("load_size", int, 72, "images are drawn at load_size x load_size", min=1),
        Option("crop_size", int, 64, "then cropped to crop_size x crop_size (random crop in training)", min=1),
        Option("flip", bool, True, "flip training images horizontally at random"),
        Option("seed", int, 0, "which images are drawn (independent of the run's seed)"),
        Option("channels", int, 3, "channels of the drawn images: 3 RGB, 1 their luma, N the RGB bands repeated",
               min=1),
    )
    splits = ("train", "test")

    def __init__(self, domains: int = 3, count: int = 256, load_size: int = 72, crop_size: int = 64,
                 flip: bool = True, seed: int = 0, channels: int = 3) -> None:
        _check_sizes(load_size, crop_size)
        if not 2 <= domains <= len(SYNTHETIC_STYLES):
            raise I2IError(f"data.domains = {domains} is out of range: synthetic_domains draws 2 to"
                           f" {len(SYNTHETIC_STYLES)} domains")
        self._styles = tuple(SYNTHETIC_STYLES)[:domains]
        self.count, self.load_size, self.crop_size, self.flip, self.seed = count, load_size, crop_size, flip, seed
        self.channels = channels

    def domains(self) -> tuple[str, ...]:
        """The style names of the domains, e.g. ("flat", "striped", "dotted")."""
        return tuple(SYNTHETIC_STYLES[style] for style in self._styles)

    def domain_channels(self) -> dict[str, int]:
        """data.channels for every domain."""
        return {name: self.channels for name in self.domains()}

    def value_map(self) -> ValueMap | None:
        """8-bit values (None for RGB, which keeps the RGB pipeline)."""
        if self.channels == 3:
            return None
        return _DomainPixels(self.channels, 0, "depth", names=self.domains()).value_map

    def has_split(self, split: str) -> bool:
        """True for "train" and "test", which hold different images."""
        return split in self.splits

    def load(self, split: str, augment: bool) -> torch.utils.data.Dataset:
        """`count` items per domain of `split`, domain by domain, drawn on demand."""
        if not self.has_split(split):
            raise I2IError(f"synthetic_domains data has no {split!r} split: it has {', '.join(self.splits)}")
        return SyntheticDomainItems(self._styles, self.seed, split, self.count, self.load_size, self.crop_size,
                                    augment, self.flip, self.channels)


class SyntheticDomainItems(torch.utils.data.Dataset):
    """Items {"image", "domain", "path"}: `count` images per style, each drawn from (seed, split, style, index)."""

    def __init__(self, styles: tuple[str, ...], seed: int, split: str, count: int, load_size: int, crop_size: int,
                 augment: bool, flip: bool, channels: int) -> None:
        self.styles, self.seed, self.split, self.count = styles, seed, split, count
        self.load_size, self.crop_size, self.augment, self.flip = load_size, crop_size, augment, flip
        self.channels = channels

    def __len__(self) -> int:
        return self.count * len(self.styles)

    def __getitem__(self, index: int) -> dict[str, Any]:
        domain, number = divmod(_check_index(index, len(self)), self.count)
        style = self.styles[domain]
        # the style letter is the domain of draw_synthetic: flat and striped images are synthetic's A and B images
        image = draw_synthetic(self.seed, self.split, style, number, self.load_size)
        tensor = transform_image(image, self.load_size, self.crop_size, self.augment, self.flip)
        if self.channels != 3:
            tensor = _bands(tensor, self.channels)
        return {"image": tensor, "domain": domain,
                "path": f"synthetic/{self.split}/{SYNTHETIC_STYLES[style]}/{number:05d}.png"}


# ---------------------------------------------------------------------------------------------------------


@hookimpl
def i2i_datasets() -> list[type[Dataset]]:
    """The stock N-domain datasets: image folders per domain and synthetic shapes in N styles."""
    return [DomainFolders, SyntheticDomains]
