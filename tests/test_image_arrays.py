"""read_array and write_array: image files in their own depth and channels (16-bit gray and RGB PNG, N-band and
multi-page TIFF, .npy), round trips, EXIF rotation and every bad input as one I2IError line, on tiny real files."""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from PIL import Image, ImageOps

from i2i.storage.atomic import atomic_file
from i2i.errors import I2IError
from i2i.data.images import (ARRAY_EXTENSIONS, ARRAY_FORMATS, IMAGE_EXTENSIONS, list_images, read_array, read_image,
                        write_array)

RNG = np.random.default_rng(0)


def pixels(dtype: str, channels: int, height: int = 6, width: int = 5) -> np.ndarray:
    """Random (H, W, C) pixels over the dtype's whole range (floats: signed, beyond [0, 1])."""
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return (RNG.standard_normal((height, width, channels)) * 1000).astype(kind)
    info = np.iinfo(kind)
    return RNG.integers(info.min, info.max, (height, width, channels), dtype=kind, endpoint=True)


def written(path: Path, array: np.ndarray, fmt: str | None = None) -> Path:
    """`array` written to `path` by write_array, as callers do (through atomic_file)."""
    with atomic_file(path) as file:
        write_array(file, array, fmt or ARRAY_FORMATS[path.suffix])
    return path


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """A PNG with one more chunk right after IHDR (signature 8 bytes + IHDR chunk 25 bytes)."""
    return data[:33] + chunk(kind, payload) + data[33:]


def png16(array: np.ndarray, alpha: bool = False) -> bytes:
    """A 16-bit PNG written by pypng directly, as other tools write them."""
    height, width, planes = array.shape
    buffer = io.BytesIO()
    png.Writer(width, height, greyscale=planes in (1, 2), alpha=alpha, bitdepth=16).write(
        buffer, array.reshape(height, width * planes).tolist())
    return buffer.getvalue()


def exif_orientation(value: int) -> bytes:
    """An eXIf chunk's payload: the TIFF block of an EXIF with this orientation."""
    exif = Image.Exif()
    exif[0x0112] = value
    data = exif.tobytes()
    return data[6:] if data.startswith(b"Exif\x00\x00") else data


def refused(path: Path) -> str:
    """read_array's one-line message for a bad file, checked to name the file."""
    with pytest.raises(I2IError) as caught:
        read_array(path)
    message = str(caught.value)
    assert message.startswith(f"cannot read image {path}: ") and "\n" not in message, message
    return message


# -------------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype, channels", [("uint8", 1), ("uint8", 3), ("uint16", 1), ("uint16", 3)])
def test_png_round_trips_exactly(tmp_path: Path, dtype: str, channels: int) -> None:
    array = pixels(dtype, channels)
    if dtype == "uint16":  # the values 8-bit handling would break: 1 and 256, 65534 and 65535
        array.reshape(-1)[:5] = [0, 1, 256, 65534, 65535]
    path = written(tmp_path / "x.png", array)
    head = path.read_bytes()[:26]
    assert head[24] == np.dtype(dtype).itemsize * 8 and head[25] == (0 if channels == 1 else 2)
    back = read_array(path)
    assert back.dtype == np.dtype(dtype) and back.shape == array.shape and back.flags.writeable
    assert np.array_equal(back, array)


@pytest.mark.parametrize("dtype", ["uint16", "float32", "int16"])
@pytest.mark.parametrize("channels", [1, 3, 4, 7])
def test_tiff_round_trips_exactly(tmp_path: Path, dtype: str, channels: int) -> None:
    array = pixels(dtype, channels)
    back = read_array(written(tmp_path / "x.tif", array))
    assert back.dtype == np.dtype(dtype) and back.shape == array.shape
    assert np.array_equal(back, array)


@pytest.mark.parametrize("dtype, channels", [("uint8", 3), ("int32", 2), ("uint16", 1)])
def test_npy_round_trips_exactly_and_stays_three_dimensional(tmp_path: Path, dtype: str, channels: int) -> None:
    array = pixels(dtype, channels)
    path = written(tmp_path / "x.npy", array)
    assert np.load(path).shape == array.shape  # (H, W, 1) too, not (H, W)
    assert np.array_equal(read_array(path), array) and read_array(path).dtype == np.dtype(dtype)


