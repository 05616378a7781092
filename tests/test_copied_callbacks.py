"""The plugin boundary holds: the stock EMA and validation callbacks, copied byte for byte into a separate package
that pip installs under another name, work there as they do in i2i_stock. The copy registers them under names and
a weights variant of its own, and `i2i translate` picks that package's averaged weights by its declaration."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from conftest import ROOT, error_line, run_module
from packages import pip_install
from test_validation import PIX2PIX, STEPS, TINY_PIX2PIX

STOCK = ROOT / "plugins" / "i2i_stock" / "callbacks"
COPIED = ("ema.py", "validation.py")

PLUGIN = '''\
"""Registers the copied callbacks under names of this package."""

from i2i.api import hookimpl

from i2i_copycat.ema import EMA
from i2i_copycat.validation import Validation


class Average(EMA):
    """The stock average, as this package's callback, writing <network>.avg.safetensors."""

    name = "copycat_average"
    weights_variant = "avg"


class HeldOut(Validation):
    """The stock validation, as this package's callback."""

    name = "copycat_validation"


@hookimpl
def i2i_callbacks():
    return [Average, HeldOut]
'''

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "i2i-copycat"
version = "0.1.0"
dependencies = ["i2i-toolkit"]

[project.entry-points.i2i]
copycat = "i2i_copycat.plugin"

[tool.setuptools.packages.find]
where = ["src"]
'''


@pytest.fixture(scope="module")
def copycat(tmp_path_factory) -> dict[str, str]:
    """The package built from verbatim copies of the stock callbacks, pip-installed into a folder of its own."""
    source = tmp_path_factory.mktemp("source") / "i2i_copycat"
    package = source / "src" / "i2i_copycat"
    package.mkdir(parents=True)
    for name in COPIED:
        shutil.copyfile(STOCK / name, package / name)
    (package / "__init__.py").write_text('"""Copies of the stock EMA and validation callbacks."""\n')
    (package / "plugin.py").write_text(PLUGIN)
    (source / "pyproject.toml").write_text(PYPROJECT)
    return pip_install(tmp_path_factory.mktemp("site"), source)


def test_the_copies_need_nothing_of_i2i_stock():
    for name in COPIED:
        text = (STOCK / name).read_text()
        assert "i2i_stock" not in text, f"{name} reaches into i2i_stock: a copy elsewhere would not run"


def test_copied_ema_and_validation_train_keep_best_and_translate(copycat, tmp_path):
    run = tmp_path / "run"
    result = run_module("run", PIX2PIX, *TINY_PIX2PIX, *STEPS,
                        "--set", "callback.copycat_average.decay=0.6", "--set", "callback.copycat_average.start_step=1",
                        "--set", "callback.copycat_validation.every=3",
                        "--set", "callback.copycat_validation.keep_best=AtoB.l1",
                        "--out", run, env=copycat)
    assert result.code == 0, result.err

    # the copied validation: results in metrics.jsonl and checkpoints/best copied from a validated step
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validated = {r["validation"]["step"]: r["validation"]["AtoB"]["l1"] for r in records if "validation" in r}
    assert sorted(validated) == [3, 6, 8]
    best = json.loads((run / "checkpoints" / "best" / "training.json").read_text())
    assert best["step"] == min(validated, key=lambda step: (validated[step], step))

    # the copied average: the variant its package declares, recorded for inference
    final = run / "checkpoints" / "step-00000008"
    state = json.loads((final / "training.json").read_text())
    assert state["weights_variant"] == "avg" and state["variants"] == {"avg": {"G": "G.avg"}}
    average, trained = load_file(final / "G.avg.safetensors"), load_file(final / "G.safetensors")
    assert any(not average[k].equal(trained[k]) for k in average)

    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    out = {}
    for name, given in {"default": [run], "raw": [final, "--raw"],
                        "avg": [final / "G.avg.safetensors"]}.items():
        done = run_module("translate", given[0], image, "--out", tmp_path / name, *given[1:], env=copycat)
        assert done.code == 0, done.err
        out[name] = np.asarray(Image.open(tmp_path / name / "x.png"))
        if name == "default":
            assert "(G.avg)" in done.out, done.out
    assert np.array_equal(out["default"], out["avg"]) and not np.array_equal(out["default"], out["raw"])


def test_without_the_package_the_run_names_what_is_missing(tmp_path):
    """The same recipe where the package is not installed: one line naming the unknown callback."""
    result = run_module("run", PIX2PIX, *TINY_PIX2PIX, *STEPS, "--set", "callback.copycat_average.decay=0.6",
                        "--out", tmp_path / "run")
    assert "copycat_average" in error_line(result)
    assert not (tmp_path / "run").exists()
