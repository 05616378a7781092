"""Exit statuses that mean something (0 done, 2 an error to fix, 3 done but inputs skipped; --allow-skipped), and
running out of memory as one line naming what ran out and what to change: translate, evaluate, export, training.

The out-of-memory tests run the CLI in a subprocess that caps its own address space (RLIMIT_AS) a little above what
its imports took, so a modest image fails to allocate without this machine spending the memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import RECIPES, TINY, Result, error_line
from test_tiles import resnet_file
from i2i.errors import is_out_of_memory, out_of_memory, requested_bytes

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS caps allocations on Linux")
# What a capped child may use beyond the address space torch's import takes: less than the failing step needs (2.25
# GiB for one activation below), more than the command's imports, reading the image and the generator take.
HEADROOM = 1 << 30


def noise_png(path: Path, side: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def broken_jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a jpeg")
    return path


def truncated_png(path: Path) -> Path:
    """A PNG whose header opens but whose pixels end halfway: found out only when decoded."""
    noise_png(path, seed=7)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


# ---------------------------------------------------------------------------------------------------------
# Exit statuses


def test_translating_only_a_broken_image_fails_saying_nothing_was_translated(cli, tmp_path):
    file = resnet_file(tmp_path)
    broken = broken_jpg(tmp_path / "in" / "broken.jpg")
    for extra in ([], ["--allow-skipped"]):  # nothing written is a failure, tolerated skips or not
        result = cli("translate", file, tmp_path / "in", "--out", tmp_path / "out", "--device", "cpu", *extra)
        assert result.code == 2, result.out + result.err
        line = error_line(result)
        assert "nothing translated" in line and str(broken) in line, line
        assert "translated 0 images" in result.out


def test_a_skipped_input_exits_3_unless_allowed_and_the_rest_is_written(cli, tmp_path):
    file = resnet_file(tmp_path)
    noise_png(tmp_path / "in" / "good.png")
    broken = broken_jpg(tmp_path / "in" / "broken.jpg")
    result = cli("translate", file, tmp_path / "in", "--out", tmp_path / "out", "--device", "cpu")
    assert result.code == 3, result.out + result.err
    line = error_line(result)
    assert "1 of 2 inputs was skipped" in line and str(broken) in line and "--allow-skipped" in line, line
    assert f"warning: cannot read image {broken}" in result.err
    assert (tmp_path / "out" / "good.png").is_file() and "Skipped (1)" in (tmp_path / "out" / "index.html").read_text()

    result = cli("translate", file, tmp_path / "in", "--out", tmp_path / "again", "--device", "cpu", "--allow-skipped")
    assert result.code == 0, result.err
    assert "translated 1 image" in result.out and "1 skipped" in result.out
    assert f"warning: cannot read image {broken}" in result.err and "error:" not in result.err
    assert (tmp_path / "again" / "good.png").is_file()

    shown = " ".join(cli("translate", "--help").out.split())
    assert "--allow-skipped" in shown and "Exit status: 0 done;" in shown and "3 done, but some inputs were" in shown


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run on synthetic data whose recipe asks for a loader worker (evaluate then reads in one, where CPUs
    allow it)."""
    from i2i.cli import main

    run = tmp_path_factory.mktemp("exit-codes") / "run"
    main(["run", str(RECIPES / "quickstart.toml"), *TINY, "--set", "data.workers=1", "--out", str(run)])
    return run


def test_evaluate_with_skipped_test_images_exits_3_unless_allowed(cli, trained, tmp_path):
    data = tmp_path / "data"
    for domain in "AB":
        noise_png(data / f"train{domain}" / "0.png")
        for i in range(2):
            noise_png(data / f"test{domain}" / f"{i}.png", seed=10 * i + ord(domain))
    broken = broken_jpg(data / "testA" / "broken.jpg")  # found out when the folder is listed
    cut = truncated_png(data / "testA" / "cut.png")  # found out when decoded, in a loader worker if there is one
    result = cli("evaluate", trained, "--data", data)
    assert result.code == 3, result.out + result.err
    line = error_line(result)
    assert "2 of 6 inputs were skipped" in line and "--allow-skipped" in line, line
    skipped = json.loads((trained / "metrics.json").read_text())["data"]["skipped"]
    assert len(skipped) == 2 and str(broken) in skipped[0] and str(cut) in skipped[1], skipped

    result = cli("evaluate", trained, "--data", data, "--allow-skipped")
    assert result.code == 0, result.err
    assert "note: the metrics leave out the 2 input files skipped above" in result.err, result.err
    metrics = json.loads((trained / "metrics.json").read_text())["metrics"]
    assert metrics["AtoB"]["images"] == 2 and metrics["BtoA"]["images"] == 2, metrics


