"""Speed options (run.channels_last, run.precision = bf16, optim.implementation) train, keep the math, resume."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from conftest import RECIPES, TINY, error_line
from test_resume import checkpoint_tensors

QUICK = RECIPES / "quickstart.toml"


def final_losses(run) -> dict[str, float]:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["losses"]


@pytest.mark.parametrize("setting", ["run.channels_last=true", "run.precision=bf16", "optim.implementation=foreach",
                                     "optim.implementation=single", "optim.implementation=fused"])
def test_a_speed_option_trains_to_finite_losses(cli, tmp_path, setting):
    result = cli("run", QUICK, *TINY, "--set", setting, "--out", tmp_path / "run")
    assert result.code == 0, result.err
    losses = final_losses(tmp_path / "run")
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    assert f"{setting.split('=')[0].split('.')[1]} = " in (tmp_path / "run" / "recipe.toml").read_text()


def test_fused_rmsprop_is_refused_with_a_clear_error(cli, tmp_path):
    line = error_line(cli("run", QUICK, *TINY, "--set", "optim.optimizer=rmsprop", "--set",
                          "optim.implementation=fused", "--out", tmp_path / "run"))
    assert "[optim] implementation = \"fused\" is not one of" in line and "foreach" in line


def test_channels_last_keeps_the_math(cli, tmp_path):
    two = [*TINY, "--set", "train.max_steps=2"]
    assert cli("run", QUICK, *two, "--out", tmp_path / "plain").code == 0
    assert cli("run", QUICK, *two, "--set", "run.channels_last=true", "--out", tmp_path / "nhwc").code == 0
    a = checkpoint_tensors(tmp_path / "plain" / "checkpoints" / "step-00000002")
    b = checkpoint_tensors(tmp_path / "nhwc" / "checkpoints" / "step-00000002")
    assert a.keys() == b.keys() and len(a) > 20
    weights = [k for k in a if not k.startswith("training/")]
    for key in weights:
        assert a[key].shape == b[key].shape, key
        # A conv bias in front of an instance norm has a true gradient of 0: Adam turns its float noise into
        # steps of about lr (up to a few lr), so those may differ by a few lr; every other weight agrees to float order.
        atol = 4 * 2 * 2e-4 if key.endswith(".bias") else 1e-6
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=atol, msg=key)


def test_channels_last_resume_is_bit_identical(cli, tmp_path):
    extra = [*TINY, "--set", "run.channels_last=true", "--set", "train.keep_checkpoints=0"]
    assert cli("run", QUICK, *extra, "--out", tmp_path / "whole").code == 0
    run = tmp_path / "resumed"
    assert cli("run", QUICK, *extra, "--out", run).code == 0
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    result = cli("run", QUICK, *extra, "--out", run, "--resume")
    assert result.code == 0, result.err
    a = checkpoint_tensors(tmp_path / "whole" / "checkpoints" / "step-00000004")
    b = checkpoint_tensors(run / "checkpoints" / "step-00000004")
    assert a.keys() == b.keys() and len(a) > 20
    different = [k for k in a if not (a[k].dtype == b[k].dtype and a[k].equal(b[k]))]
    assert not different, different[:5]
