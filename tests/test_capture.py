"""run.capture: the capture-ready training step (recorded as a CUDA graph on a GPU, run eagerly on the CPU).

A captured step must not read tensor values on the host: the engine counts such reads in the first step and refuses
the run naming the line. Every stock recipe trains with capture on (so none of its parts reads a value in the step),
a part that does is refused naming its line, a captured run resumes bit-identically after kill -9, and what capture
cannot run with is refused in one line before anything is written.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

import i2i
from i2i.api import Buffer, Optimizer, Option
from conftest import RECIPES, TINY, assert_same_final_state, checkpoint_tensors, error_line, kill_9_at
from test_pinned_weights import SETTINGS, SHORT

CAPTURE = ["--set", "run.capture=true"]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


#: the recipes whose parts differ in their capture-ready forms (cyclegan and finetune_cyclegan have the quick start's
#: parts at other sizes; cyclegan_timm's timm networks are tensor operations only)
DISTINCT = ("quickstart", "cyclegan_fast", "cut", "fastcut", "pix2pix", "dualgan", "discogan")


@pytest.mark.parametrize("recipe", DISTINCT)
def test_every_recipe_trains_with_a_step_that_reads_nothing_on_the_host(cli, tmp_path, recipe, one_thread):
    run = tmp_path / recipe
    result = cli("run", RECIPES / f"{recipe}.toml", *SHORT, *SETTINGS[recipe], *CAPTURE, "--out", run)
    assert result.code == 0, result.err
    # the engine refuses a step with host reads (tested below), so finishing is the check; and it trained
    last = metrics(run)[-1]
    assert last["step"] >= 6 and all(v == v for v in last["losses"].values())


def test_the_captured_step_keeps_the_recipe_s_pool_rates_and_adaptive_augment(cli, tmp_path, one_thread):
    """The pool fills on the device and is saved like the eager one; the schedule's rates and ADA's p move."""
    args = [RECIPES / "quickstart.toml", *TINY, "--set", "buffer.size=3", "--set", "train.max_steps=12",
            "--set", "augment.name=ada", "--set", "augment.interval=1", "--set", "augment.speed=8", "--set", "augment.p_init=0.5",
            "--set", "train.epochs=1", "--set", "train.decay_epochs=2", "--set", "train.log_every=3"]
    assert cli("run", *args, "--out", tmp_path / "eager").code == 0
    assert cli("run", *args, *CAPTURE, "--out", tmp_path / "captured").code == 0
    eager, captured = metrics(tmp_path / "eager"), metrics(tmp_path / "captured")
    # the schedule fills the device learning rates in place: the same rates (to float32) at every log point
    assert [m["lr"]["G"] for m in captured] == pytest.approx([m["lr"]["G"] for m in eager], rel=1e-6)
    assert captured[-1]["lr"]["G"] < captured[0]["lr"]["G"]
    # ADA's p moves on the device by the same rule (its own draws differ from the eager run's)
    assert len({m["augment_p"]["D_A"] for m in captured}) > 1
    pool = checkpoint_tensors(tmp_path / "captured" / "checkpoints" / "step-00000012")
    assert pool["training/buffer.fake_A_pool.images"].shape[0] == 3


def test_lazy_r1_runs_in_a_captured_step_and_keeps_its_round_count(cli, tmp_path, one_thread):
    """Lazy R1 counts its rounds on the device and weights the penalty by whether it is due (no host read)."""
    args = [RECIPES / "quickstart.toml", *TINY, "--set", "loss.adversarial.r1_weight=1", "--set",
            "loss.adversarial.r1_every=3", "--set", "train.max_steps=5"]
    eager, captured = tmp_path / "eager", tmp_path / "captured"
    assert cli("run", *args, "--out", eager).code == 0
    result = cli("run", *args, *CAPTURE, "--out", captured)
    assert result.code == 0, result.err
    rounds = [checkpoint_tensors(run / "checkpoints" / "step-00000005")["training/loss.adversarial.r1_rounds"]
              for run in (eager, captured)]
    assert int(rounds[0]) == int(rounds[1]) == 5


class HostReadingPool(Buffer):
    """A pool written the eager way: it decides on the host, which a captured step cannot replay."""

    name = "host_reading_pool"

    def query(self, images: Tensor) -> Tensor:
        if torch.rand(()).item() > 0.5:
            return images.flip(0)
        return images


class FloatLrOptimizer(Optimizer):
    """An optimizer without a capture-ready build."""

    name = "plain_sgd"
    options = (Option("lr", float, 0.01, "learning rate"),)

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr

    def build(self, params):
        return torch.optim.SGD(params, lr=self.lr)


@pytest.fixture
def test_parts():
    """HostReadingPool and FloatLrOptimizer registered as a plugin for the test."""
    from i2i.contract.registry import default_registry

    class Plugin:
        @i2i.hookimpl
        def i2i_buffers(self):
            return [HostReadingPool]

        @i2i.hookimpl
        def i2i_optimizers(self):
            return [FloatLrOptimizer]

    registry = default_registry()
    registry.register(Plugin(), name="capture_test_parts")
    registry._parts = None
    yield
    registry.manager.unregister(name="capture_test_parts")
    registry._parts = None


def test_a_part_that_reads_a_value_on_the_host_is_refused_naming_its_line(cli, tmp_path, test_parts, one_thread):
    run = tmp_path / "run"
    args = [RECIPES / "quickstart.toml", *TINY, "--set", "buffer.name=host_reading_pool", "--out", run]
    assert cli("run", *args).code == 0  # eager, it trains
    line = error_line(cli("run", *args[:-2], *CAPTURE, "--out", tmp_path / "captured"))
    source = HostReadingPool.query.__code__
    assert "run.capture = true: the training step reads tensor values on the host" in line
    assert f"test_capture.py:{source.co_firstlineno + 1} (item)" in line and "run.capture = false" in line
    assert not list((tmp_path / "captured").glob("checkpoints/step-*"))


def test_kill_9_then_resume_of_a_captured_run_equals_an_uninterrupted_one(cli, tmp_path):
    args = [RECIPES / "quickstart.toml", *TINY, *CAPTURE, "--set", "data.count=16", "--set", "train.max_steps=30",
            "--set", "callback.checkpoints.every=3", "--set", "train.log_every=5", "--set", "buffer.size=3",
            "--set", "augment.name=ada", "--set", "augment.interval=1", "--set", "augment.speed=8", "--set", "augment.p_init=0.5",
            "--set", "train.keep_checkpoints=0", "--set", "run.threads=1"]
    assert cli("run", *args, "--out", tmp_path / "whole").code == 0
    run = tmp_path / "killed"
    kill_9_at(run, 9, 30, args)
    result = cli("run", *args, "--out", run, "--resume")
    assert result.code == 0, result.err
    assert_same_final_state(tmp_path / "whole", run, 30)


@pytest.mark.parametrize("setting, expected", [
    (["run.precision=fp16"], "run.capture = true cannot run with run.precision = \"fp16\""),
    (["run.compile=true"], "run.capture = true and run.compile = true do not go together"),
    (["optim.implementation=single"], "optim.implementation = \"single\" cannot run in a captured step"),
    (["optim.optimizer=plain_sgd", "optim.lr=0.01"], "optimizer 'plain_sgd' has no capture-ready step"),
])
def test_what_capture_cannot_run_with_is_one_line_and_no_run_folder(cli, tmp_path, test_parts, setting, expected):
    sets = [arg for key in setting for arg in ("--set", key)]
    run = tmp_path / "run"
    line = error_line(cli("run", RECIPES / "quickstart.toml", *TINY, *CAPTURE, *sets, "--out", run))
    assert expected in line, line
    assert not run.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the step recorded as a CUDA graph)")
def test_on_a_gpu_the_recorded_step_trains_like_the_eager_one(cli, tmp_path):
    args = [RECIPES / "quickstart.toml", *TINY, "--set", "run.device=cuda", "--set", "train.max_steps=20",
            "--set", "train.log_every=5", "--set", "buffer.size=3"]
    assert cli("run", *args, "--out", tmp_path / "eager").code == 0
    result = cli("run", *args, *CAPTURE, "--out", tmp_path / "captured")
    assert result.code == 0, result.err
    eager, captured = metrics(tmp_path / "eager"), metrics(tmp_path / "captured")
    assert [m["step"] for m in captured] == [m["step"] for m in eager]
    # the pool's draws differ (they are made on the device), so losses agree in size, not bit for bit
    for name in ("cycle_A", "cycle_B"):
        assert captured[-1]["losses"][name] == pytest.approx(eager[-1]["losses"][name], rel=0.5)