# ---------------------------------------------------------------------------------------------------------
# Out of memory


# The child imports torch (most of its address space: the libraries it maps), then caps its address space at what
# that took plus HEADROOM (capping it before would need a guess of that size, which differs between machines and
# builds), then runs the CLI, whose own imports come out of the headroom.
CAPPED = """
import resource, sys
import torch, i2i.cli
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[1]), resource.RLIM_INFINITY))
i2i.cli.main(sys.argv[2:])
"""


def capped(*args: object) -> Result:
    """`i2i ARGS...` in a child that can take HEADROOM bytes of address space beyond its imports."""
    done = subprocess.run([sys.executable, "-c", CAPPED, str(HEADROOM), *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    return Result(done.returncode, done.stdout, done.stderr)


def assert_out_of_memory_line(result: Result, *named: str) -> str:
    line = error_line(result)
    assert result.code == 2, result.out + result.err
    assert line.startswith("error: out of memory"), line
    assert "alloc_cpu" not in result.err and "DefaultCPUAllocator" not in result.err, result.err
    assert all(text in line for text in named), (named, line)
    return line


@linux_only
def test_translate_out_of_memory_is_one_line_naming_the_image_its_size_and_tiles(tmp_path):
    file = resnet_file(tmp_path, channels=64)  # its first layer's output: 3072 x 3072 x 64 floats, 2.25 GiB
    image = tmp_path / "in" / "big.png"
    image.parent.mkdir()
    Image.new("RGB", (3072, 3072), (90, 120, 200)).save(image)  # a flat picture: a small file
    result = capped("translate", file, image, "--out", tmp_path / "out", "--tile", "0",
                    "--device", "cpu")
    assert_out_of_memory_line(result, str(image), "(3072x3072 px)", "--tile", "--size", "--device")
    assert "skipped" not in result.err, result.err


@linux_only
def test_export_out_of_memory_names_the_size_to_lower(tmp_path):
    file = resnet_file(tmp_path, channels=64)
    result = capped("export", file, "--format", "torchscript", "--out",
                    tmp_path / "g.pt", "--size", "3072")
    assert_out_of_memory_line(result, "exporting generator resnet at 3072x3072 px", "--size")
    assert not (tmp_path / "g.pt").exists()


@linux_only
def test_training_out_of_memory_names_the_recipe_keys_that_shrink_it(tmp_path):
    result = capped("run", RECIPES / "quickstart.toml", "--set", "data.count=2",
                    "--set", "data.load_size=2048", "--set", "data.crop_size=2048", "--set", "data.workers=0",
                    "--set", "generator.channels=8", "--set", "generator.blocks=1", "--set", "discriminator.channels=4",
                    "--set", "train.max_steps=1", "--out", tmp_path / "run")
    assert_out_of_memory_line(result, "training", "data.crop_size", "data.batch_size", "generator.channels",
                              "run.device")


def test_out_of_memory_is_recognised_by_type_and_text_with_its_size():
    cuda = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB. GPU 0 has a total capacity of"
                                  " 79.15 GiB of which 3.50 GiB is free.")
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory:"
                       " you tried to allocate 17179869184 bytes. Error code 12 (Cannot allocate memory)")
    with pytest.raises(MemoryError) as numpy_error:
        np.empty((1 << 50,))  # 8 PiB: refused without anything allocated
    for exc, size in ((cuda, 16 << 30), (cpu, 16 << 30), (numpy_error.value, 8 << 50)):
        assert is_out_of_memory(exc) and requested_bytes(exc) == size, exc
    assert not is_out_of_memory(RuntimeError("Given groups=1, weight of size [4, 3, 7, 7], expected input to have"
                                             " 3 channels"))
    with pytest.raises(RuntimeError, match="expected input"):  # other errors pass through unchanged
        with out_of_memory("translating x.png", "use --tile"):
            raise RuntimeError("expected input to have 3 channels")
    with pytest.raises(Exception, match=r"^out of memory translating x.png \(an allocation of 16 GiB failed\): use"
                                        r" --tile$"):
        with out_of_memory("translating x.png", "use --tile"):
            raise cpu
