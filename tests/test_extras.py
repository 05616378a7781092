"""i2i-extras as a third party ships it: pip-installed into this environment, swapped in by --set, then removed.

Also the plugin template: copied, pip-installed and tested with its own tests, as a plugin author would.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import RECIPES, ROOT, TINY, error_line, run_module

EXTRAS = ROOT / "plugins" / "i2i_extras"
TEMPLATE = ROOT / "plugins" / "template"
QUICK = RECIPES / "quickstart.toml"
# Build leftovers are not copied: a stale build/lib would be installed as if it were the source.
SOURCES_ONLY = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")


def pip(*args: str) -> subprocess.CompletedProcess:
    """Run pip of the interpreter running the tests."""
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, check=False)


def extras_installed() -> bool:
    """Whether this environment holds the i2i-extras distribution (looked up afresh each time)."""
    importlib.invalidate_caches()
    try:
        importlib.metadata.distribution("i2i-extras")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def copy_sources(package: Path, into: Path) -> Path:
    """A copy of a plugin package's source folder under `into`."""
    return Path(shutil.copytree(package, into / package.name, ignore=SOURCES_ONLY))


@pytest.fixture(scope="module")
def extras(tmp_path_factory) -> Iterator[None]:
    """i2i-extras installed into the test environment for this module, removed again at the end."""
    if extras_installed():
        pytest.skip("i2i-extras is already installed here; these tests install and remove it themselves")
    source = copy_sources(EXTRAS, tmp_path_factory.mktemp("extras-src"))
    result = pip("install", "--quiet", "--no-deps", "--no-build-isolation", str(source))
    assert result.returncode == 0, result.stderr
    assert extras_installed()
    try:
        yield
    finally:
        if extras_installed():
            result = pip("uninstall", "--yes", "i2i-extras")
            assert result.returncode == 0, result.stderr


def test_its_parts_are_listed_with_their_package(extras):
    listing = run_module("list", env={"COLUMNS": "200"})
    assert listing.code == 0, listing.err
    rows = {(line.split()[0], line.split()[1]): line.split()[2] for line in listing.out.splitlines()
            if len(line.split()) > 2}
    assert rows[("generator", "upsample")] == "i2i-extras"
    assert rows[("discriminator", "pixel")] == "i2i-extras"
    assert rows[("generator", "resnet")] == "i2i"
    # the stock hinge loss took the name since: the core wins, and the warning says how to pick the package's
    assert rows[("loss", "hinge")] == "i2i"
    assert "'i2i-extras:hinge'" in listing.err


def test_info_shows_the_options(extras):
    info = run_module("info", "generator", "upsample", env={"COLUMNS": "200"})
    assert info.code == 0, info.err
    assert "i2i-extras" in info.out
    for option in ("blocks", "channels", "norm", "dropout", "in_channels", "out_channels", "init", "mode"):
        assert option in info.out, option
    assert "bilinear" in info.out


def test_set_alone_swaps_its_parts_into_a_shipped_recipe(extras, tmp_path):
    # All three in one run: each subprocess run costs seconds of imports and report rendering on a CI CPU.
    run = tmp_path / "run"
    result = run_module("run", QUICK, *TINY, "--set", "train.max_steps=2", "--set", "generator.name=upsample",
                        "--set", "loss.adversarial.name=i2i-extras:hinge", "--set", "discriminator.name=pixel",
                        "--out", run)
    assert result.code == 0, result.err
    assert "does not take layers" in result.err  # PatchGAN's depth, dropped with a note
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    assert recipe["generator"]["name"] == "upsample" and recipe["generator"]["mode"] == "nearest"
    assert recipe["generator"]["channels"] == 4  # TINY's widths apply: upsample takes resnet's options
    assert recipe["discriminator"] == {"name": "pixel", "channels": 4, "norm": "instance", "in_channels": 3,
                                       "spectral_norm": False, "init": "normal", "init_gain": 0.02}
    assert recipe["loss"]["adversarial"]["name"] == "i2i-extras:hinge"
    assert (run / "checkpoints" / "step-00000002" / "D_A.safetensors").exists()


@pytest.mark.parametrize("kind, name, options", [("generator", "upsample", {"blocks": 1, "channels": 4}),
                                                 ("generator", "upsample", {"blocks": 1, "channels": 4,
                                                                            "mode": "bilinear", "norm": "batch"}),
                                                 ("loss", "i2i-extras:hinge", {}),
                                                 ("discriminator", "pixel", {"channels": 4}),
                                                 ("discriminator", "pixel", {"channels": 4, "norm": "none"})])
def test_its_parts_pass_check_part(extras, kind: str, name: str, options: dict[str, Any]):
    from i2i.contract.registry import Registry
    from i2i.testing import check_part

    # default_registry() is loaded once per process and may predate the install: read the entry points afresh.
    registry = Registry()
    registry.load_entry_points()
    part = check_part(kind, name, registry=registry, **options)
    assert type(part).__module__.startswith("i2i_extras.")


def test_the_template_package_passes_its_own_tests(tmp_path):
    package = copy_sources(TEMPLATE, tmp_path)
    site = tmp_path / "site"
    result = pip("install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(package))
    assert result.returncode == 0, result.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package, env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout


def test_after_uninstalling_a_recipe_naming_its_part_fails_clearly(extras, tmp_path):
    result = pip("uninstall", "--yes", "i2i-extras")
    assert result.returncode == 0, result.stderr
    assert not extras_installed()
    run = run_module("run", QUICK, *TINY, "--set", "generator.name=upsample", "--out", tmp_path / "run")
    assert "unknown generator 'upsample'" in error_line(run)
