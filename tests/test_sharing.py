"""Runs that share a machine: CPU runs take an equal share of the CPUs among the i2i runs on them and follow as
runs start and end; a fixed [run] threads or OMP_NUM_THREADS is left alone; cgroup quotas count; sweeps say where
their runs go."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RECIPES, TINY, run_module
from i2i.engine.devices import cgroup_cpu_quota, usable_cpus
from i2i.tools.sweep import Placement

QUICK = RECIPES / "quickstart.toml"
#: a run long enough for another to start and end beside it (it is stopped once that is seen)
LONG = [*TINY, "--set", "train.max_steps=100000", "--set", "train.epochs=100000", "--set", "callback.checkpoints.every=0",
        "--set", "train.log_every=100000", "--set", "callback.progress.enabled=false"]
SHORT = [*TINY, "--set", "train.max_steps=2"]
two_cpus = pytest.mark.skipif(usable_cpus() < 2, reason="sharing needs at least 2 CPUs")


@pytest.fixture
def share(tmp_path, monkeypatch) -> dict[str, str]:
    """A registration folder of the test's own, so runs elsewhere on the machine do not count."""
    env = {"I2I_CPU_SHARE": str(tmp_path / "share")}
    monkeypatch.setenv("I2I_CPU_SHARE", env["I2I_CPU_SHARE"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return env


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, f"{text!r} did not appear in {path}: {path.read_text()}"
        time.sleep(0.1)


@two_cpus
def test_a_run_shares_the_cpus_with_a_second_one_and_takes_them_back(share, tmp_path):
    cpus = usable_cpus()
    log = tmp_path / "first.log"
    env = {**os.environ, **share}
    env.pop("OMP_NUM_THREADS", None)
    with open(log, "w") as f:
        first = subprocess.Popen([sys.executable, "-u", "-m", "i2i", "run", str(QUICK), *LONG, "--out", str(tmp_path / "a")],
                                 stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        registered = tmp_path / "share" / f"{first.pid}.json"
        deadline = time.monotonic() + 120
        while not registered.exists():  # the first run registered: it is training
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        second = run_module("run", QUICK, *SHORT, "--set", "train.max_steps=200", "--set", "train.epochs=1000", "--out", tmp_path / "b", env=share)
        assert second.code == 0, second.err
        assert f"CPU threads {cpus} -> {cpus // 2}: 2 i2i runs share its {cpus} CPUs" in second.err
        wait_for_text(log, f"CPU threads {cpus} -> {cpus // 2}: 2 i2i runs share its {cpus} CPUs", first)
        wait_for_text(log, f"CPU threads {cpus // 2} -> {cpus}: it is the only i2i run on its {cpus} CPUs", first)
    finally:
        first.kill()
        first.wait()
    # the killed run's registration is not counted: the next run alone keeps every CPU
    alone = run_module("run", QUICK, *SHORT, "--out", tmp_path / "c", env=share)
    assert alone.code == 0, alone.err
    assert "CPU threads" not in alone.err
    assert list((tmp_path / "share").iterdir()) == []


def test_fixed_threads_and_omp_num_threads_are_left_alone(share, tmp_path):
    fixed = run_module("run", QUICK, *SHORT, "--set", "run.threads=1", "--out", tmp_path / "a", env=share)
    assert fixed.code == 0, fixed.err
    if usable_cpus() > 1:
        assert "CPU threads" in fixed.err and "[run] threads = 1" in fixed.err
    env = {**share, "OMP_NUM_THREADS": "1"}
    (tmp_path / "share").mkdir(exist_ok=True)
    # a live process registered on every CPU: a managed run would take half
    (tmp_path / "share" / f"{os.getppid()}.json").write_text(
        '{"pid": %d, "cpus": %s}' % (os.getppid(), sorted(os.sched_getaffinity(0))))
    told = run_module("run", QUICK, *SHORT, "--out", tmp_path / "b", env=env)
    assert told.code == 0, told.err
    assert "CPU threads" not in told.err
    assert [p.name for p in (tmp_path / "share").iterdir()] == [f"{os.getppid()}.json"]


@two_cpus
def test_a_live_run_on_other_cpus_does_not_count(share, tmp_path):
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / f"{os.getppid()}.json").write_text('{"pid": %d, "cpus": [100000]}' % os.getppid())
    result = run_module("run", QUICK, *SHORT, "--out", tmp_path / "run", env=share)
    assert result.code == 0, result.err
    assert "CPU threads" not in result.err


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_a_cgroup_cpu_quota_caps_the_cpus(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == quota
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if quota is None else max(1, min(affinity, -(-quota // 1)))
    assert usable_cpus(tmp_path) == expected


def test_a_sweep_says_where_its_runs_go(cli, share, tmp_path):
    result = cli("sweep", QUICK, *SHORT, "--grid", "loss.identity.weight=0,0.5", "--out", tmp_path / "sweep",
                 "--jobs", "2")
    assert result.code == 0, result.err
    cpus = usable_cpus()
    share_each = max(1, cpus // 2)
    assert (f"note: 2 runs, 2 at a time on the CPU: each takes an equal share of the {cpus} CPUs ({share_each}"
            f" thread") in result.err


@pytest.mark.parametrize("device, jobs, runs, gpus, text, placed", [
    ("auto", 2, 4, 2, "4 runs, 2 at a time: one GPU each (GPUs 0-1)", [0, 1]),
    ("cuda", 4, 8, 2, "8 runs, 4 at a time: over 2 GPUs, up to 2 on each", [0, 1, 0, 1]),
    ("auto", 3, 3, 1, "3 runs, 3 at a time on GPU 0 (they share it)", [None, None, None]),
    ("cuda:1", 2, 2, 4, "2 runs, 2 at a time on GPU 1 (they share it)", [None, None]),
    ("mps", 2, 2, 0, "2 runs, 2 at a time on mps", [None, None]),
])
def test_gpu_placement(device, jobs, runs, gpus, text, placed):
    plan = Placement.plan(device, jobs, runs, gpu_count=gpus)
    assert plan.text.startswith(text)
    assert [plan.take() for _ in placed] == placed
    if placed[0] is not None:
        plan.give_back(0)
        assert plan.take() == 0, "a GPU a run left is the least busy again"
