"""Images of any size: `i2i translate` in tiles (--tile, --overlap, --blend, --norm-stats, --memory-budget), TIFFs
read and written window by window, whole-image instance-norm statistics, and bad tiling input as one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import error_line
from test_deep_images import Identity
from i2i.api import create
from i2i.data.images import read_array
from i2i.storage.checkpoint import part_metadata
from i2i.tiles.engine import translate_tensor
from i2i.tiles.plan import BLENDS, Tiling, plan_axis
from i2i.tools.generators import run_generator

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_RESNET = {"blocks": 1, "channels": 4}


class Identity4(Identity):
    """The identity, declaring a size multiple of 4 (as two downsamplings would): tiles and padding are exercised,
    and what comes out must be exactly what went in. It does not declare its norms (`tile_norms`)."""

    name = "identity4-test"
    size_multiple = 4


@pytest.fixture
def identity16(depth_generator_file):
    """A generator file of the 4-multiple identity with the 16-bit value mapping a run of 16-bit data records."""
    return depth_generator_file(Identity4, {"in_channels": 1})


def resnet_file(tmp_path: Path, seed: int = 0, **options) -> Path:
    """A small ResNet generator file (instance norm, random weights) as a run would save it."""
    torch.manual_seed(seed)
    options = {**SMALL_RESNET, **options}
    net = create("generator", "resnet", **options)
    file = tmp_path / f"resnet-{seed}.safetensors"
    save_file(net.state_dict(), file, metadata=part_metadata("generator", "resnet", options))
    return file


def smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An 8-bit RGB picture with structure at several scales (noise is not what networks see)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(11 * x * y)], -1)
    picture = 127.5 + 90 * base + rng.normal(0, 12, (height, width, 3))
    return np.clip(picture, 0, 255).astype(np.uint8)


def test_an_identity_generator_gives_an_odd_sized_16_bit_image_back_exactly_through_tiles(cli, tmp_path,
                                                                                           identity16):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 65536, (75, 61), dtype=np.uint16)  # odd sides: padded to 76 x 64, then cropped
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "stripped.tif", image, rowsperstrip=7)
    tifffile.imwrite(tmp_path / "in" / "tiled.tif", image, tile=(16, 16), compression="zlib")
    Image.fromarray(image).save(tmp_path / "in" / "slice.png")
    for blend in BLENDS:
        out = tmp_path / f"out-{blend}"
        result = cli("translate", identity16, tmp_path / "in", "--out", out, "--tile", 24, "--overlap", 8,
                     "--blend", blend, "--device", "cpu")
        assert result.code == 0, result.err
        for name in ("stripped.tif", "tiled.tif", "slice.png"):
            back = read_array(out / name)
            assert back.dtype == np.uint16 and back.shape == (75, 61, 1), (blend, name)
            assert np.array_equal(back[..., 0], image), (blend, name)
    # the identity does not say which of its layers normalize: said once, and it is tiled all the same
    assert "does not declare its normalization layers (Generator.tile_norms)" in result.err
    with tifffile.TiffFile(out / "tiled.tif") as tiff:  # written window by window: a tiled BigTIFF
        assert tiff.is_bigtiff and tiff.pages[0].is_tiled


def test_whole_image_statistics_match_the_untiled_output_and_per_tile_ones_do_not():
    torch.manual_seed(0)
    generator = create("generator", "resnet", **SMALL_RESNET).eval()
    image = torch.from_numpy(smooth_rgb(120, 136)).permute(2, 0, 1).float() / 127.5 - 1
    whole = run_generator(generator, image[None])[0]
    differences = {}
    for stats in ("image", "sample", "thumbnail", "tile"):
        tiled = translate_tensor(generator, image, Tiling(overlap=32, norm_stats=stats, stats_side=64), 64)
        assert tiled.shape == whole.shape
        differences[stats] = float((tiled - whole).abs().mean() * 127.5)  # in 0..255 units
    # what is left is the tiles' borders, which see less context than the whole image gives (64 px tiles here)
    assert differences["image"] < 1.0, differences
    assert differences["image"] * 5 < differences["tile"], differences
    # a sample or thumbnail as large as the image is the image: its exact statistics, as measured tile by tile
    for stats in ("sample", "thumbnail"):
        exact = translate_tensor(generator, image, Tiling(overlap=32, norm_stats=stats, stats_side=1000), 64)
        assert float((exact - whole).abs().mean() * 127.5) == pytest.approx(differences["image"], abs=0.01)


def test_tiles_are_planned_on_the_size_multiple_and_own_every_pixel_once():
    axis = plan_axis(1000, 256, 64, 4)
    assert axis.starts[0] == 0 and axis.starts[-1] + axis.size == 1000 and axis.size <= 256
    assert all(start % 4 == 0 for start in axis.starts) and axis.size % 4 == 0
    # as few tiles as cover it with the overlap asked for, spread evenly: the overlap costs no more than it must
    overlaps = [before + axis.size - after for before, after in zip(axis.starts, axis.starts[1:])]
    assert len(axis.starts) == 5 and 64 <= min(overlaps) <= max(overlaps) < 64 + 2 * 4
    assert axis.owned[0][0] == 0 and axis.owned[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(axis.owned, axis.owned[1:]))
    for blend in BLENDS:
        assert float(axis.coverage(blend).min()) > 0, blend
    single = plan_axis(200, 256, 64, 4)
    assert single.starts == (0,) and single.size == 200


def test_a_tiff_too_large_for_the_memory_budget_is_tiled_with_a_note_and_looks_like_the_whole(cli, tmp_path):
    file = resnet_file(tmp_path)
    picture = smooth_rgb(150, 170)
    tifffile.imwrite(tmp_path / "big.tif", picture, tile=(32, 32), photometric="rgb")
    Image.fromarray(picture).save(tmp_path / "big.png")
    whole = cli("translate", file, tmp_path / "big.png", "--out", tmp_path / "whole", "--device", "cpu")
    assert whole.code == 0 and "note:" not in whole.err, whole.err
    tiled = cli("translate", file, tmp_path / "big.tif", "--out", tmp_path / "tiled", "--device", "cpu",
                "--memory-budget", "0.001", "--norm-stats", "image")
    assert tiled.code == 0, tiled.err
    note = " ".join(tiled.err.split())
    assert "more than the memory budget of 0.001 GiB (--memory-budget)" in note and "px tiles" in note, note
    assert "tiles of big.tif" in note and "ETA" in note  # progress over the tiles, with an ETA
    a = np.asarray(Image.open(tmp_path / "whole" / "big.png")).astype(np.int64)
    b = read_array(tmp_path / "tiled" / "big.tif").astype(np.int64)
    assert a.shape == b.shape == (150, 170, 3)
    assert np.abs(a - b).mean() < 2.0  # 64 px tiles: their borders see less context than the whole image
    index = (tmp_path / "tiled" / "index.html").read_text()
    assert ".thumbnails/big.tif.output.png" in index  # browsers show no TIFF: the page shows a thumbnail
    assert Image.open(tmp_path / "tiled" / ".thumbnails" / "big.tif.output.png").size[0] <= 512


def test_bad_tiling_input_is_one_line_naming_the_flag_or_the_file(cli, tmp_path):
    file = resnet_file(tmp_path)
    Image.fromarray(smooth_rgb(40, 40)).save(tmp_path / "a.png")
    line = error_line(cli("translate", file, tmp_path / "a.png", "--out", tmp_path / "o", "--tile", 2))
    assert "--tile 2" in line and "smallest tile this generator takes (8 px" in line, line
    line = error_line(cli("translate", file, tmp_path / "a.png", "--out", tmp_path / "o", "--tile", 30))
    assert "--tile 30 is not a multiple of 4" in line and "--tile 32 or 28" in line, line
    line = error_line(cli("translate", file, tmp_path / "a.png", "--out", tmp_path / "o", "--tile", 32,
                          "--overlap", 32))
    assert "--overlap 32 must be smaller than --tile 32" in line, line
    # a truncated TIFF and an image of the wrong band count are named, and skipped
    (tmp_path / "bad").mkdir()
    tifffile.imwrite(tmp_path / "bad" / "cut.tif", smooth_rgb(64, 64), tile=(16, 16), photometric="rgb")
    data = (tmp_path / "bad" / "cut.tif").read_bytes()
    (tmp_path / "bad" / "cut.tif").write_bytes(data[:len(data) // 2])
    tifffile.imwrite(tmp_path / "bad" / "five.tif", np.zeros((64, 64, 5), np.uint8), tile=(16, 16),
                     photometric="minisblack", planarconfig="contig")
    result = cli("translate", file, tmp_path / "bad", "--out", tmp_path / "o", "--tile", 32, "--device", "cpu")
    assert result.code == 2 and "translated 0 images" in result.out, result.out + result.err
    assert "nothing translated: all 2 inputs were skipped" in error_line(result)
    err = " ".join(result.err.split())
    assert "cut.tif" in err and "truncated" in err, err
    assert "five.tif has 5 bands" in err, err
    assert "Traceback" not in result.err


def test_stock_generators_declare_their_instance_norms():
    assert len(create("generator", "resnet", **SMALL_RESNET).tile_norms()) == 1 + 2 + 2 * 1 + 2  # in, down, blocks, up
    assert create("generator", "unet", downs=3, channels=4, norm="batch").tile_norms() == []
    assert len(create("generator", "unet", downs=3, channels=4, norm="instance").tile_norms()) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (tiles on the GPU, blending on the CPU)")
def test_tiles_run_on_cuda_and_match_the_cpu():
    torch.manual_seed(0)
    generator = create("generator", "resnet", **SMALL_RESNET).eval()
    image = torch.from_numpy(smooth_rgb(96, 112)).permute(2, 0, 1).float() / 127.5 - 1
    tiling = Tiling(overlap=16, norm_stats="image", batch_size=4)
    cpu = translate_tensor(generator, image, tiling, 48)
    cuda = translate_tensor(generator.cuda(), image, tiling, 48)
    assert cuda.device.type == "cpu" and float((cpu - cuda).abs().max()) < 1e-3


def test_geotiffs_keep_crs_transform_and_nodata(cli, tmp_path):
    rasterio = pytest.importorskip("rasterio", reason="GeoTIFFs need the optional extra i2i-toolkit[geo] (rasterio)")
    from rasterio.transform import from_origin

    file = resnet_file(tmp_path)
    picture = smooth_rgb(80, 96).transpose(2, 0, 1).copy()
    picture[:, :10, :20] = 0  # a nodata corner
    transform = from_origin(500000.0, 4100000.0, 0.5, 0.5)
    profile = {"driver": "GTiff", "height": 80, "width": 96, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": transform, "nodata": 0, "tiled": True, "blockxsize": 32, "blockysize": 32}
    with rasterio.open(tmp_path / "scene.tif", "w", **profile) as dst:
        dst.write(picture)
    result = cli("translate", file, tmp_path / "scene.tif", "--out", tmp_path / "out", "--tile", 32,
                 "--device", "cpu")
    assert result.code == 0, result.err
    with rasterio.open(tmp_path / "out" / "scene.tif") as src:
        assert src.crs.to_epsg() == 32633 and src.transform == transform
        assert src.nodata == 0 and (src.width, src.height, src.count) == (96, 80, 3)
        out = src.read()
    assert (out[:, :10, :20] == 0).all()  # nodata stays nodata
    assert (out[:, 10:, 20:] != 0).any()


def test_a_png_over_pils_decompression_bomb_limit_is_one_line_suggesting_tiff(cli, tmp_path, monkeypatch):
    file = resnet_file(tmp_path)
    Image.fromarray(smooth_rgb(60, 60)).save(tmp_path / "huge.png")  # 3600 pixels: "huge" under the limit below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    result = cli("translate", file, tmp_path / "huge.png", "--out", tmp_path / "out", "--device", "cpu")
    err = " ".join(result.err.split())
    assert "translated 0 images" in result.out and "Traceback" not in result.err, result.err
    expected = "the image (0.0036 megapixels) is over PIL's decompression bomb limit of 0.002 megapixels"
    assert f"{tmp_path / 'huge.png'}: {expected}" in err, err
    assert "save it as a tiled TIFF" in err
