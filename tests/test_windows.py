"""i2i.data.windows: window reads equal read_array's pixels, sinks write band by band and read back the same,
damaged files fail with one line naming them, GeoTIFFs keep CRS, geotransform and nodata."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from i2i.data import windows
from i2i.data.images import read_array
from i2i.data.windows import (ArraySink, ArraySource, CannotStream, GeoSink, GeoSource, TiffSink, TiffSource,
                              is_geotiff, open_windows, streams)
from i2i.errors import I2IError

H, W = 37, 53  # neither a multiple of the 16-pixel tiles nor of the strips
# whole image, inside, across tile borders, the last pixel, the right and bottom edges
WINDOWS = [(0, 0, H, W), (5, 7, 20, 30), (15, 15, 2, 2), (H - 1, W - 1, 1, 1), (0, W - 13, H, 13), (H - 5, 0, 5, W)]
RNG = np.random.default_rng(7)


def _pixels(channels: int, dtype: str) -> np.ndarray:
    high = 250 if dtype == "uint8" else 60000
    return RNG.integers(1, high, (H, W, channels)).astype(dtype)


def _same_windows(path: Path, source: object | None = None) -> None:
    """Every window of the source opened for `path` equals the same slice of read_array(path)."""
    reference = read_array(path)
    with source or open_windows(path) as opened:
        assert (opened.height, opened.width, opened.channels, opened.dtype) == reference.shape + (reference.dtype,)
        for top, left, height, width in WINDOWS:
            window = opened.read(top, left, height, width)
            assert window.dtype == reference.dtype
            np.testing.assert_array_equal(window, reference[top:top + height, left:left + width])


LAYOUTS = {
    "tiled": dict(tile=(16, 16)),
    "tiled-deflate": dict(tile=(16, 16), compression="zlib"),
    "strips": dict(rowsperstrip=5),
    "strips-deflate-predictor": dict(rowsperstrip=5, compression="zlib", predictor=True),
    "strips-lzma": dict(rowsperstrip=7, compression="lzma"),
    "one-strip": dict(),  # tifffile writes an uncompressed image as one strip: read row by row from the file
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("channels,dtype,planar", [(1, "uint8", None), (3, "uint8", "contig"),
                                                    (3, "uint16", "separate"), (4, "uint16", "contig")])
def test_tiff_windows_equal_read_array(tmp_path, layout, channels, dtype, planar):
    pixels = _pixels(channels, dtype)
    path = tmp_path / "image.tif"
    data = pixels[..., 0] if channels == 1 else np.moveaxis(pixels, 2, 0) if planar == "separate" else pixels
    tifffile.imwrite(path, data, photometric="rgb" if channels >= 3 else "minisblack", planarconfig=planar,
                     **LAYOUTS[layout])
    assert streams(path)
    source = open_windows(path)
    assert isinstance(source, TiffSource) and source.geo is None and source.nodata_mask(0, 0, H, W) is None
    _same_windows(path, source)
    np.testing.assert_array_equal(read_array(path), pixels)


@pytest.mark.parametrize("name,write", [
    ("float64", lambda p: tifffile.imwrite(p, RNG.random((H, W, 2)), tile=(16, 16), photometric="minisblack",
                                           planarconfig="contig")),
    ("int16 big-endian", lambda p: tifffile.imwrite(p, RNG.integers(-3000, 3000, (H, W)).astype(">i2"),
                                                    byteorder=">", rowsperstrip=3)),
    ("int32", lambda p: tifffile.imwrite(p, RNG.integers(-10**6, 10**6, (H, W)).astype("i4"), tile=(16, 16))),
    ("miniswhite", lambda p: tifffile.imwrite(p, _pixels(1, "uint8")[..., 0], photometric="miniswhite",
                                              tile=(16, 16))),
    ("bilevel", lambda p: tifffile.imwrite(p, _pixels(1, "uint8")[..., 0] > 128)),
    ("packbits by PIL", lambda p: Image.fromarray(_pixels(3, "uint8")).save(p, compression="packbits")),
])
def test_other_sample_kinds_equal_read_array(tmp_path, name, write):
    path = tmp_path / "image.tif"
    write(path)
    assert streams(path)
    _same_windows(path)


@pytest.mark.parametrize("name,write", [
    ("a stack of pages", lambda p: tifffile.imwrite(p, RNG.integers(0, 255, (5, H, W), dtype=np.uint8))),
    ("an orientation tag", lambda p: tifffile.imwrite(p, _pixels(1, "uint8")[..., 0],
                                                      extratags=[(274, 3, 1, 3, True)])),
    ("a palette", lambda p: Image.fromarray(_pixels(1, "uint8")[..., 0]).convert("P").save(p)),
])
def test_tiffs_that_cannot_stream_are_read_whole(tmp_path, name, write):
    path = tmp_path / "image.tif"
    write(path)
    assert not streams(path)
    with pytest.raises(CannotStream, match=f"cannot read {path} by window: .*read it whole"):
        TiffSource(path)
    with open_windows(path) as source:
        assert isinstance(source, ArraySource)
    _same_windows(path)


def test_compression_needing_imagecodecs_falls_back(tmp_path):
    pytest.importorskip("PIL.TiffImagePlugin")
    path = tmp_path / "lzw.tif"
    Image.fromarray(_pixels(3, "uint8")).save(path, compression="tiff_lzw")
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        with pytest.raises(CannotStream, match="LZW compression needs the imagecodecs package"):
            TiffSource(path)
        assert not streams(path)
    else:
        assert streams(path)
    _same_windows(path)  # through PIL when tifffile cannot decode LZW


def test_png_goes_through_array_source(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(_pixels(3, "uint8")).save(path)
    assert not streams(path) and not is_geotiff(path)
    with open_windows(path) as source:
        assert isinstance(source, ArraySource) and source.path == path and source.nodata_mask(0, 0, 2, 2) is None
    _same_windows(path)


def test_window_outside_the_image_is_refused(tmp_path):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, _pixels(3, "uint8"), tile=(16, 16))
    with open_windows(path) as source:
        for window in [(0, 0, H + 1, W), (-1, 0, 2, 2), (0, W - 1, 1, 2), (0, 0, 0, 5)]:
            with pytest.raises(ValueError, match=f"does not lie inside the {W}x{H} image"):
                source.read(*window)
    source = ArraySource(_pixels(2, "uint16"))
    window = source.read(1, 2, 3, 4)
    window[:] = 0  # a copy: the image is untouched
    assert source.read(1, 2, 3, 4).all()


def _one_line_naming(error: pytest.ExceptionInfo, path: Path, reason: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"cannot read image {path}: ") and reason in message


def test_truncated_tiff_fails_with_one_line(tmp_path):
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, _pixels(3, "uint8"), tile=(16, 16), compression="zlib")
    data = whole.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[:-100])  # the last tiles are missing: found when opening
    for opener in (open_windows, streams, TiffSource):
        with pytest.raises(I2IError) as error:
            opener(cut)
        _one_line_naming(error, cut, "the file is truncated")
    cut.write_bytes(data[:40])  # inside the header
    with pytest.raises(I2IError) as error:
        open_windows(cut)
    _one_line_naming(error, cut, "damaged or truncated TIFF")
    # cut while open: the read finds the segment past the end (tifffile itself would hand on the short data)
    cut.write_bytes(data)
    with open_windows(cut) as source:
        os.truncate(cut, len(data) - 100)
        source.read(0, 0, 16, W)  # the first tile row is still whole
        with pytest.raises(I2IError) as error:
            source.read(H - 5, 0, 5, W)
        _one_line_naming(error, cut, "the file is truncated (tile")


def test_truncated_uncompressed_strip_and_damaged_tile(tmp_path):
    path = tmp_path / "strip.tif"
    tifffile.imwrite(path, _pixels(1, "uint16"))
    with open_windows(path) as source:
        os.truncate(path, os.path.getsize(path) - 200)
        with pytest.raises(I2IError) as error:
            source.read(H - 2, 0, 2, W)
        _one_line_naming(error, path, "the file is truncated (strip 0")
    tiled = tmp_path / "tiled.tif"
    tifffile.imwrite(tiled, _pixels(3, "uint8"), tile=(16, 16), compression="zlib")
    with tifffile.TiffFile(tiled) as tiff:
        offset = tiff.pages[0].dataoffsets[4]
    data = bytearray(tiled.read_bytes())
    data[offset + 2:offset + 40] = b"\xff" * 38
    tiled.write_bytes(bytes(data))
    with open_windows(tiled) as source:
        source.read(0, 0, 16, 16)
        with pytest.raises(I2IError) as error:
            source.read(16, 0, 16, 32)  # tile 4 is the second tile row's second tile
        _one_line_naming(error, tiled, "damaged image data in tile 4")


def test_nan_is_refused_only_in_the_windows_holding_it(tmp_path):
    path = tmp_path / "float.tif"
    pixels = RNG.random((H, W)).astype(np.float32)
    pixels[30, 40] = np.nan
    tifffile.imwrite(path, pixels, tile=(16, 16))
    with open_windows(path) as source:
        np.testing.assert_array_equal(source.read(0, 0, 16, W)[..., 0], pixels[:16])
        with pytest.raises(I2IError, match=f"cannot read image {path}: the window at row 16, column 0 holds 1 NaN"):
            source.read(16, 0, 21, W)


def test_decoded_segments_stay_within_the_cache(tmp_path):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, _pixels(3, "uint8"), tile=(16, 16), compression="zlib")
    tile_bytes = 16 * 16 * 3
    with TiffSource(path, cache_bytes=4 * tile_bytes) as source:
        for top in range(0, H, 8):
            source.read(top, 0, min(12, H - top), W)
            assert source._cached <= 4 * tile_bytes and len(source._cache) <= 4
        _same_windows(path, source)
    # a strip compressed whole would be decoded again for every window: read whole instead
    one_strip = tmp_path / "one-strip.tif"
    tifffile.imwrite(one_strip, _pixels(3, "uint8"), compression="zlib", rowsperstrip=H)
    with pytest.raises(CannotStream, match="compressed whole"):
        TiffSource(one_strip, cache_bytes=4 * tile_bytes)


@pytest.mark.parametrize("channels,dtype,compression", [(1, "uint8", "zlib"), (3, "uint8", None),
                                                         (3, "uint16", "zlib"), (4, "float32", "zlib"),
                                                         (2, "int16", None)])
def test_tiff_sink_round_trip(tmp_path, channels, dtype, compression):
    pixels = (RNG.random((H, W, channels)) * 1000).astype(dtype)
    path = tmp_path / "out.tif"
    sink = TiffSink(path, H, W, channels, dtype, tile=16, compression=compression)
    sink.write((top, pixels[top:top + 7]) for top in range(0, H, 7))  # bands across the tile rows
    np.testing.assert_array_equal(read_array(path), pixels)
    np.testing.assert_array_equal(tifffile.imread(path).reshape(pixels.shape), pixels)
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        assert tiff.is_bigtiff and page.is_tiled and (page.tilelength, page.tilewidth) == (16, 16)
    assert not [name for name in os.listdir(tmp_path) if name != "out.tif"]  # the temporary name is gone
    _same_windows(path)


def test_tiff_sink_to_an_open_file_and_tile_rows_as_they_come():
    pixels = _pixels(3, "uint8")
    sink = TiffSink(io.BytesIO(), H, W, 3, np.uint8, tile=16)
    consumed: list[int] = []

    def bands():
        for top in range(0, H, 5):
            consumed.append(top)
            yield top, pixels[top:top + 5]

    tiles = sink._tiles(sink._checked(bands()))
    next(tiles)  # the first tile is out once 16 rows came in: 4 bands of 5, not the whole image
    assert consumed == [0, 5, 10, 15]
    buffer = io.BytesIO()
    TiffSink(buffer, H, W, 3, np.uint8, tile=16).write((top, pixels[top:top + 20]) for top in range(0, H, 20))
    buffer.seek(0)
    np.testing.assert_array_equal(tifffile.imread(buffer), pixels)


@pytest.mark.parametrize("bands,message", [
    (lambda p: [(0, p[:20]), (21, p[21:])], "the band at row 21 should start at row 20"),
    (lambda p: [(0, p[:20])], "the bands ended at row 20; the image has 37 rows"),
    (lambda p: [(0, p), (H, p[:1])], "the band at row 37 has shape"),
    (lambda p: [(0, p[:, :-1])], "the band at row 0 has shape"),
    (lambda p: [(0, p.astype(np.uint16))], "holds uint16 pixels, the output is uint8"),
])
def test_sinks_refuse_bad_bands_and_leave_no_file(tmp_path, bands, message):
    pixels = _pixels(3, "uint8")
    path = tmp_path / "out.tif"
    with pytest.raises(ValueError, match=message):
        TiffSink(path, H, W, 3, np.uint8, tile=16).write(bands(pixels))
    assert not os.listdir(tmp_path)  # neither the target nor a temporary file
    with pytest.raises(ValueError, match=message):
        ArraySink(H, W, 3, np.uint8).write(bands(pixels))


def test_array_sink_and_bad_sink_options(tmp_path):
    pixels = _pixels(2, "uint16")
    sink = ArraySink(H, W, 2, np.uint16)
    sink.write([(0, pixels[:30]), (30, pixels[30:])])
    np.testing.assert_array_equal(sink.array, pixels)
    with pytest.raises(ValueError, match="called before"):
        sink.write([(0, pixels)])
    with pytest.raises(I2IError, match="cannot write TIFF with compression 'bogus'"):
        TiffSink(tmp_path / "x.tif", H, W, 1, np.uint8, compression="bogus")
    with pytest.raises(ValueError, match="multiple of 16"):
        TiffSink(tmp_path / "x.tif", H, W, 1, np.uint8, tile=20)


# ---------------------------------------------------------------------------------------------------------
# GeoTIFFs

UTM = "EPSG:32633"
TRANSFORM = (10, 0, 500000, 0, -10, 4600000)  # 10 m pixels from (500000, 4600000): an affine.Affine's first six


def _geotiff(path: Path, dtype: str = "uint16") -> np.ndarray:
    """A 3-band tiled GeoTIFF (UTM 33N, 10 m pixels, nodata 0) whose top-left 10x20 corner is nodata; one pixel has
    nodata in one band only (not a nodata pixel). Returns its (H, W, 3) pixels."""
    rasterio = pytest.importorskip("rasterio", reason="GeoTIFF windows need the optional extra i2i-toolkit[geo]")
    pixels = _pixels(3, dtype)
    pixels[:10, :20] = 0
    pixels[20, 20, 0] = 0
    with rasterio.open(path, "w", driver="GTiff", height=H, width=W, count=3, dtype=dtype, crs=UTM,
                       transform=rasterio.Affine(*TRANSFORM), nodata=0, tiled=True, blockxsize=16,
                       blockysize=16, compress="deflate") as dataset:
        dataset.write(pixels.transpose(2, 0, 1))
    return pixels


def test_geotiff_through_geo_source_and_sink_keeps_crs_transform_nodata(tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="GeoTIFF windows need the optional extra i2i-toolkit[geo]")
    path = tmp_path / "scene.tif"
    pixels = _geotiff(path)
    assert is_geotiff(path) and streams(path)
    source = open_windows(path)
    assert isinstance(source, GeoSource)
    assert source.geo.crs.to_string() == UTM and source.geo.nodata == 0
    assert tuple(source.geo.transform)[:6] == TRANSFORM
    _same_windows(path, source)
    with open_windows(path) as source:
        expected = np.zeros((H, W), bool)
        expected[:10, :20] = True  # every band is nodata there; not at (20, 20), where one band is
        np.testing.assert_array_equal(source.nodata_mask(0, 0, H, W), expected)
        np.testing.assert_array_equal(source.nodata_mask(5, 15, 10, 10), expected[5:15, 15:25])
        out = tmp_path / "out.tif"
        GeoSink(out, H, W, 3, np.uint16, source.geo, source.geo.nodata).write(
            (top, source.read(top, 0, min(10, H - top), W)) for top in range(0, H, 10))
    with rasterio.open(out) as dataset:
        assert dataset.crs.to_string() == UTM and dataset.transform == source.geo.transform
        assert dataset.nodata == 0 and dataset.profile["tiled"]
        np.testing.assert_array_equal(dataset.read().transpose(1, 2, 0), pixels)
    np.testing.assert_array_equal(read_array(out), pixels)
    assert sorted(os.listdir(tmp_path)) == ["out.tif", "scene.tif"]
    with open_windows(out) as source:  # GDAL's read errors come as one line too
        os.truncate(out, os.path.getsize(out) - 300)
        with pytest.raises(I2IError) as error:
            source.read(0, 0, H, W)
        _one_line_naming(error, out, "damaged or truncated data")


def test_geo_sink_scales_the_transform_for_another_size(tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="GeoTIFF windows need the optional extra i2i-toolkit[geo]")
    path = tmp_path / "scene.tif"
    _geotiff(path)
    with open_windows(path) as source:
        geo = source.geo
    out = tmp_path / "half.tif"
    GeoSink(out, 18, 26, 1, np.float32, geo, float("nan")).write([(0, np.ones((18, 26, 1), np.float32))])
    with rasterio.open(out) as dataset, rasterio.open(path) as original:
        assert dataset.bounds == original.bounds and np.isnan(dataset.nodata)
    with pytest.raises(I2IError, match="uint8 pixels cannot hold the nodata value -1"):
        GeoSink(out, H, W, 1, np.uint8, geo, -1)


def test_geotiff_gdal_reads_differently_keeps_geo_on_the_whole_image(tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="GeoTIFF windows need the optional extra i2i-toolkit[geo]")
    path = tmp_path / "scan.tif"
    with rasterio.open(path, "w", driver="GTiff", height=H, width=W, count=1, dtype="uint8", crs=UTM,
                       transform=rasterio.Affine(*TRANSFORM), photometric="MINISWHITE") as dataset:
        dataset.write(_pixels(1, "uint8").transpose(2, 0, 1))
    with open_windows(path) as source:  # read_array inverts MINISWHITE, GDAL does not: decoded whole as read_array
        assert isinstance(source, ArraySource) and source.geo.crs.to_string() == UTM
    _same_windows(path)


def test_geotiff_without_rasterio(tmp_path, monkeypatch):
    path = tmp_path / "scene.tif"
    _geotiff(path)
    monkeypatch.setattr(windows, "_rasterio", lambda: None)
    monkeypatch.setattr(windows, "_warned_no_rasterio", False)
    with pytest.warns(UserWarning, match=rf"{path} is a GeoTIFF.*pip install 'i2i-toolkit\[geo\]'"):
        source = open_windows(path)
    assert isinstance(source, TiffSource) and source.geo is None
    _same_windows(path, source)
    with open_windows(path) as source:  # the GDAL_NODATA tag still marks nodata
        assert source.nodata_mask(0, 0, H, W).sum() == 200
    with pytest.raises(I2IError,
                       match=r"needs the optional extra i2i-toolkit\[geo\]: pip install 'i2i-toolkit\[geo\]'"):
        GeoSink(tmp_path / "out.tif", H, W, 3, np.uint16, None, 0)


def test_is_geotiff_without_rasterio(tmp_path):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, _pixels(1, "uint8"))
    tagged = tmp_path / "tagged.tif"  # ModelTiepoint alone makes a GeoTIFF
    tifffile.imwrite(tagged, _pixels(1, "uint8"), extratags=[(33922, 12, 6, (0, 0, 0, 500000, 4600000, 0), True)])
    (tmp_path / "empty.tif").write_bytes(b"")
    assert is_geotiff(tagged) and not is_geotiff(plain) and not is_geotiff(tmp_path / "empty.tif")
    assert not is_geotiff(tmp_path / "missing.tif")
