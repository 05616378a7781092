"""A corpus of bad and awkward image files, generated on demand (never copied data), and what each should get.

`build(folder)` writes every case into `folder` and returns them. A case's files are either *used* (decoded to RGB,
with the EXIF rotation applied and odd sizes resized or padded) or *skipped* with one warning line that names
the file and gives a reason containing `reason`.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    """One corpus entry: its name, what it is, and the expected outcome."""

    name: str
    what: str
    make: Callable[[Path], None]
    reason: str | None = None  # None: the file is used; else a fragment of the one-line reason it is skipped
    files: tuple[str, ...] | None = None  # the image files it puts in the folder, if not just `name`
    upright: tuple[int, int] | None = None  # (width, height) once the EXIF rotation is applied, when it changes
    warning: str | None = None  # a fragment of the one warning line a used file gets
    root_reads_it: bool = False  # used (not skipped) when running as root, which ignores file permissions
    decoded_to_tell: bool = False  # its header is an image's: only decoding it finds the fault (or never, if unread)

    @property
    def skipped(self) -> bool:
        """Whether the files are expected to be refused (each with one line naming it)."""
        return self.reason is not None and not (self.root_reads_it and os.geteuid() == 0)

    @property
    def paths(self) -> tuple[str, ...]:
        """The image files (relative to the corpus folder) the case puts there."""
        return (self.name,) if self.files is None else self.files


def noise(size: tuple[int, int], seed: int = 0, channels: int = 3) -> Image.Image:
    """Random pixels: they compress badly, so cutting an encoded file really cuts image data."""
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, channels) if channels > 1 else (h, w),
                                                    dtype=np.uint8)
    return Image.fromarray(pixels)


def _non_finite(path: Path) -> None:
    pixels = np.linspace(0, 1, 1600, dtype=np.float32).reshape(40, 40)
    pixels[0, :3], pixels[5, 5:7] = np.nan, (np.inf, -np.inf)
    Image.fromarray(pixels).save(path)


def _save(image: Image.Image, **params) -> Callable[[Path], None]:
    return lambda path: image.save(path, **params)


def _truncated(fmt: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        buffer = io.BytesIO()
        noise((48, 48), seed=3).save(buffer, format=fmt)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return make


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb(path: Path) -> None:
    """A PNG header claiming 100000 x 100000 pixels (40 GB decoded) with next to no data."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _png_chunk(b"IEND", b""))


def _exif(orientation: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image = Image.new("RGB", (40, 20), (200, 30, 30))
        image.paste((30, 30, 200), (20, 0, 40, 20))  # left red, right blue: the rotation shows in the pixels
        image.save(path, exif=exif, quality=95)
    return make


def _broken_exif(path: Path) -> None:
    buffer = io.BytesIO()
    noise((40, 40), seed=5).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    # An APP1 segment that says Exif but holds garbage, right after the start-of-image marker.
    app1 = b"Exif\0\0" + b"MM\0\x2a\xff\xff\xff\xff" + os.urandom(8)
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])


def _deep(dtype: str) -> Callable[[Path], None]:
    values = np.linspace(0, 65535, 40 * 40).reshape(40, 40).astype(dtype)
    return lambda path: Image.fromarray(values).save(path)


def _palette(transparent: bool) -> Callable[[Path], None]:
    image = noise((40, 40), seed=6).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return lambda path: image.save(path, **({"transparency": 0} if transparent else {}))


def _rgba(path: Path) -> None:
    image = noise((40, 40), seed=7, channels=4)
    image.save(path)


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _loop_pair(path: Path) -> None:
    # loop_a.png -> loop_b.png -> loop_a.png: opening either fails with "too many levels of symbolic links"
    path.symlink_to("loop_b.png")
    (path.parent / "loop_b.png").symlink_to(path.name)


def _folder_loop(path: Path) -> None:
    # A subfolder holding a link back to its parent: a naive recursive listing never ends.
    path.mkdir()
    noise((40, 40), seed=8).save(path / "inside.png")
    (path / "parent").symlink_to("..")


def _unreadable(path: Path) -> None:
    noise((40, 40), seed=9).save(path)
    path.chmod(0)


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # opening a named pipe for reading blocks until someone writes


