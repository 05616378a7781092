"""Beyond 8-bit RGB: 16-bit grayscale, N-band TIFF and .npy data train, resume, translate back into their own depth
and format, and bad channel counts or dtypes are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors import safe_open
from torch import nn

import i2i
from conftest import RECIPES, assert_same_final_state, error_line
from i2i.api import Generator
from i2i.data.images import read_array
from i2i.data.values import ValueMap
from i2i.storage.checkpoint import VALUES_KEY

pytestmark = pytest.mark.usefixtures("one_thread")

CYCLEGAN = RECIPES / "cyclegan.toml"
PIX2PIX = RECIPES / "pix2pix.toml"
TINY = ["--set", "data.load_size=36", "--set", "data.crop_size=32", "--set", "data.workers=0",
        "--set", "generator.channels=4", "--set", "discriminator.channels=4", "--set", "train.log_every=1",
        "--set", "train.checkpoint_every=2", "--set", "train.samples=1", "--set", "train.max_steps=4"]
CYCLE_TINY = [*TINY, "--set", "generator.blocks=1"]
PIX2PIX_TINY = [*TINY, "--set", "generator.downs=4"]


def ramp16(seed: int, size: int = 40) -> np.ndarray:
    """A 16-bit grayscale image whose values spread over the whole 0..65535 range (not just 0..255)."""
    rng = np.random.default_rng(seed)
    smooth = np.linspace(0, 65535, size * size).reshape(size, size)
    return np.clip(smooth + rng.normal(0, 3000, (size, size)), 0, 65535).astype(np.uint16)


def write_png16(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)  # 2-D uint16 -> a 16-bit grayscale PNG
    return path


def unpaired16(root: Path, count: int = 3) -> Path:
    for sub in ("trainA", "trainB", "testA", "testB"):
        for i in range(count):
            image = ramp16(i + (100 if sub.endswith("B") else 0))
            write_png16(root / sub / f"{i}.png", image if sub.endswith("A") else 65535 - image)
    return root


class Identity(Generator):
    """A generator forced to the identity: what it is given is what it returns."""

    name = "identity-test"
    options = (i2i.Option("in_channels", int, 1, "input channels", min=1),
               i2i.Option("out_channels", int, 1, "output channels", min=1))

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)  # there for translate to read the channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture
def identity_file(depth_generator_file):
    """A generator file of the identity, recording the 16-bit value mapping ("depth") a run of 16-bit data has."""
    return depth_generator_file(Identity, {"in_channels": 1, "out_channels": 1})


def test_16_bit_images_survive_an_identity_generator_within_one_step(cli, tmp_path, identity_file):
    image = ramp16(0, 40)
    assert image.min() < 200 and image.max() > 65000  # the whole range, not just 0..255
    write_png16(tmp_path / "in" / "slice.png", image)
    tifffile.imwrite(tmp_path / "in" / "slice.tif", image)
    result = cli("translate", identity_file, tmp_path / "in", "--out", tmp_path / "out", "--device", "cpu")
    assert result.code == 0, result.err
    for name in ("slice.png", "slice.tif"):
        out = read_array(tmp_path / "out" / name)
        assert out.dtype == np.uint16 and out.shape == (40, 40, 1), name
        assert np.abs(out[..., 0].astype(np.int64) - image).max() <= 1, name
    assert Image.open(tmp_path / "out" / "slice.png").mode in ("I;16", "I")  # a 16-bit PNG, not 8-bit
    again = cli("translate", identity_file, tmp_path / "in" / "slice.png", "--out", tmp_path / "npy",
                "--format", "npy", "--device", "cpu")
    assert again.code == 0, again.err
    assert np.abs(np.load(tmp_path / "npy" / "slice.npy")[..., 0].astype(np.int64) - image).max() <= 1


def test_a_run_on_16_bit_grayscale_pngs_trains_resumes_and_translates_to_16_bit(cli, tmp_path):
    data = unpaired16(tmp_path / "mr2ct")
    args = ["run", CYCLEGAN, "--set", f"data.root={data}", "--set", "data.channels=1", *CYCLE_TINY]
    assert cli(*args, "--out", tmp_path / "whole").code == 0
    first = cli(*args, "--set", "train.max_steps=2", "--out", tmp_path / "resumed")  # the later --set wins
    assert first.code == 0, first.err
    resumed = cli(*args, "--out", tmp_path / "resumed", "--resume")
    assert resumed.code == 0, resumed.err
    assert_same_final_state(tmp_path / "whole", tmp_path / "resumed", 4)

    generator = tmp_path / "whole" / "checkpoints" / "step-00000004" / "G_A.safetensors"
    with safe_open(generator, framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["i2i.options"])["in_channels"] == 1
    assert json.loads(meta[VALUES_KEY])["mode"] == "depth"
    evaluated = cli("evaluate", tmp_path / "whole")
    assert evaluated.code == 0, evaluated.err
    report = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert report["data"]["values"]["domains"]["B"]["dtype"] == "uint16" and report["features"] is None
    assert 0 <= report["metrics"]["AtoB"]["cycle_l1"] <= 1
    out = tmp_path / "translated"
    result = cli("translate", tmp_path / "whole", data / "testA", "--out", out, "--device", "cpu")
    assert result.code == 0, result.err
    translated = read_array(out / "0.png")
    assert translated.dtype == np.uint16 and translated.shape == (40, 40, 1)


def test_a_run_on_4_band_tiffs_and_on_npy_arrays(cli, tmp_path):
    rng = np.random.default_rng(0)
    tiffs = tmp_path / "bands"
    for split in ("train", "test"):
        for i in range(2):
            (tiffs / split).mkdir(parents=True, exist_ok=True)
            pair = rng.integers(0, 4096, (40, 80, 4), dtype=np.uint16)  # A|B side by side, 4 bands each
            tifffile.imwrite(tiffs / split / f"{i}.tif", pair, planarconfig="contig")
    result = cli("run", PIX2PIX, "--set", f"data.root={tiffs}", "--set", "data.channels=4",
                 "--set", "data.values=window", "--set", "data.low=0", "--set", "data.high=4095", *PIX2PIX_TINY,
                 "--out", tmp_path / "p2p")
    assert result.code == 0, result.err

    arrays = tmp_path / "arrays"
    for sub in ("trainA", "trainB"):
        (arrays / sub).mkdir(parents=True)
        for i in range(3):
            np.save(arrays / sub / f"{i}.npy", rng.normal(0, 1, (40, 40, 2)).astype(np.float32))
    result = cli("run", CYCLEGAN, "--set", f"data.root={arrays}", "--set", "data.channels=2",
                 "--set", "data.values=percentile", "--set", "data.low=1", "--set", "data.high=99", *CYCLE_TINY,
                 "--out", tmp_path / "npy")
    assert result.code == 0, result.err
    with safe_open(tmp_path / "npy" / "checkpoints" / "step-00000004" / "G_A.safetensors", framework="pt") as f:
        values = ValueMap.from_json(f.metadata()[VALUES_KEY])
    assert values.mode == "percentile" and -3 < values.domains["A"].low < -1.5 < 1.5 < values.domains["A"].high < 3
    out = tmp_path / "npy-out"
    assert cli("translate", tmp_path / "npy", arrays / "trainA", "--out", out, "--device", "cpu").code == 0
    translated = np.load(out / "0.npy")
    assert translated.dtype == np.float32 and translated.shape == (40, 40, 2)


def test_channel_mismatches_and_bad_files_are_one_line(cli, tmp_path):
    data = unpaired16(tmp_path / "gray", count=2)
    line = error_line(cli("run", CYCLEGAN, "--set", f"data.root={data}", "--set", "data.channels=1",
                          "--set", "generator.in_channels=3", *CYCLE_TINY, "--out", tmp_path / "a"))
    assert "generator.in_channels = 3, but the data has 1-channel images" in line
    line = error_line(cli("run", CYCLEGAN, "--set", f"data.root={data}", "--set", "data.channels=3",
                          "--set", "data.values=depth", *CYCLE_TINY, "--out", tmp_path / "b"))
    assert f"{data / 'trainA' / '0.png'} has 1 channel but data.channels = 3" in line

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(data / "trainA" / "1.png")  # an RGB file among gray ones
    line = error_line(cli("run", CYCLEGAN, "--set", f"data.root={data}", "--set", "data.channels=1", *CYCLE_TINY,
                          "--out", tmp_path / "c"))
    assert f"{data / 'trainA' / '1.png'} has 3 channels but data.channels = 1" in line

    arrays = tmp_path / "int64"
    for sub in ("trainA", "trainB"):
        (arrays / sub).mkdir(parents=True)
        np.save(arrays / sub / "0.npy", np.zeros((40, 40, 1), np.int64))
    line = error_line(cli("run", CYCLEGAN, "--set", f"data.root={arrays}", "--set", "data.channels=1",
                          *CYCLE_TINY, "--out", tmp_path / "d"))
    assert str(arrays / "trainA" / "0.npy") in line and "int64" in line

    assert "data.values = \"window\" needs data.low < data.high" in error_line(
        cli("run", CYCLEGAN, "--set", f"data.root={data}", "--set", "data.values=window", *CYCLE_TINY,
            "--out", tmp_path / "e"))


def test_the_reference_1_channel_generators_convert_and_translate_gray(cli, tmp_path):
    from test_convert import reference_generator

    torch.save(reference_generator(in_channels=1, out_channels=1).state_dict(), tmp_path / "gray.pth")
    result = cli("convert", tmp_path / "gray.pth", "--out", tmp_path / "gray.safetensors")
    assert result.code == 0, result.err
    assert "in_channels=1" in result.out and "out_channels=1" in result.out
    Image.fromarray((np.arange(40 * 40).reshape(40, 40) % 256).astype(np.uint8)).save(tmp_path / "x.png")
    result = cli("translate", tmp_path / "gray.safetensors", tmp_path / "x.png", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    assert Image.open(tmp_path / "out" / "x.png").mode == "L"


def test_synthetic_data_in_1_and_4_channels_trains_shows_exports_and_refuses_fid(cli, tmp_path):
    quick = ["--set", "data.count=4", "--set", "data.load_size=36", "--set", "data.crop_size=32",
             "--set", "data.workers=0", "--set", "generator.channels=4", "--set", "generator.blocks=1",
             "--set", "discriminator.channels=4", "--set", "train.max_steps=2", "--set", "train.log_every=1",
             "--set", "train.samples=1"]
    for channels, fmt in ((1, "onnx"), (4, "torchscript")):
        run = tmp_path / f"c{channels}"
        result = cli("run", RECIPES / "quickstart.toml", *quick, "--set", f"data.channels={channels}", "--out", run)
        assert result.code == 0, result.err
        with safe_open(run / "checkpoints" / "step-00000002" / "G_B.safetensors", framework="pt") as f:
            options = json.loads(f.metadata()["i2i.options"])
        assert options["in_channels"] == options["out_channels"] == channels
        sample = Image.open(sorted((run / "samples").glob("*.png"))[-1])
        assert sample.mode == "RGB" and sample.width > 32
        out = tmp_path / f"g{channels}.{'onnx' if fmt == 'onnx' else 'pt'}"
        exported = cli("export", run, "--format", fmt, "--out", out)
        assert exported.code == 0, exported.err
        assert f"example input 1x{channels}x32x32" in exported.out and "passed" in exported.out
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"never read: the refusal comes first")
    line = error_line(cli("evaluate", tmp_path / "c1", "--inception-weights", weights))
    assert "FID and KID take RGB images, but this run's data is not 3-channel (data.channels = 1" in line


def test_domains_of_different_channels_and_depths_translate_into_the_target_domains(cli, tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "opt2sar"
    for sub in ("trainA", "trainB", "testA"):
        (data / sub).mkdir(parents=True)
        for i in range(2):
            if sub.endswith("A"):  # 3-band 8-bit "optical"
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / sub / f"{i}.png")
            else:  # 1-band 16-bit "SAR"
                write_png16(data / sub / f"{i}.png", ramp16(i))
    args = ["run", CYCLEGAN, "--set", f"data.root={data}", "--set", "data.channels=3", "--set", "data.channels_b=1",
            "--set", "data.values=depth", *CYCLE_TINY]
    line = error_line(cli(*args, "--out", tmp_path / "idt"))
    assert "set loss.identity.weight = 0 for domains of different channels" in line
    result = cli(*args, "--set", "loss.identity.weight=0", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    with safe_open(tmp_path / "run" / "checkpoints" / "step-00000004" / "G_A.safetensors", framework="pt") as f:
        options = json.loads(f.metadata()["i2i.options"])
    assert (options["in_channels"], options["out_channels"]) == (3, 1)
    out = tmp_path / "out"
    assert cli("translate", tmp_path / "run", data / "testA", "--out", out, "--device", "cpu").code == 0
    translated = read_array(out / "0.png")
    assert translated.dtype == np.uint16 and translated.shape == (40, 40, 1)  # B's depth and channels
