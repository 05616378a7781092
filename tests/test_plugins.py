"""Plugins the way users install them: real packages with entry points, built and installed by pip."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import RECIPES, error_line, run_module
from packages import pip_install  # noqa: F401 (also imported from here by other test modules)

QUICK = RECIPES / "quickstart.toml"
SMALL = ["--set", "data.count=4", "--set", "data.load_size=36", "--set", "data.crop_size=32",
         "--set", "data.workers=0", "--set", "discriminator.channels=4", "--set", "train.max_steps=4",
         "--set", "train.log_every=2", "--set", "train.checkpoint_every=2", "--set", "train.samples=1"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    return pip_install(tmp_path_factory.mktemp("site"), "i2i_example", "i2i_faulty")


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory) -> dict[str, str]:
    return pip_install(tmp_path_factory.mktemp("broken"), "i2i_broken")


def test_installed_package_adds_a_part(plugin_env):
    listing = run_module("list", "generator", env={**plugin_env, "COLUMNS": "200"})
    assert listing.code == 0, listing.err
    rows = {line.split()[1]: line.split()[2] for line in listing.out.splitlines() if line.startswith(" generator")}
    assert rows["tinyconv"] == "i2i-example" and rows["resnet"] == "i2i-toolkit"
    losses = run_module("list", "loss", env={**plugin_env, "COLUMNS": "200"}).out
    # its entry point is named "losses" like the stock one, and both packages' losses load
    assert "charbonnier" in losses and "lsgan" in losses
    info = run_module("info", "generator", "tinyconv", env=plugin_env)
    assert "i2i-example" in info.out and "layers" in info.out


def test_installed_part_trains_from_a_recipe(plugin_env, tmp_path):
    result = run_module("run", QUICK, *SMALL, "--set", "generator.name=tinyconv", "--set", "generator.layers=2",
                        "--set", "generator.channels=4", "--out", tmp_path / "run", env=plugin_env)
    assert result.code == 0, result.err
    # the recipe file's ResNet-only key is dropped with a note; the width both parts take is kept
    assert "note: [generator] name = 'tinyconv' (from --set) does not take blocks" in result.err
    recipe = (tmp_path / "run" / "recipe.toml").read_text()
    assert 'name = "tinyconv"' in recipe and "layers = 2" in recipe
    assert (tmp_path / "run" / "checkpoints" / "step-00000004" / "G_A.safetensors").exists()


def test_without_the_package_the_part_is_unknown(tmp_path):
    result = run_module("run", QUICK, *SMALL, "--set", "generator.name=tinyconv", "--out", tmp_path / "run")
    assert "unknown generator 'tinyconv'" in error_line(result)


def test_a_plugin_that_fails_to_import_is_named_and_the_rest_load(broken_env):
    result = run_module("list", env=broken_env)
    assert result.code == 0
    assert "plugin 'broken' from package 'i2i-broken' failed to load" in result.err
    assert "a_dependency_that_is_not_installed" in result.err
    assert "resnet" in result.out and "cycle" in result.out


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(plugin_env, tmp_path):
    run = tmp_path / "run"
    # 2 cycle-loss calls per step: NaN from step 3 on, found at the checkpoint of step 4, which is not written
    result = run_module("run", QUICK, *SMALL, "--set", "generator.channels=4", "--set", "generator.blocks=1",
                        "--set", "loss.cycle.name=nan_after", "--set", "loss.cycle.after=4",
                        "--set", "train.log_every=10", "--set", "train.max_steps=6", "--out", run, env=plugin_env)
    line = error_line(result)
    assert "loss cycle_A became nan at step 3" in line and "step-00000002" in line
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000002"]


def test_core_imports_no_concrete_part():
    """Every core module imports, and `i2i list` works, with the stock plugin package made unimportable."""
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['i2i_stock'] = None\n"  # any import of the stock package now fails
        "import i2i\n"
        "for m in pkgutil.iter_modules(i2i.__path__):\n"
        "    importlib.import_module('i2i.' + m.name)\n"
        "from i2i.cli import main\n"
        "main(['list'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "synthetic" not in proc.stdout and "resnet" not in proc.stdout  # the datasets are stock parts too
    assert "plugin 'datasets' from package 'i2i-toolkit' failed to load" in proc.stderr
    assert "plugin 'resnet' from package 'i2i-toolkit' failed to load" in proc.stderr


def test_a_plugin_method_of_three_domains_goes_through_translate_evaluate_and_export(plugin_env, tmp_path):
    """i2i-example's `hub` method declares the data's three domains and names its directions
    "<source>_to_<target>": training, translate --from/--to, evaluate and export take them from the core as is."""
    import json

    from PIL import Image

    run = tmp_path / "hub"
    result = run_module("run", QUICK, *SMALL, "--set", "method.name=hub", "--set", "data.name=synthetic_domains",
                        "--set", "generator.channels=4", "--set", "generator.blocks=1", "--out", run, env=plugin_env)
    assert result.code == 0, result.err
    state = json.loads((run / "checkpoints" / "step-00000004" / "training.json").read_text())
    assert state["directions"]["domains"] == ["flat", "striped", "dotted"]
    assert state["directions"]["directions"]["striped_to_flat"] == {
        "source": "striped", "target": "flat", "network": "G_striped_to_flat", "condition": None}
    Image.new("RGB", (32, 32), (30, 60, 220)).save(tmp_path / "x.png")
    translated = run_module("translate", run, tmp_path / "x.png", "--from", "striped", "--to", "flat", "--out",
                            tmp_path / "out", env=plugin_env)
    assert translated.code == 0 and (tmp_path / "out" / "x.png").is_file(), translated.err
    refused = run_module("translate", run, tmp_path / "x.png", "--from", "striped", "--to", "dotted", "--out",
                         tmp_path / "bad", env=plugin_env)
    assert "--from striped --to dotted:" in error_line(refused) and "translates to" in refused.err
    evaluated = run_module("evaluate", run, env=plugin_env)
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert sorted(metrics) == ["dotted_to_flat", "flat_to_dotted", "flat_to_striped", "striped_to_flat"]
    assert all(m["images"] == 4 and m["cycle_l1"] > 0 for m in metrics.values())
    exported = run_module("export", run, "--format", "torchscript", "--from", "flat", "--to", "dotted", "--out",
                          tmp_path / "g.pt", env=plugin_env)
    assert exported.code == 0 and "(flat_to_dotted)" in exported.out, exported.err