CASES: tuple[Case, ...] = (
    Case("empty.png", "zero-byte file", _bytes(b""), reason="empty"),
    Case("empty.jpg", "zero-byte file", _bytes(b""), reason="empty"),
    Case("truncated.png", "PNG cut in half", _truncated("PNG"), reason="truncated", decoded_to_tell=True),
    Case("truncated.jpg", "JPEG cut in half", _truncated("JPEG"), reason="truncated", decoded_to_tell=True),
    Case("text.jpg", "a text file named .jpg", _bytes(b"this is not an image\n"), reason="not an image"),
    Case("page.png", "an HTML error page named .png (a failed download)",
         _bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"), reason="not an image"),
    Case("garbage.png", "PNG signature followed by random bytes",
         _bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(200)), reason="not an image"),
    Case("bomb.png", "PNG header claiming 100000x100000 pixels (decompression bomb)", _bomb,
         reason="decompression bomb"),
    Case("folder.png", "an empty folder named .png (a folder, so it is walked into, not read)",
         lambda p: p.mkdir(), files=()),
    Case("fifo.png", "a named pipe named .png (opening it would wait forever)", _fifo,
         reason="it is a named pipe, not a regular file"),
    Case("dangling.png", "a symlink to a missing file", _symlink("missing.png"), reason="no such file"),
    Case("loop_a.png", "two symlinks pointing at each other", _loop_pair, reason="symbolic links",
         files=("loop_a.png", "loop_b.png")),
    Case("unreadable.png", "a file without read permission", _unreadable, reason="permission denied",
         root_reads_it=True),
    Case("loop", "a folder holding a symlink to its parent (a listing that follows links never ends)",
         _folder_loop, files=("loop/inside.png",)),
    Case("deep16.png", "16-bit grayscale PNG", _deep("uint16")),
    Case("deep16.tif", "16-bit big-endian TIFF", _deep(">u2")),
    Case("palette.png", "palette (P) PNG", _palette(False)),
    Case("palette_transparent.png", "palette PNG with a transparent index", _palette(True)),
    Case("cmyk.jpg", "CMYK JPEG", _save(noise((40, 40), seed=10).convert("CMYK"), quality=95)),
    Case("cmyk.tif", "CMYK TIFF", _save(noise((40, 40), seed=11).convert("CMYK"))),
    Case("rgba.png", "RGBA PNG with varying alpha", _rgba),
    Case("gray.png", "8-bit grayscale PNG", _save(noise((40, 40), seed=12, channels=1))),
    Case("gray_alpha.png", "grayscale + alpha (LA) PNG", _save(noise((40, 40), seed=13).convert("LA"))),
    Case("bilevel.bmp", "1-bit BMP", _save(noise((40, 40), seed=14).convert("1"))),
    Case("float.tif", "32-bit float TIFF",
         _save(Image.fromarray(np.linspace(0, 1, 1600, dtype=np.float32).reshape(40, 40)))),
    Case("nan.tif", "32-bit float TIFF holding NaN and infinite values (a sensor's no-data pixels)", _non_finite,
         reason="3 NaN and 2 infinite values", decoded_to_tell=True),
    Case("jpeg_named.png", "a JPEG file with a .png name", _save(noise((40, 40), seed=15), format="JPEG")),
    Case("one_pixel.png", "1x1 image", _save(noise((1, 1), seed=16))),
    Case("one_wide.png", "1 pixel wide, 48 tall", _save(noise((1, 48), seed=17))),
    Case("one_tall.png", "48 wide, 1 pixel tall", _save(noise((48, 1), seed=18))),
    Case("wide.png", "3000x2 (aspect 1500:1)", _save(noise((3000, 2), seed=19))),
    Case("tall.png", "3x2000 (aspect 1:667)", _save(noise((3, 2000), seed=20))),
    Case("exif_rot90.jpg", "JPEG with EXIF orientation 6 (rotate 90 clockwise)", _exif(6), upright=(20, 40)),
    Case("exif_rot270.jpg", "JPEG with EXIF orientation 8 (rotate 90 counter-clockwise)", _exif(8),
         upright=(20, 40)),
    Case("exif_rot180.jpg", "JPEG with EXIF orientation 3 (rotate 180)", _exif(3)),
    Case("exif_mirror.jpg", "JPEG with EXIF orientation 2 (mirrored)", _exif(2)),
    Case("broken_exif.jpg", "JPEG whose EXIF block is garbage", _broken_exif, warning="corrupt EXIF data"),
)


def build(folder: Path) -> list[Case]:
    """Write every case into `folder` (created) and return the cases."""
    folder.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        case.make(folder / case.name)
    return list(CASES)