def test_floats_of_other_widths_come_back_as_float32(tmp_path: Path) -> None:
    for dtype in ("float16", "float64"):
        array = pixels(dtype, 2)
        np.save(tmp_path / f"{dtype}.npy", array)
        tifffile.imwrite(tmp_path / f"{dtype}.tif", array[..., 0])
        for path in (tmp_path / f"{dtype}.npy", tmp_path / f"{dtype}.tif", written(tmp_path / "w.tif", array)):
            back = read_array(path)
            assert back.dtype == np.float32, path
            assert np.array_equal(back, array[..., : back.shape[2]].astype(np.float32)), path


def test_npy_two_dimensional_big_endian_and_fortran_order(tmp_path: Path) -> None:
    gray = pixels("uint16", 1)[..., 0]
    np.save(tmp_path / "gray.npy", gray)
    np.save(tmp_path / "big.npy", gray.astype(">u2"))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(pixels("int16", 3)))
    for name in ("gray", "big"):
        back = read_array(tmp_path / f"{name}.npy")
        assert back.shape == (*gray.shape, 1) and back.dtype == np.dtype(np.uint16)  # native order: == uint16
        assert np.array_equal(back[..., 0], gray)
    fortran = np.load(tmp_path / "fortran.npy")
    back = read_array(tmp_path / "fortran.npy")
    assert np.array_equal(back, fortran) and back.flags.c_contiguous


def test_multipage_tiff_pages_become_channels(tmp_path: Path) -> None:
    pages = pixels("uint16", 3)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tiff:
        for i in range(3):  # one page each, no shape metadata: tifffile sees axes "IYX"
            tiff.write(pages[..., i], photometric="minisblack", metadata=None)
    tifffile.imwrite(tmp_path / "stack.tif", np.moveaxis(pages, 2, 0), photometric="minisblack")  # "QYX"
    rgb_pages = pixels("uint8", 6)
    with tifffile.TiffWriter(tmp_path / "rgb_pages.tif") as tiff:
        for i in (0, 3):
            tiff.write(rgb_pages[..., i:i + 3], photometric="rgb", metadata=None)
    for name in ("pages", "stack"):
        back = read_array(tmp_path / f"{name}.tif")
        assert back.shape == pages.shape and np.array_equal(back, pages), name
    assert np.array_equal(read_array(tmp_path / "rgb_pages.tif"), rgb_pages)  # pages x samples, page-major


def test_planar_tiffs(tmp_path: Path) -> None:
    bands = pixels("float32", 5)
    tifffile.imwrite(tmp_path / "bands.tif", np.moveaxis(bands, 2, 0), photometric="minisblack",
                     planarconfig="separate")
    rgb = pixels("uint16", 3)
    tifffile.imwrite(tmp_path / "rgb.tif", np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_array(tmp_path / "bands.tif"), bands)
    assert np.array_equal(read_array(tmp_path / "rgb.tif"), rgb)


@pytest.mark.parametrize("fmt, suffix", [("bmp", ".bmp"), ("ppm", ".ppm"), ("webp", ".webp"), ("jpeg", ".jpg")])
@pytest.mark.parametrize("channels", [1, 3])
def test_eight_bit_formats(tmp_path: Path, fmt: str, suffix: str, channels: int) -> None:
    array = np.repeat(np.repeat(pixels("uint8", channels, 4, 4), 8, axis=0), 8, axis=1)  # blocks survive JPEG
    back = read_array(written(tmp_path / f"x{suffix}", array, fmt))
    if fmt == "webp" and channels == 1:  # WebP has no gray: it comes back as three equal channels
        assert np.array_equal(back[..., 1:], back[..., :2])
        back = back[..., :1]
    assert back.dtype == np.uint8 and back.shape == array.shape
    if fmt == "jpeg":
        assert np.abs(back.astype(int) - array).mean() < 8
    else:  # lossless (WebP is written lossless, as `i2i translate` does)
        assert np.array_equal(back, array)


# ------------------------------------------------------------------------------------------- what files hold


