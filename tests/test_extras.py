"""i2i-extras as a third party ships it: pip-installed into an environment, swapped in by --set, then removed.

The environment is a virtual one of the module's own, layered on the one running the tests (tests/packages.py),
so pip really installs and uninstalls, and a run that dies midway leaves the test environment unchanged.
Also the plugin template: copied, pip-installed and tested with its own tests, as a plugin author would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from conftest import RECIPES, ROOT, TINY, error_line, run_module
from packages import Environment, copy_sources, importable, installed_here, pip_install

EXTRAS = ROOT / "plugins" / "i2i_extras"
TEMPLATE = ROOT / "plugins" / "template"
QUICK = RECIPES / "quickstart.toml"


@pytest.fixture(scope="module")
def extras(tmp_path_factory) -> Environment:
    """An environment with i2i-extras pip-installed, for this module."""
    if installed_here("i2i-extras"):
        pytest.skip("i2i-extras is installed in the environment running the tests; these tests install and"
                    " remove it themselves")
    environment = Environment(tmp_path_factory.mktemp("env"))
    environment.install(EXTRAS)
    assert environment.has("i2i-extras")
    return environment


def test_its_parts_are_listed_with_their_package(extras):
    listing = run_module("list", env={**extras.env, "COLUMNS": "200"})
    assert listing.code == 0, listing.err
    rows = {(line.split()[0], line.split()[1]): line.split()[2] for line in listing.out.splitlines()
            if len(line.split()) > 2}
    assert rows[("generator", "upsample")] == "i2i-extras"
    assert rows[("discriminator", "pixel")] == "i2i-extras"
    assert rows[("generator", "resnet")] == "i2i-toolkit"  # the core's distribution
    # the stock hinge loss took the name since: the core wins, and the warning says how to pick the package's
    assert rows[("loss", "hinge")] == "i2i-toolkit"
    assert "'i2i-extras:hinge'" in listing.err


def test_info_shows_the_options(extras):
    info = run_module("info", "generator", "upsample", env={**extras.env, "COLUMNS": "200"})
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
                        "--out", run, env=extras.env)
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

    # default_registry() is loaded once per process and predates the install: read the entry points afresh.
    with importable(extras.site, "i2i_extras"):
        registry = Registry()
        registry.load_entry_points()
        part = check_part(kind, name, registry=registry, **options)
        assert type(part).__module__.startswith("i2i_extras.")


def test_the_template_package_passes_its_own_tests(tmp_path):
    package = copy_sources(TEMPLATE, tmp_path)
    env = {**os.environ, **pip_install(tmp_path / "site", package)}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package, env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout


def test_after_uninstalling_a_recipe_naming_its_part_fails_clearly(extras, tmp_path):
    extras.uninstall("i2i-extras")
    assert not extras.has("i2i-extras")
    run = run_module("run", QUICK, *TINY, "--set", "generator.name=upsample", "--out", tmp_path / "run",
                     env=extras.env)
    assert "unknown generator 'upsample'" in error_line(run)
