"""The training loop open to plugins: a third-party package's callback, optimizer, schedule and command, the stock
optimizers and schedules by --set alone, and the errors for bad names and options.

The plugin package (tests/plugins/i2i_loopkit) is pip-installed as users install one, and imports only i2i.api.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from typing import ClassVar

import pytest

from conftest import RECIPES, TINY, assert_same_final_state, error_line, run_module
from i2i.api import Callback, Option, hookimpl
from i2i.contract.registry import default_registry
from test_plugins import pip_install

QUICK = RECIPES / "quickstart.toml"
# Lion (the plugin's optimizer), its exponential schedule (2 epochs of 4 steps, then max_steps ends it) and
# its tally callback, which keeps state and adds to every log record
LOOPKIT = ["--set", "optim.optimizer=loopkit_lion", "--set", "optim.lr=1e-4", "--set", "schedule.name=loopkit_exp",
           "--set", "schedule.gamma=0.5", "--set", "callback.loopkit_tally.loss=cycle_A"]
SHORT = [*TINY, "--set", "data.count=4", "--set", "train.epochs=3", "--set", "train.decay_epochs=0",
         "--set", "train.max_steps=10", "--set", "train.log_every=1", "--set", "train.checkpoint_every=5"]


@pytest.fixture(scope="module")
def loopkit_env(tmp_path_factory) -> dict[str, str]:
    return {**pip_install(tmp_path_factory.mktemp("site"), "i2i_loopkit"), "OMP_NUM_THREADS": "1"}


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_recipe_uses_the_plugin_callback_optimizer_and_schedule(loopkit_env, tmp_path):
    run = tmp_path / "run"
    result = run_module("run", QUICK, *SHORT, *LOOPKIT, "--out", run, env=loopkit_env)
    assert result.code == 0, result.err
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    assert recipe["optim"]["optimizer"] == "loopkit_lion" and recipe["optim"]["beta2"] == 0.99  # its default
    assert recipe["schedule"] == {"name": "loopkit_exp", "gamma": 0.5}
    assert recipe["callback"]["loopkit_tally"] == {"enabled": True, "loss": "cycle_A", "stop_at": 0}
    logged = records(run)
    assert [r["loopkit"]["steps"] for r in logged] == list(range(1, 11))
    # the tally's sum equals the sum of the logged per-step cycle losses (log_every = 1)
    assert logged[-1]["loopkit"]["total"] == pytest.approx(sum(r["losses"]["cycle_A"] for r in logged), rel=1e-5)
    assert [r["lr"]["G"] for r in logged] == pytest.approx([1e-4] * 4 + [5e-5] * 4 + [2.5e-5] * 2)
    assert json.loads((run / "loopkit.json").read_text())["outcome"] == "finished"


def test_the_plugin_command_runs_and_is_listed(loopkit_env, tmp_path):
    run = tmp_path / "run"
    assert run_module("run", QUICK, *TINY, "--out", run, env=loopkit_env).code == 0
    shown = run_module("loopkit", run, env=loopkit_env)
    assert shown.code == 0, shown.err
    assert "step-00000004 at step 4, 2 log lines" in shown.out
    assert "step-00000002 at step 2" in run_module("loopkit", run, "--checkpoint", "step-2", env=loopkit_env).out
    assert "loopkit" in run_module("--help", env=loopkit_env).out


def test_a_sweep_runs_on_the_plugin_executor(loopkit_env, tmp_path):
    out = tmp_path / "sweep"
    result = run_module("sweep", QUICK, *TINY, "--set", "train.max_steps=2", "--grid", "run.seed=0,1",
                        "--executor", "in_order", "--out", out, env=loopkit_env)
    assert result.code == 0, result.err
    state = json.loads((out / "sweep.json").read_text())
    assert {name: run["detail"] for name, run in state["runs"].items()} == {
        "run.seed=0": "in_order, exit code 0", "run.seed=1": "in_order, exit code 0"}
    assert (out / "run.seed=1" / "checkpoints" / "step-00000002").is_dir() and (out / "compare.html").is_file()


def test_kill_9_then_resume_is_bit_identical_with_the_plugin_parts(loopkit_env, tmp_path):
    long = [*SHORT, *LOOPKIT, "--set", "data.count=8", "--set", "train.epochs=5", "--set", "train.max_steps=40",
            "--set", "train.checkpoint_every=3", "--set", "train.log_every=4", "--set", "train.keep_checkpoints=0"]
    assert run_module("run", QUICK, *long, "--out", tmp_path / "whole", env=loopkit_env).code == 0
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "i2i", "run", str(QUICK), *long, "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **loopkit_env})
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "step-00000009").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoints" / "step-00000040").exists(), "the run finished before it was killed"
    resumed = run_module("run", QUICK, *long, "--out", run, "--resume", env=loopkit_env)
    assert resumed.code == 0, resumed.err
    # every tensor of the final checkpoint (weights, Lion's momenta, the tally, RNGs) and every metrics line
    assert_same_final_state(tmp_path / "whole", run, 40)
    assert records(run)[-1]["loopkit"]["steps"] == 40


def test_training_end_is_told_how_training_ended(loopkit_env, tmp_path):
    run = tmp_path / "run"
    # a learning rate that makes the losses overflow: the finite check stops the run, the callback hears it
    result = run_module("run", QUICK, *SHORT, *LOOPKIT, "--set", "optim.lr=1e30", "--out", run, env=loopkit_env)
    assert "became" in error_line(result)
    note = json.loads((run / "loopkit.json").read_text())
    assert note["outcome"] == "failed" and "became" in note["error"]


def test_a_callback_can_stop_training_early_with_a_checkpoint(loopkit_env, tmp_path):
    run = tmp_path / "run"
    result = run_module("run", QUICK, *SHORT, *LOOPKIT, "--set", "callback.loopkit_tally.stop_at=7", "--out", run,
                        env=loopkit_env)
    assert result.code == 0, result.err
    assert "training stopped at step 7: loopkit_tally.stop_at = 7" in result.err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000005", "step-00000007"]
    assert json.loads((run / "loopkit.json").read_text())["outcome"] == "stopped"
    assert records(run)[-1]["step"] == 7


def test_ttur_and_a_cosine_schedule_by_set_alone(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", "train.max_steps=6", "--set", "train.log_every=1",
                 "--set", "optim.D.lr=4e-4", "--set", "schedule.name=cosine", "--out", run)
    assert result.code == 0, result.err
    logged = records(run)
    cosine = [0.5 * (1 + math.cos(math.pi * s / 5)) for s in range(6)]  # the step index that used the rate
    assert [r["lr"]["G"] for r in logged] == pytest.approx([2e-4 * f for f in cosine])
    assert [r["lr"]["D"] for r in logged] == pytest.approx([4e-4 * f for f in cosine])
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    assert recipe["optim"]["D"] == {"lr": 4e-4} and recipe["optim"]["lr"] == 2e-4  # written as given


def test_warmup_and_per_group_optimizer(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", "train.log_every=1", "--set", "schedule.name=constant",
                 "--set", "schedule.warmup_steps=4", "--set", "optim.D.optimizer=sgd", "--set", "optim.D.lr=0.01",
                 "--set", "optim.D.momentum=0.9", "--out", run)
    assert result.code == 0, result.err
    assert [r["lr"]["G"] for r in records(run)] == pytest.approx([5e-5, 1e-4, 1.5e-4, 2e-4])
    assert [r["lr"]["D"] for r in records(run)] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])


def test_stock_callbacks_can_be_turned_off(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", "callback.report.enabled=false",
                 "--set", "callback.progress.enabled=false", "--out", run)
    assert result.code == 0, result.err
    assert not (run / "report.html").exists() and (run / "metrics.jsonl").exists()
    assert "training cycle" not in result.err and "step 2/4" not in result.err


@pytest.mark.parametrize(("overrides", "expected"), [
    (["optim.optimizer=adamm"], "unknown optimizer 'adamm': did you mean 'adam'?"),
    (["schedule.name=cosin"], "unknown schedule 'cosin': did you mean 'cosine'?"),
    (["callback.metrcs.enabled=true"], "unknown callback 'metrcs': did you mean 'metrics'?"),
    (["optim.X.lr=1e-3"], "method 'cycle' has no optimizer group 'X'"),
    (["optim.D.lr=-1"], "[optim.D] lr = -1.0 is out of range"),
    (["optim.D.betas=0.5"], "unknown key 'betas' in [optim.D]: did you mean 'beta2'?"),
    (["schedule.warmup_steps=-2"], "[schedule] warmup_steps = -2 is out of range"),
    (["callback.report.interval=fast"], "[callback.report] interval must be a float"),
    (["callback.report.enabled=1"], "[callback.report] enabled must be a bool"),
    (["optim.optimizer=sgd", "optim.nesterov=true"], "[optim] nesterov = true needs momentum > 0"),
])
def test_bad_names_and_options_are_refused_before_training(cli, tmp_path, overrides, expected):
    args = [x for o in overrides for x in ("--set", o)]
    line = error_line(cli("run", QUICK, *TINY, *args, "--out", tmp_path / "run"))
    assert expected in line, line
    assert not (tmp_path / "run").exists()


def test_swapping_the_optimizer_drops_the_keys_it_does_not_take(cli, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(QUICK.read_text().replace("[optim]\nlr = 2e-4", "[optim]\nlr = 2e-4\nbeta1 = 0.5"))
    result = cli("run", recipe, *TINY, "--set", "optim.optimizer=sgd", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    assert "[optim] optimizer = 'sgd' (from --set) does not take beta1 from the recipe file: dropped" in result.err


class AskAt(Callback):
    """Asks for a checkpoint at one step, off every schedule (as validation's keep_best does), and can make one of
    that step's losses NaN."""

    name = "test_ask_at"
    options = (Option("step", int, 0, "the step to ask at"), Option("poison", str, "", "the loss to make NaN there"))
    #: (checkpoint_due before asking, checkpoint_pending after, control.checkpoint_due after) at that step
    seen: ClassVar[list[tuple[bool, bool, bool]]] = []

    def __init__(self, *, step: int = 0, poison: str = "") -> None:
        self.step, self.poison = step, poison

    def on_step_end(self, context, losses) -> None:
        if context.step != self.step:
            return
        before = context.control.checkpoint_due
        context.request_checkpoint()  # the alias a callback written before context.control calls
        AskAt.seen.append((before, context.checkpoint_pending, context.control.checkpoint_due))
        if self.poison:
            losses[self.poison].fill_(float("nan"))


class AskAtPlugin:
    @hookimpl
    def i2i_callbacks(self):
        return [AskAt]


@pytest.fixture
def ask_at():
    registry = default_registry()  # the one the in-process CLI uses
    registry.register(AskAtPlugin(), name="ask-at-test")
    AskAt.seen.clear()
    yield
    registry.manager.unregister(name="ask-at-test")
    registry._parts = None


# no periodic checkpoints; the only log point is the last step (4)
OFF_SCHEDULE = [*TINY, "--set", "callback.checkpoints.every=0", "--set", "train.log_every=4",
                "--set", "callback.test_ask_at.step=3"]


def test_a_checkpoint_a_callback_asks_for_off_schedule_is_written(cli, tmp_path, ask_at):
    run = tmp_path / "run"
    result = cli("run", QUICK, *OFF_SCHEDULE, "--out", run)
    assert result.code == 0, result.err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003", "step-00000004"]
    assert AskAt.seen == [(False, True, True)]


def test_a_nan_at_a_step_only_a_callback_checkpoints_leaves_no_checkpoint_of_it(cli, tmp_path, ask_at):
    run = tmp_path / "run"
    result = cli("run", QUICK, *OFF_SCHEDULE, "--set", "callback.test_ask_at.poison=cycle_A", "--out", run)
    line = error_line(result)
    # the finite check (order 250) saw that a checkpoint was due at step 3 and checked before it was written
    assert "loss cycle_A became nan at step 3" in line and "no checkpoint was written" in line, line
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