def test_sixteen_bit_rgb_png_from_pypng_keeps_its_sixteen_bits(tmp_path: Path) -> None:
    array = pixels("uint16", 3)
    array.reshape(-1)[:5] = [0, 1, 256, 65534, 65535]
    (tmp_path / "rgb16.png").write_bytes(png16(array))
    with Image.open(tmp_path / "rgb16.png") as image:
        assert image.mode == "RGB"  # PIL alone gives 8 bits
    back = read_array(tmp_path / "rgb16.png")
    assert back.dtype == np.uint16 and np.array_equal(back, array)
    # An sBIT chunk (12 significant bits) does not rescale the values, as pypng's asDirect would.
    (tmp_path / "sbit.png").write_bytes(with_chunk(png16(array), b"sBIT", bytes([12, 12, 12])))
    assert np.array_equal(read_array(tmp_path / "sbit.png"), array)


def test_alpha_goes_over_white_at_each_depth(tmp_path: Path) -> None:
    colour = np.array([[[1000, 30000, 65535], [1000, 30000, 65535], [40000, 2, 3]]], dtype=np.uint16)
    alpha = np.array([[[65535], [0], [32768]]], dtype=np.uint16)
    (tmp_path / "rgba16.png").write_bytes(png16(np.concatenate([colour, alpha], axis=2), alpha=True))
    back = read_array(tmp_path / "rgba16.png")
    assert back.dtype == np.uint16 and back.shape == (1, 3, 3)
    assert back[0, 0].tolist() == [1000, 30000, 65535] and back[0, 1].tolist() == [65535] * 3
    half = 32768 / 65535
    assert back[0, 2].tolist() == [round(c * half + 65535 * (1 - half)) for c in (40000, 2, 3)] == [52767, 32768, 32769]
    (tmp_path / "la16.png").write_bytes(png16(np.concatenate([colour[..., 2:], alpha], axis=2), alpha=True))
    assert read_array(tmp_path / "la16.png")[0, :, 0].tolist() == [65535, 65535, 32769]

    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert read_array(tmp_path / "rgba.png").tolist() == [[[10, 20, 30], [255, 255, 255]]]
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    assert read_array(tmp_path / "la.png").tolist() == [[[10], [255]]]


def test_gray_palette_and_bilevel_files(tmp_path: Path) -> None:
    gray = pixels("uint8", 1)[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.jpg", quality=100)
    assert read_array(tmp_path / "gray.jpg").shape == (*gray.shape, 1)
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.png")  # palette: RGB, even if its colours are gray
    assert read_array(tmp_path / "palette.png").shape == (*gray.shape, 3)
    bits = np.array([[0, 255, 0], [255, 255, 0]], dtype=np.uint8)
    Image.fromarray(bits).convert("1").save(tmp_path / "bits.png")
    Image.fromarray(bits).convert("1").save(tmp_path / "bits.tif")
    for name in ("bits.png", "bits.tif"):
        back = read_array(tmp_path / name)
        assert back.dtype == np.uint8 and np.array_equal(back[..., 0], bits), name
    tifffile.imwrite(tmp_path / "white.tif", bits, photometric="miniswhite")  # 0 is white: shown inverted
    assert np.array_equal(read_array(tmp_path / "white.tif")[..., 0], 255 - bits)
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.tif")
    assert read_array(tmp_path / "palette.tif").shape == (*gray.shape, 3)


def test_sixteen_bit_pgm_and_gray_png_stay_sixteen_bit(tmp_path: Path) -> None:
    (tmp_path / "deep.pgm").write_bytes(b"P5\n3 1\n65535\n" + np.array([0, 1, 65535], ">u2").tobytes())
    back = read_array(tmp_path / "deep.pgm")
    assert back.dtype == np.uint16 and back[0, :, 0].tolist() == [0, 1, 65535]
    gray = pixels("uint16", 1)[..., 0]
    Image.fromarray(gray).save(tmp_path / "pil16.png")  # PIL writes 16-bit gray itself
    assert np.array_equal(read_array(tmp_path / "pil16.png")[..., 0], gray)
    # read_image, the RGB reader, still gives 8-bit RGB for the same file
    assert read_image(tmp_path / "pil16.png").mode == "RGB"


def test_lzw_tiffs_fall_back_to_pil_or_name_imagecodecs(tmp_path: Path) -> None:
    rgb, deep = pixels("uint8", 3), pixels("uint16", 1)
    Image.fromarray(rgb).save(tmp_path / "rgb.tif", compression="tiff_lzw")
    Image.fromarray(deep[..., 0]).save(tmp_path / "deep.tif", compression="tiff_lzw")
    assert np.array_equal(read_array(tmp_path / "rgb.tif"), rgb)
    assert np.array_equal(read_array(tmp_path / "deep.tif"), deep) and read_array(tmp_path / "deep.tif").dtype == "u2"
    if importlib.util.find_spec("imagecodecs") is None:  # tifffile reads LZW itself with imagecodecs installed
        frames = [Image.fromarray(rgb[..., i]) for i in range(3)]
        frames[0].save(tmp_path / "pages.tif", compression="tiff_lzw", save_all=True, append_images=frames[1:])
        assert "LZW compression needs the imagecodecs package" in refused(tmp_path / "pages.tif")


# ------------------------------------------------------------------------------------------------- orientation


def test_exif_rotation_of_jpeg_png_and_tiff(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (20, 10), (90, 90, 90)).save(tmp_path / "rotated.jpg", exif=exif)
    assert read_array(tmp_path / "rotated.jpg").shape == (20, 10, 3)
    gray = pixels("uint8", 1)[..., 0]
    Image.fromarray(gray).save(tmp_path / "rotated.png", exif=exif)
    assert np.array_equal(read_array(tmp_path / "rotated.png")[..., 0], np.rot90(gray, -1))
    deep = pixels("uint16", 1)[..., 0]
    tifffile.imwrite(tmp_path / "rotated.tif", deep, extratags=[(274, "H", 1, 6, True)])  # TIFF orientation tag
    assert np.array_equal(read_array(tmp_path / "rotated.tif")[..., 0], np.rot90(deep, -1))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_png_rotates_as_pil_does(tmp_path: Path, orientation: int) -> None:
    # pypng knows nothing of EXIF: the orientation is applied by hand, checked here against PIL's exif_transpose
    small = pixels("uint8", 3, 3, 5)
    (tmp_path / "x.png").write_bytes(with_chunk(png16(small.astype(np.uint16) * 257), b"eXIf",
                                                exif_orientation(orientation)))
    image = Image.fromarray(small)
    image.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image)).astype(np.uint16) * 257
    assert np.array_equal(read_array(tmp_path / "x.png"), expected)


