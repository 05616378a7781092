"""Image windows: read parts of an image file and write the output band by band, so translating an image larger
than memory (20000x20000 RGB, 16-bit scans, GeoTIFFs) holds a band at a time. `open_windows` picks GeoSource (rasterio:
CRS, geotransform, nodata) for a GeoTIFF, TiffSource (tifffile: decodes only the tiles or strips a window touches) for
other TIFFs, else an ArraySource over `read_array`; each gives read_array's pixel values. The sinks take (top, rows)
bands in order; the file sinks write under a temporary name renamed at the end, so a failure leaves no half file.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile

from i2i.data.images import (_TIFF_DIRECT, _open_file, _pixel_dtype, _reason, _sentence, _stored_to_pixels,
                             read_array)
from i2i.errors import I2IError
from i2i.storage.atomic import atomic_path

__all__ = ["ArraySink", "ArraySource", "CannotStream", "GeoInfo", "GeoSink", "GeoSource", "TiffSink", "TiffSource",
           "WindowSink", "WindowSource", "is_geotiff", "open_windows", "streams"]

#: decoded tiles/strips a TiffSource keeps for re-read overlaps: a tile row of the next band (256 rows of a 20000 px
#: wide RGB image, 15 MB) and the window being read; more only adds to the peak memory of a large translation
CACHE_BYTES = 64 << 20
_GEO_TAGS = (33922, 34264, 34735)  # ModelTiepoint, ModelTransformation, GeoKeyDirectory
_GEO_EXTRA = "pip install 'i2i-toolkit[geo]'"
_warned_no_rasterio = False  # the missing-extra warning is given once per process, not once per file


@dataclass(frozen=True)
class GeoInfo:
    """What a GeoTIFF carries that its translation keeps: CRS, geotransform, nodata and the source's profile."""

    crs: Any  # rasterio CRS, or None for a file without one
    transform: Any  # affine.Affine geotransform
    nodata: float | None
    profile: dict[str, Any]  # the source's rasterio profile (driver, dtype, count, ...), for the writer


class CannotStream(I2IError):
    """The file is fine but cannot be read window by window; read it whole with read_array."""


# ---------------------------------------------------------------------------------------------------------
# Sources


