"""What the parts cannot take is refused before training, through the contract, in one line (issue 26).

Networks declare the input sizes they take (`size_multiple`, `min_size`), and `i2i run` checks data.crop_size
against every network it built before anything is written; a recipe's [optim.<group>] table must name a group
the method declares (`Method.groups`); a float image holding NaN or infinite values is refused naming the file.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

import i2i
from conftest import RECIPES, Result, error_line
from i2i.contract.parts import declared_sizes, fitting_side
from i2i.contract.registry import Registry, default_registry
from i2i.testing import SMOKE_RECIPE, check_part, run_recipe
from i2i_stock.cycle import CycleMethod
from i2i_stock.patchgan import PatchGANDiscriminator

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = ["--set", "data.workers=0", "--set", "generator.channels=4", "--set", "discriminator.channels=4",
         "--set", "train.max_steps=1", "--set", "train.log_every=1"]
SYNTHETIC = ["--set", "data.name=synthetic", "--set", "data.count=2", *QUICK]


def refused_before_training(result: Result, run: Path) -> str:
    """The one error line of a run that failed, having written nothing."""
    line = error_line(result)
    assert result.code == 2
    assert not run.exists(), sorted(p.name for p in run.iterdir())
    return line


# -- sizes: declared by the parts, checked by the engine -------------------------------------------------------


def test_an_8_deep_unet_on_32_px_crops_ends_in_one_line_naming_the_key(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", RECIPES / "pix2pix.toml", *SYNTHETIC, "--set", "data.paired=true", "--set",
                 "data.load_size=36", "--set", "data.crop_size=32", "--out", run)
    assert refused_before_training(result, run) == (
        "error: data.crop_size = 32 is too small for generator unet (downs = 8): it takes sides of at least 256"
        " that are multiples of 256; use --set data.crop_size=256 --set data.load_size=256 (or change"
        " generator.downs)")


def test_the_size_it_suggests_trains(cli, tmp_path):
    # the discriminator is what is too small here: 3 PatchGAN layers need 24 px, which the ResNet also takes
    settings = [*SYNTHETIC, "--set", "generator.blocks=1", "--set", "data.load_size=16", "--set", "data.crop_size=16"]
    run = tmp_path / "run"
    line = refused_before_training(cli("run", RECIPES / "cyclegan.toml", *settings, "--out", run), run)
    assert line == ("error: data.crop_size = 16 is too small for discriminator patchgan (layers = 3): it takes"
                    " sides of at least 24; use --set data.crop_size=24 --set data.load_size=24 (or change"
                    " discriminator.layers)")
    suggested = shlex.split(re.search(r"use (.*?) \(", line).group(1))
    result = cli("run", RECIPES / "cyclegan.toml", *settings, *suggested, "--out", run)
    assert result.code == 0, result.err
    assert (run / "checkpoints").is_dir()


def test_a_crop_that_is_no_multiple_of_what_the_generator_divides_by(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", RECIPES / "cyclegan.toml", *SYNTHETIC, "--set", "generator.blocks=1",
                 "--set", "data.load_size=36", "--set", "data.crop_size=30", "--out", run)
    assert refused_before_training(result, run) == (
        "error: data.crop_size = 30 does not fit generator resnet: it takes sides that are multiples of 4 of at least"
        " 8; use --set data.crop_size=32")


#: stock networks with options that move their sizes; each takes its declared minimum and nothing smaller
NETWORKS = [
    ("generator", "resnet", {"blocks": 1, "channels": 4}),
    ("generator", "resnet", {"blocks": 1, "channels": 4, "antialias": True}),
    ("generator", "unet", {"downs": 3, "channels": 4}),
    ("generator", "unet", {"downs": 4, "channels": 4, "norm": "instance", "antialias": True}),
    ("generator", "encdec", {"depth": 3, "channels": 4}),
    ("generator", "encdec", {"depth": 3, "channels": 4, "norm": "instance"}),
    ("generator", "encdec", {"depth": 3, "channels": 4, "norm": "none"}),
    ("discriminator", "patchgan", {"layers": 1, "channels": 4}),
    ("discriminator", "patchgan", {"layers": 3, "channels": 4, "norm": "batch"}),
    ("discriminator", "patchgan", {"layers": 2, "channels": 4, "antialias": True}),
]


def takes(net: torch.nn.Module, side: int) -> bool:
    """Whether `net` (in training, a batch of one) runs on a side x side image, keeping its size if a generator."""
    try:
        with torch.no_grad():
            out = net(torch.rand(1, 3, side, side) * 2 - 1)
    except (RuntimeError, ValueError):
        return False
    return net.kind != "generator" or tuple(out.shape[-2:]) == (side, side)


@pytest.mark.parametrize(("kind", "name", "options"), NETWORKS)
def test_stock_networks_declare_the_sizes_they_take(kind, name, options):
    net = default_registry().create(kind, name, **options).train()
    multiple, least = declared_sizes(net)
    smallest = fitting_side([net])
    assert takes(net, smallest) and takes(net, smallest + multiple)
    below = [side for side in range(1, smallest) if side % multiple == 0]
    assert not any(takes(net, side) for side in below), f"{name} {options} takes less than it declares"


def test_check_part_runs_a_part_at_a_size_it_declares():
    # a 16 px PatchGAN of 3 layers would fail in torch; check_part takes the declared 24 instead
    net = check_part("discriminator", "patchgan", size=16, layers=3, channels=4)
    assert (net.size_multiple, net.min_size) == (1, 24)


class OptimisticPatchGAN(PatchGANDiscriminator):
    """A PatchGAN that declares a smaller minimum than it takes."""

    name = "optimistic_patchgan"

    def __init__(self, **options):
        super().__init__(**options)
        self.min_size = 8


class OptimisticPlugin:
    @i2i.hookimpl
    def i2i_discriminators(self) -> list[type]:
        return [OptimisticPatchGAN]


def test_check_part_catches_a_minimum_declared_too_small():
    registry = Registry()
    registry.register(OptimisticPlugin(), name="optimistic")
    with pytest.raises(AssertionError, match=r"declares it takes 8 px images \(size_multiple = 1, min_size = 8\)"
                                             r" but fails on one in training: .*; raise min_size"):
        check_part("discriminator", "optimistic_patchgan", registry=registry, layers=3, channels=4)


# -- optimizer groups: declared by the methods, checked in the recipe -------------------------------------------


@pytest.mark.parametrize(("recipe", "groups"), [("cyclegan", "G, D"), ("pix2pix", "G, D"), ("cut", "G, D, F")])
def test_an_optim_table_for_a_group_the_method_lacks_is_refused(cli, tmp_path, recipe, groups):
    run = tmp_path / "run"
    result = cli("run", RECIPES / f"{recipe}.toml", *SYNTHETIC, "--set", "optim.Dx.lr=0.001", "--out", run)
    line = refused_before_training(result, run)
    method = {"cyclegan": "cycle", "pix2pix": "paired", "cut": "cut"}[recipe]
    assert line.endswith(f"[optim.Dx]: method {method!r} has no optimizer group 'Dx' (its groups: {groups}); did"
                         " you mean [optim.D]?"), line


def test_the_stock_methods_declare_their_groups():
    registry = default_registry()
    declared = {name: registry.info("method", name).cls.groups for name in ("cycle", "paired", "cut")}
    assert declared == {"cycle": ("G", "D"), "paired": ("G", "D"), "cut": ("G", "D", "F")}


class MisdeclaredCycle(CycleMethod):
    """The cycle method declaring a group its optimizer_groups() does not return."""

    name = "misdeclared_cycle"
    groups = ("G", "D", "E")


class MisdeclaredMethodPlugin:
    @i2i.hookimpl
    def i2i_methods(self) -> list[type]:
        return [MisdeclaredCycle]


def test_a_method_must_keep_to_the_groups_it_declares(tmp_path):
    registry = Registry()
    registry.load_entry_points()
    registry.register(MisdeclaredMethodPlugin(), name="misdeclared")
    with pytest.raises(AssertionError, match=r"method 'misdeclared_cycle' declares optimizer groups G, D, E"
                                             r" \(Method.groups\) but optimizer_groups\(\) returns G, D"):
        run_recipe(SMOKE_RECIPE, "method.name=misdeclared_cycle", out=tmp_path / "run", registry=registry)
    assert not (tmp_path / "run").exists()


# -- data: NaN and infinite values are refused naming the file --------------------------------------------------


def float_folders(root: Path, bad: dict[str, np.ndarray], count: int = 3) -> Path:
    """Unpaired float32 .npy images (1 channel) in trainA/ and trainB/; `bad` maps "trainA/1.npy" to its pixels."""
    rng = np.random.default_rng(0)
    for sub in ("trainA", "trainB"):
        (root / sub).mkdir(parents=True)
        for i in range(count):
            np.save(root / sub / f"{i}.npy", bad.get(f"{sub}/{i}.npy", rng.random((36, 36), dtype=np.float32)))
    return root


def with_nan(count: int, inf: int = 0) -> np.ndarray:
    pixels = np.full((36, 36), 0.5, dtype=np.float32)
    pixels.flat[:count] = np.nan
    pixels.flat[count:count + inf] = np.inf
    return pixels


FLOAT_RUN = ["--set", "data.channels=1", "--set", "data.load_size=36", "--set", "data.crop_size=32",
             "--set", "generator.blocks=1", "--set", "loss.identity.weight=0", *QUICK]


def test_a_float_npy_holding_nan_ends_in_one_line_naming_the_file(cli, tmp_path):
    root = float_folders(tmp_path / "data", {"trainA/0.npy": with_nan(2)})
    run = tmp_path / "run"
    result = cli("run", RECIPES / "cyclegan.toml", "--set", f"data.root={root}", *FLOAT_RUN, "--out", run)
    assert refused_before_training(result, run) == (
        f"error: cannot read image {root / 'trainA' / '0.npy'}: it holds 2 NaN values (of 1296): pixels must be"
        " finite; replace them (e.g. numpy.nan_to_num) or remove the file")


def test_percentiles_are_fitted_on_finite_files_only(cli, tmp_path):
    # the percentile fit reads a sample of every domain's files before training, so a bad one is found there
    root = float_folders(tmp_path / "data", {"trainB/2.npy": with_nan(0, inf=5)})
    run = tmp_path / "run"
    result = cli("run", RECIPES / "cyclegan.toml", "--set", f"data.root={root}", "--set", "data.values=percentile",
                 "--set", "data.low=1", "--set", "data.high=99", *FLOAT_RUN, "--out", run)
    assert f"cannot read image {root / 'trainB' / '2.npy'}: it holds 5 infinite values" in \
        refused_before_training(result, run)


def test_a_nan_file_found_while_training_is_named_and_left_out(cli, tmp_path):
    # only the first file of a domain is read before training in "depth" mode; the others when their turn comes
    root = float_folders(tmp_path / "data", {"trainA/1.npy": with_nan(1)})
    run = tmp_path / "run"
    result = cli("run", RECIPES / "cyclegan.toml", "--set", f"data.root={root}", *FLOAT_RUN,
                 "--set", "train.max_steps=3", "--out", run)
    assert result.code == 0, result.err
    # named where it is read: by the training items, and by the sample grid's (no test split here)
    named = [line for line in result.err.splitlines() if str(root / "trainA" / "1.npy") in line]
    assert named and all(line.startswith("warning: cannot read image") and "it holds 1 NaN value (of 1296)" in line
                         and "using the next image" in line for line in named), named
    assert all(np.isfinite(record) for record in _logged_losses(run))


def _logged_losses(run: Path) -> list[float]:
    import json

    return [value for line in (run / "metrics.jsonl").read_text().splitlines()
            for value in json.loads(line)["losses"].values()]