# -------------------------------------------------------------------------------------------------- bad inputs


class Unpickled:
    """Creates a file when unpickled: proof that read_array never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_bad_npy_files_are_one_line_each(tmp_path: Path) -> None:
    cases = {"int64": np.zeros((4, 4), np.int64), "bool": np.zeros((4, 4), bool),
             "uint32": np.zeros((4, 4, 2), np.uint32), "complex": np.zeros((4, 4), np.complex64),
             "structured": np.zeros((4, 4), [("a", "u1"), ("b", "f4")]),
             "shape (16,)": np.zeros(16, np.uint8), "shape (2, 4, 4, 3)": np.zeros((2, 4, 4, 3), np.float32),
             "shape (0, 4)": np.zeros((0, 4), np.uint8)}
    for expected, array in cases.items():
        np.save(tmp_path / "bad.npy", array)
        message = refused(tmp_path / "bad.npy")
        assert expected in message and ("uint8, uint16" in message or "(H, W, C)" in message), message

    marker = tmp_path / "unpickled"
    np.save(tmp_path / "object.npy", np.array([[Unpickled(marker)]], dtype=object), allow_pickle=True)
    assert "object pixels are not supported" in refused(tmp_path / "object.npy")
    assert not marker.exists()

    np.save(tmp_path / "full.npy", pixels("uint16", 3, 16, 16))
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-10])
    assert "the file is truncated" in refused(tmp_path / "cut.npy")
    (tmp_path / "text.npy").write_bytes(b"not numpy at all\n")
    assert "magic string" in refused(tmp_path / "text.npy")


def test_bad_files_of_every_format_are_one_line_each(tmp_path: Path) -> None:
    for name in ("empty.tif", "empty.png", "empty.npy", "empty.jpg"):
        (tmp_path / name).write_bytes(b"")
        assert refused(tmp_path / name).endswith("the file is empty (0 bytes)")
    (tmp_path / "x.npy").mkdir()
    assert refused(tmp_path / "x.npy").endswith("it is a directory")
    assert "no such file" in refused(tmp_path / "absent.tif")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.npy")  # must not block waiting for a writer
        assert refused(tmp_path / "pipe.npy").endswith("it is a named pipe, not a regular file")

    Image.fromarray(pixels("uint8", 3, 32, 32)).save(tmp_path / "full.png")
    (tmp_path / "full16.png").write_bytes(png16(pixels("uint16", 3, 32, 32)))
    for name in ("full.png", "full16.png"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
        assert "truncated" in refused(tmp_path / f"cut_{name}")
    (tmp_path / "text.tif").write_bytes(b"this is not a tiff\n")
    assert "not a TIFF file" in refused(tmp_path / "text.tif")
    tifffile.imwrite(tmp_path / "wide.tif", np.zeros((4, 4), np.uint32))
    assert "uint32 pixels are not supported" in refused(tmp_path / "wide.tif")


def test_float_pixels_that_are_nan_or_infinite_are_refused_with_their_count(tmp_path: Path) -> None:
    values = pixels("float32", 2, 8, 8)
    values[0, 0, 0], values[1, :3, 1], values[7, 7, 0] = np.nan, np.inf, -np.inf
    np.save(tmp_path / "bad.npy", values)
    expected = ("it holds 1 NaN and 4 infinite values (of 128): pixels must be finite; replace them (e.g."
                " numpy.nan_to_num) or remove the file")
    assert refused(tmp_path / "bad.npy").endswith(expected)
    tifffile.imwrite(tmp_path / "bad.tif", values[..., 0])
    assert refused(tmp_path / "bad.tif").endswith("it holds 1 NaN and 1 infinite values (of 64): pixels must be"
                                                  " finite; replace them (e.g. numpy.nan_to_num) or remove the file")
    # float64 beyond float32's range becomes infinite in the float32 i2i computes in, so it is refused too
    np.save(tmp_path / "huge.npy", np.full((4, 4), 1e300))
    assert "it holds 16 infinite values (of 16)" in refused(tmp_path / "huge.npy")
    # the 8-bit RGB reader refuses the same float TIFF (PIL mode F) rather than turning NaN into some grey
    with pytest.raises(I2IError, match=r"cannot read image .*bad\.tif: it holds 1 NaN and 1 infinite value"):
        read_image(tmp_path / "bad.tif")
    # finite floats and integers (which cannot be NaN) read as before
    np.save(tmp_path / "good.npy", values[2:6])
    assert np.array_equal(read_array(tmp_path / "good.npy"), values[2:6])
    assert read_array(written(tmp_path / "int.tif", pixels("int16", 1))).dtype == np.int16


def test_write_array_refuses_what_a_format_cannot_hold(tmp_path: Path) -> None:
    cases = [(pixels("uint16", 3), "jpeg", "JPEG holds uint8 pixels with 1 or 3 channels, not uint16 pixels with 3"),
             (pixels("uint8", 4), "png", "not uint8 pixels with 4 channels: write TIFF or .npy"),
             (pixels("uint8", 2), "png", "not uint8 pixels with 2 channels: write TIFF or .npy"),
             (pixels("float32", 1), "png", "not float32 pixels with 1 channel: write TIFF or .npy"),
             (pixels("uint8", 4), "bmp", "write PNG (uint8 or uint16, 1 or 3 channels), TIFF or .npy"),
             (np.zeros((4, 4), np.int64), "tiff", "int64 pixels are not supported"),
             (np.zeros((2, 4, 4, 3), np.uint8), "npy", "shape (2, 4, 4, 3)"),
             (np.zeros((4, 4), np.uint8), "gif", "cannot write format 'gif'")]
    for array, fmt, expected in cases:
        path = tmp_path / f"out.{fmt}"
        with pytest.raises(I2IError) as caught, atomic_file(path) as file:
            write_array(file, array, fmt)
        assert expected in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
        assert not path.exists() and not list(tmp_path.glob(".*.tmp"))  # atomic_file left nothing behind


# ------------------------------------------------------------------------------------------ names and listing


def test_formats_cover_every_extension_and_listing_finds_npy_only_when_asked(tmp_path: Path) -> None:
    assert set(ARRAY_FORMATS) == set(ARRAY_EXTENSIONS) == {*IMAGE_EXTENSIONS, ".npy"}
    for name in ("a.png", "b.npy", "sub/c.NPY", "d.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png"]
    assert [p.name for p in list_images(tmp_path, extensions=ARRAY_EXTENSIONS)] == ["a.png", "b.npy", "c.NPY"]