class WindowSource(ABC):
    """An image read window by window: (height, width, channels) arrays of `dtype`, as read_array gives them."""

    path: Path | None
    height: int
    width: int
    channels: int
    dtype: np.dtype
    geo: GeoInfo | None = None
    _nodata: float | None = None  # the value marking nodata pixels, if the file names one

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """(height, width, channels) array of the window; the window must lie inside the image (ValueError else)."""
        self._check_window(top, left, height, width)
        array = self._read(top, left, height, width)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            # read_array refuses such files; here only the windows holding them fail, and nodata pixels (often
            # NaN in float rasters) are the engine's to fill, so they pass
            mask = self.nodata_mask(top, left, height, width)
            bad = ~np.isfinite(array) & (True if mask is None else ~mask[..., None])
            if bad.any():
                raise I2IError(f"cannot read image {self.path}: the window at row {top}, column {left} holds"
                               f" {bad.sum()} NaN or infinite values: pixels must be finite; replace or mark as nodata")
        return array

    def nodata_mask(self, top: int, left: int, height: int, width: int) -> np.ndarray | None:
        """(height, width) bool, True where the pixel is nodata (every band equals nodata or GDAL's mask says so); None
        when the source has no nodata."""
        if self._nodata is None:
            return None
        self._check_window(top, left, height, width)
        return _equals_nodata(self._read(top, left, height, width), self._nodata)

    def close(self) -> None:
        """Release the file; reads afterwards fail."""

    def __enter__(self) -> WindowSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def _read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The window, already checked to lie inside the image."""

    def _check_window(self, top: int, left: int, height: int, width: int) -> None:
        if not (height >= 1 and width >= 1 and 0 <= top <= self.height - height and 0 <= left <= self.width - width):
            raise ValueError(f"the window of {width}x{height} at row {top}, column {left} does not lie inside the"
                             f" {self.width}x{self.height} image {self.path}")


def _holds(dtype: np.dtype, value: float) -> bool:
    """Whether pixels of `dtype` can hold `value` exactly (floats hold NaN too)."""
    return dtype.kind == "f" or (math.isfinite(value) and value == int(value) and
                                 np.iinfo(dtype).min <= value <= np.iinfo(dtype).max)


def _equals_nodata(array: np.ndarray, nodata: float) -> np.ndarray:
    """(h, w) bool: True where every channel equals `nodata` (NaN matches NaN)."""
    if not _holds(array.dtype, nodata):
        return np.zeros(array.shape[:2], bool)  # a value these pixels cannot hold marks none of them
    if math.isnan(nodata):
        return np.isnan(array).all(axis=2)
    # compared in the pixels' own dtype, so a float64 nodata matches the float32 value it was stored as
    return (array == array.dtype.type(nodata)).all(axis=2)


class ArraySource(WindowSource):
    """An in-memory (H, W, C) array (PNG/JPEG/npy decoded whole by read_array) read by window."""

    def __init__(self, array: np.ndarray, path: Path | None = None, geo: GeoInfo | None = None) -> None:
        array = np.asarray(array)
        array = array[..., None] if array.ndim == 2 else array
        if array.ndim != 3 or 0 in array.shape:
            raise ValueError(f"an array of shape {array.shape} is not an image: images are (H, W, C) arrays")
        self.array = np.ascontiguousarray(array, dtype=_pixel_dtype(array.dtype))
        self.path, self.geo = (Path(path) if path is not None else None), geo
        self.height, self.width, self.channels = self.array.shape
        self.dtype, self._nodata = self.array.dtype, geo.nodata if geo else None

    def _read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        # a copy: callers may write into a window without changing the image
        return self.array[top:top + height, left:left + width].copy()


def _cannot_read(path: Path | str | None, exc: BaseException) -> I2IError:
    """The one-line I2IError for a failed read; CannotStream (the file is fine, reading by window is out) stays one."""
    if isinstance(exc, CannotStream):
        return CannotStream(f"cannot read {path} by window: {exc}; read it whole with read_array")
    return I2IError(f"cannot read image {path}: {_reason(exc, path or '')}")


def _open_tiff(file: BinaryIO, path: Path) -> tifffile.TiffFile:
    """tifffile's view of `file`; a damaged header as a ValueError saying so."""
    try:
        # name: tifffile takes a file's name from the object, and one opened from a descriptor has none
        return tifffile.TiffFile(file, name=path.name)
    except tifffile.TiffFileError as exc:  # e.g. "corrupted IFD structure" for a file cut inside its header
        raise ValueError(f"damaged or truncated TIFF ({_sentence(str(exc))})") from exc


def _first_image(tiff: tifffile.TiffFile, size: int) -> tifffile.TiffPage:
    """The TIFF's first image if it can be read by window (else CannotStream), checked to lie inside the file."""
    if not tiff.series:
        raise ValueError("the TIFF holds no image")
    page = (series := tiff.series[0]).keyframe
    if len(series.pages) != 1 or math.prod(series.shape) != math.prod(page.shape):
        raise CannotStream(f"its first image is a stack of {len(series.pages)} pages, read as channels")
    if page.shaped[1] != 1:
        raise CannotStream("its image is a volume (tiles with depth)")
    if page.photometric not in _TIFF_DIRECT:
        raise CannotStream(f"its {getattr(page.photometric, 'name', page.photometric)} pixels become RGB when read")
    if (orientation := int(page.tags.valueof(274, 1))) != 1:
        raise CannotStream(f"its orientation tag ({orientation}) turns the image when read")
    end = int((np.asarray(page.dataoffsets, np.int64) + np.asarray(page.databytecounts, np.int64)).max(initial=0))
    if end > size:
        raise ValueError(f"the file is truncated ({size} bytes; its image data runs to byte {end})")
    return page


class TiffSource(WindowSource):
    """A TIFF read with tifffile: a window decodes only the tiles or strips it touches (kept in a small LRU cache)."""

    def __init__(self, path: Path | str, cache_bytes: int = CACHE_BYTES) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # the engine may read from a prefetching thread
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached, self._cache_bytes = 0, cache_bytes
        self._tiff: tifffile.TiffFile | None = None
        try:
            self._file = _open_file(path)
        except Exception as exc:
            raise _cannot_read(path, exc) from exc
        try:
            self._tiff = _open_tiff(self._file, self.path)
            self._setup(_first_image(self._tiff, os.fstat(self._file.fileno()).st_size))
        except Exception as exc:
            self.close()
            raise _cannot_read(path, exc) from None if isinstance(exc, CannotStream) else exc

    def _setup(self, page: tifffile.TiffPage) -> None:
        planes, _, height, width, contig = page.shaped
        self.height, self.width, self.channels = height, width, planes * contig
        self._planes, self._contig = planes, contig
        if page.dtype is None:
            raise ValueError(f"its {page.bitspersample}-bit samples (SampleFormat {page.sampleformat}) are not"
                             " supported")
        self._stored, self._photometric, self._bits = np.dtype(page.dtype), page.photometric, page.bitspersample
        self.dtype = _pixel_dtype(_stored_to_pixels(np.empty(0, self._stored), self._photometric, self._bits).dtype)
        self._offsets, self._counts = page.dataoffsets, page.databytecounts
        self._fill = page.nodata  # what tifffile puts in tiles the file leaves out (GDAL sparse files)
        if (nodata := page.tags.valueof(42113)) is not None:  # GDAL_NODATA: a GeoTIFF's, kept without rasterio
            with contextlib.suppress(ValueError):
                self._nodata = float(str(nodata).strip("\0 "))
        self._kind = "tile" if page.is_tiled else "strip"
        self._seg_h, self._seg_w = ((page.tilelength, page.tilewidth) if page.is_tiled else
                                    (min(page.rowsperstrip or height, height), width))
        self._down, self._across = math.ceil(height / self._seg_h), math.ceil(width / self._seg_w)
        # Uncompressed strips are read row by row straight from the file: tifffile writes uncompressed images as
        # one strip, which would otherwise be decoded whole for every window.
        self._raw_rows = (not page.is_tiled and page.compression == 1 and page.predictor == 1 and
                          page.fillorder == 1 and page.bitspersample in (8, 16, 32, 64) and
                          self._stored != np.bool_)
        self._file_dtype = self._stored.newbyteorder(self._tiff.byteorder)  # raw rows: the samples as stored
        if self._raw_rows:
            return
        if (segment := self._seg_h * self._seg_w * contig * self._stored.itemsize) > self._cache_bytes // 4:
            raise CannotStream(f"its {self._kind}s of {segment / 2**20:.1f} MB are compressed whole, so every window"
                               " would decode one")
        self._decode, self._jpegtables = page.decode, page.jpegtables
        self._compression = getattr(page.compression, "name", page.compression)
        # One segment decoded now, so a compression tifffile cannot decode is found before the translation starts.
        if (first := next((i for i, count in enumerate(self._counts) if count), None)) is not None:
            self._segment(first)

    def close(self) -> None:
        """Close the file; reads afterwards fail."""
        if self._tiff is not None:
            self._tiff.close()
        self._file.close()
        self._cache.clear()

    def _read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        if self._file.closed:
            raise ValueError(f"the window source of {self.path} is closed")
        try:
            with self._lock:
                data = self._assemble(top, left, height, width)
            return np.ascontiguousarray(_stored_to_pixels(data, self._photometric, self._bits), dtype=self.dtype)
        except Exception as exc:
            raise _cannot_read(self.path, exc) from exc

    def _assemble(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The window's stored samples, (height, width, channels), from every segment it overlaps."""
        out = np.empty((height, width, self.channels), self._stored)
        per_plane = self._down * self._across
        rows = range(top // self._seg_h, (top + height - 1) // self._seg_h + 1)
        columns = range(left // self._seg_w, (left + width - 1) // self._seg_w + 1)
        for plane in range(self._planes):
            channels = slice(plane * self._contig, (plane + 1) * self._contig)
            for row in rows:
                y0 = row * self._seg_h
                ya, yb = max(top, y0), min(top + height, y0 + self._seg_h)
                for column in columns:
                    x0 = column * self._seg_w
                    xa, xb = max(left, x0), min(left + width, x0 + self._seg_w)
                    index = plane * per_plane + row * self._across + column
                    target = out[ya - top:yb - top, xa - left:xb - left, channels]
                    if self._raw_rows:  # strips span the width: x0 is 0
                        target[...] = self._raw(index, ya - y0, yb - y0)[:, xa:xb]
                    elif (segment := self._segment(index)) is None:
                        target[...] = self._fill
                    elif (part := segment[ya - y0:yb - y0, xa - x0:xb - x0]).shape == target.shape:
                        target[...] = part
                    else:
                        raise ValueError(f"damaged image data ({self._kind} {index} decodes to too few pixels)")
        return out

    def _bytes(self, offset: int, count: int, what: str) -> bytes:
        """`count` bytes at `offset`, or ValueError saying the file is truncated (tifffile would pass short data on)."""
        self._file.seek(offset)
        if len(data := self._file.read(count)) < count:
            raise ValueError(f"the file is truncated ({what} needs bytes {offset} to {offset + count}, the file ends"
                             f" at {offset + len(data)})")
        return data

    def _raw(self, index: int, first: int, stop: int) -> np.ndarray:
        """Rows [first, stop) of uncompressed strip `index` as (rows, width, contig samples)."""
        row_bytes = self.width * self._contig * self._file_dtype.itemsize
        if stop * row_bytes > self._counts[index]:
            raise ValueError(f"damaged image data (strip {index} holds fewer bytes than its rows need)")
        data = self._bytes(self._offsets[index] + first * row_bytes, (stop - first) * row_bytes, f"strip {index}")
        return np.frombuffer(data, self._file_dtype).reshape(stop - first, self.width, self._contig)

    def _segment(self, index: int) -> np.ndarray | None:
        """Tile or strip `index` decoded as (rows, columns, contig samples), None for one the file leaves out."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        if not (count := self._counts[index]):
            return None
        data = self._bytes(self._offsets[index], count, f"{self._kind} {index}")
        try:
            decoded = self._decode(data, index, jpegtables=self._jpegtables)[0]
        except Exception as exc:
            if "imagecodecs" in str(exc):  # LZW, JPEG and others: tifffile decodes them through imagecodecs
                raise CannotStream(f"its {self._compression} compression needs the imagecodecs package (pip install"
                                   " imagecodecs)") from None
            raise ValueError(f"damaged image data in {self._kind} {index} ({_sentence(str(exc))})") from exc
        decoded = decoded.reshape(decoded.shape[-3:])  # drop the depth axis, always 1 here
        self._cache[index] = decoded
        self._cached += decoded.nbytes
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            self._cached -= self._cache.popitem(last=False)[1].nbytes
        return decoded


def _rasterio() -> Any | None:
    """The rasterio module, or None when the optional extra i2i-toolkit[geo] is not installed."""
    with contextlib.suppress(ImportError):
        import rasterio
        return rasterio
    return None


def _geo_info(dataset: Any) -> GeoInfo:
    return GeoInfo(crs=dataset.crs, transform=dataset.transform, nodata=dataset.nodata, profile=dict(dataset.profile))


class GeoSource(WindowSource):
    """A GeoTIFF read by window through rasterio (GDAL), its CRS, geotransform and nodata in `geo`; needs
    i2i-toolkit[geo]."""

    def __init__(self, path: Path | str) -> None:
        rasterio = _rasterio()
        if rasterio is None:
            raise I2IError(f"reading {path} with its CRS and geotransform needs the optional extra i2i-toolkit[geo]:"
                           f" {_GEO_EXTRA}")
        self.path = Path(path)
        self._lock, self._dataset = threading.Lock(), None
        # tifffile looks first: GDAL gives palette indices, raw MINISWHITE and 0/1 bilevel samples where read_array
        # gives RGB, inverted values and 0/255, and would ignore the orientation tag read_array applies
        try:
            with _open_file(path) as file, _open_tiff(file, self.path) as tiff:
                page = _first_image(tiff, os.fstat(file.fileno()).st_size)
                if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE or page.bitspersample < 8:
                    raise CannotStream("GDAL reads its bilevel or MINISWHITE samples differently")
            self._dataset = rasterio.open(self.path)
            self.dtype = _pixel_dtype(np.dtype(self._dataset.dtypes[0]))  # GDAL gives every band one dtype
        except Exception as exc:
            self.close()
            raise _cannot_read(path, exc) from None if isinstance(exc, CannotStream) else exc
        self.height, self.width, self.channels = self._dataset.height, self._dataset.width, self._dataset.count
        self.geo = _geo_info(self._dataset)
        self._nodata = self.geo.nodata
        flags = {flag for band in self._dataset.mask_flag_enums for flag in band}
        # GDAL's mask also covers an internal mask band or alpha, which a file can have without a nodata value
        self._masked = self._nodata is not None or flags != {rasterio.enums.MaskFlags.all_valid}

    def close(self) -> None:
        """Close the dataset; reads afterwards fail."""
        if self._dataset is not None:
            self._dataset.close()

    def _gdal(self, method: str, top: int, left: int, height: int, width: int) -> np.ndarray:
        from rasterio.windows import Window
        try:
            with self._lock:
                return getattr(self._dataset, method)(window=Window(left, top, width, height))
        except Exception as exc:  # GDAL's errors for missing or damaged blocks come as RasterioIOError
            why = _sentence(str(exc.__cause__ or exc))  # rasterio's own message only points at GDAL's, its cause
            raise I2IError(f"cannot read image {self.path}: damaged or truncated data ({why})") from exc

    def _read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        data = self._gdal("read", top, left, height, width)  # (bands, h, w)
        return np.ascontiguousarray(data.transpose(1, 2, 0), dtype=self.dtype)

    def nodata_mask(self, top: int, left: int, height: int, width: int) -> np.ndarray | None:
        """(height, width) bool, True where GDAL's mask marks the pixel as nodata (every band equals nodata, or an
        internal mask or alpha says so); None when the file has neither."""
        if not self._masked:
            return None
        self._check_window(top, left, height, width)
        return self._gdal("dataset_mask", top, left, height, width) == 0


def is_geotiff(path: Path | str) -> bool:
    """Whether `path` is a TIFF with GeoTIFF tags (GeoKeyDirectory, ModelTiepoint or ModelTransformation); reads only
    its header, and False for anything that is not a readable TIFF."""
    try:
        with _open_file(path) as file, tifffile.TiffFile(file, name=Path(path).name) as tiff:
            return any(code in tiff.pages.first.tags for code in _GEO_TAGS)
    except Exception:  # not a TIFF (tifffile checks the magic bytes first), or a damaged one: the reader says which
        return False


def open_windows(path: Path | str) -> WindowSource:
    """The best window reader for PATH: GeoSource for a GeoTIFF when rasterio is installed, TiffSource for other
    TIFFs that can be read by window, else an ArraySource over read_array(path)."""
    global _warned_no_rasterio
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):  # the suffix decides as in read_array
        return ArraySource(read_array(path), path)
    if is_geotiff(path):
        if _rasterio() is not None:
            try:
                return GeoSource(path)
            except CannotStream:  # pixels as read_array decodes them whole, the geodata still from GDAL
                array = read_array(path)
                with _rasterio().open(path) as dataset:
                    return ArraySource(array, path, geo=_geo_info(dataset))
        if not _warned_no_rasterio:
            _warned_no_rasterio = True
            warnings.warn(f"{path} is a GeoTIFF, but without rasterio its CRS and geotransform will not be carried"
                          f" to the output (warned once): install the optional extra: {_GEO_EXTRA}", stacklevel=2)
    try:
        return TiffSource(path)
    except CannotStream as exc:
        array = read_array(path)
        if array.nbytes > CACHE_BYTES:
            # worth saying: a large image read whole may not fit where a windowed read would
            warnings.warn(f"{path}: decoded whole ({array.nbytes >> 20} MB) because {exc}", stacklevel=2)
        return ArraySource(array, path)


def streams(path: Path | str) -> bool:
    """Whether open_windows reads PATH window by window (no whole decode); a damaged file raises I2IError as
    open_windows would."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        reader = GeoSource if is_geotiff(path) and _rasterio() is not None else TiffSource
        reader(path).close()
    except CannotStream:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# Sinks


class WindowSink(ABC):
    """An output image of height x width x channels `dtype` pixels written band by band, top to bottom, once."""

    def _init(self, height: int, width: int, channels: int, dtype: Any) -> None:
        if min(height, width, channels) < 1:
            raise ValueError(f"an image of {width}x{height} pixels and {channels} channels is empty")
        self.height, self.width, self.channels = int(height), int(width), int(channels)
        self.dtype, self._written = _pixel_dtype(np.dtype(dtype)), False

    @abstractmethod
    def write(self, bands: Iterable[tuple[int, np.ndarray]]) -> None:
        """Consume (top, rows) bands in order, top to bottom; rows are (h, W, C) arrays of the output dtype."""

    def _checked(self, bands: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
        """The bands, checked to follow on without gaps, in the sink's shape and dtype, and to cover every row."""
        if self._written:
            raise ValueError("a sink's write takes all the bands in one call, and was called before")
        self._written = True
        expected = 0
        for top, rows in bands:
            rows = np.asarray(rows)
            if top != expected:
                raise ValueError(f"the band at row {top} should start at row {expected}: bands come in order, top to"
                                 " bottom, without gaps or overlaps")
            if rows.ndim != 3 or rows.shape[1:] != (self.width, self.channels) or \
                    not 0 < len(rows) <= self.height - top:
                raise ValueError(f"the band at row {top} has shape {rows.shape}, not (h, {self.width},"
                                 f" {self.channels}) within the {self.height} rows")
            if rows.dtype != self.dtype:
                raise ValueError(f"the band at row {top} holds {rows.dtype} pixels, the output is {self.dtype}")
            yield top, rows
            expected = top + rows.shape[0]
        if expected != self.height:
            raise ValueError(f"the bands ended at row {expected}; the image has {self.height} rows")


class ArraySink(WindowSink):
    """Collects the bands into `self.array`, an (H, W, C) array."""

    def __init__(self, height: int, width: int, channels: int, dtype: Any) -> None:
        self._init(height, width, channels, dtype)
        self.array = np.zeros((self.height, self.width, self.channels), self.dtype)

    def write(self, bands: Iterable[tuple[int, np.ndarray]]) -> None:
        """Copy each band into `self.array`."""
        for top, rows in self._checked(bands):
            self.array[top:top + rows.shape[0]] = rows


class TiffSink(WindowSink):
    """A tiled BigTIFF written tile row by tile row as the bands arrive (a Path is written under a temporary name
    and renamed at the end; an open binary file is written in place)."""

    def __init__(self, file: Path | BinaryIO, height: int, width: int, channels: int, dtype: Any, tile: int = 256,
                 compression: str | None = "zlib") -> None:
        self._init(height, width, channels, dtype)
        if tile < 16 or tile % 16:
            raise ValueError(f"tile {tile}: TIFF tiles are a positive multiple of 16 pixels")
        self.file, self.tile, self.compression = file, tile, compression
        try:  # an unknown or unavailable compression fails here, before any band is computed
            tifffile.imwrite(io.BytesIO(), np.zeros((16, 16), np.uint8), tile=(16, 16), compression=compression)
        except Exception as exc:
            raise I2IError(f"cannot write TIFF with compression {compression!r}: {_sentence(str(exc))}; use 'zlib'"
                           " or None") from exc

    def write(self, bands: Iterable[tuple[int, np.ndarray]]) -> None:
        """Write the bands as tiles; the file appears under its name only once complete."""
        name = self.file if isinstance(self.file, (str, Path)) else getattr(self.file, "name", "the output file")
        try:
            if isinstance(self.file, (str, Path)):
                with atomic_path(Path(self.file)) as tmp:
                    self._write(tmp, bands)
            else:
                self._write(self.file, bands)
        except OSError as exc:  # a full disk or a read-only folder: the user's to fix
            raise I2IError(f"cannot write image {name}: {_reason(exc, name)}") from exc

    def _write(self, target: Path | BinaryIO, bands: Iterable[tuple[int, np.ndarray]]) -> None:
        tiles = self._tiles(self._checked(bands))
        c, t = self.channels, self.tile
        shape = (self.height, self.width) if c == 1 else (self.height, self.width, c)
        with tifffile.TiffWriter(target, bigtiff=True) as writer:
            # buffersize: tifffile otherwise gathers 512 MB of tiles for its compressing threads; one tile row
            # keeps the memory at a tile row plus the incoming band
            writer.write(tiles, shape=shape, dtype=self.dtype, tile=(t, t),
                         photometric="rgb" if c == 3 else "minisblack", planarconfig="contig" if c > 1 else None,
                         compression=self.compression, metadata=None,
                         buffersize=t * math.ceil(self.width / t) * t * c * self.dtype.itemsize)

    def _tiles(self, bands: Iterator[tuple[int, np.ndarray]]) -> Iterator[np.ndarray]:
        """Full tile x tile tiles in row-major order, each tile row yielded as soon as its rows have arrived."""
        t, filled, done = self.tile, 0, 0
        padded = math.ceil(self.width / t) * t
        buffer = np.zeros((t, padded, self.channels), self.dtype)  # edge tiles are padded with zeros
        for _, rows in bands:
            used = 0
            while used < len(rows):
                n = min(t - filled, len(rows) - used)
                buffer[filled:filled + n, :self.width] = rows[used:used + n]
                filled, used = filled + n, used + n
                if last := done + filled == self.height:
                    # tifffile stops pulling after the last tile (and closes this generator): the check that no
                    # band follows runs before that tile is handed over
                    deque(bands, maxlen=0)
                if filled == t or last:
                    buffer[filled:] = 0
                    for x in range(0, padded, t):
                        # copies: tifffile may hold several tiles for its threads while the buffer is refilled
                        tile = buffer[:, x:x + t].copy()
                        yield tile[..., 0] if self.channels == 1 else tile
                    done, filled = done + filled, 0


class GeoSink(WindowSink):
    """A tiled GeoTIFF written through rasterio with the source's CRS and geotransform and the given nodata value;
    needs i2i-toolkit[geo]."""

    def __init__(self, path: Path, height: int, width: int, channels: int, dtype: Any, geo: GeoInfo,
                 nodata_value: float | None) -> None:
        if _rasterio() is None:
            raise I2IError(f"writing the GeoTIFF {path} needs the optional extra i2i-toolkit[geo]: {_GEO_EXTRA}")
        self._init(height, width, channels, dtype)
        if nodata_value is not None and not _holds(self.dtype, nodata_value):
            raise I2IError(f"cannot write the GeoTIFF {path}: its {self.dtype} pixels cannot hold the nodata value"
                           f" {nodata_value}; write float32 or choose another nodata value")
        self.path, self.geo, self.nodata_value = Path(path), geo, nodata_value

    def write(self, bands: Iterable[tuple[int, np.ndarray]]) -> None:
        """Write the bands as tiled GeoTIFF rows; the file appears under its name only once complete."""
        import rasterio
        transform = self.geo.transform
        source = (self.geo.profile.get("width") or self.width, self.geo.profile.get("height") or self.height)
        if transform is not None and source != (self.width, self.height):  # the same ground in other pixels
            scale = rasterio.Affine.scale(source[0] / self.width, source[1] / self.height)
            transform = transform @ scale if hasattr(transform, "__matmul__") else transform * scale  # affine < 3
        # photometric as TiffSink and write_array mark the bands; GDAL would make a 4th band of bytes alpha
        profile = dict(driver="GTiff", height=self.height, width=self.width, count=self.channels,
                       dtype=self.dtype.name, crs=self.geo.crs, transform=transform, nodata=self.nodata_value,
                       tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER", compress="deflate",
                       interleave="pixel", photometric="RGB" if self.channels == 3 else "MINISBLACK")
        try:
            with atomic_path(self.path) as tmp, rasterio.open(tmp, "w", **profile) as dataset:
                for top, rows in self._checked(bands):
                    window = rasterio.windows.Window(0, top, self.width, len(rows))
                    dataset.write(rows.transpose(2, 0, 1), window=window)
        except (OSError, rasterio.errors.RasterioError) as exc:
            raise I2IError(f"cannot write image {self.path}: {_sentence(str(exc))}") from exc
