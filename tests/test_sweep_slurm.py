"""Sweeps on SLURM (`--executor slurm`): one job array, a submitter killed mid-sweep, `--resume`, `--status`.

The SLURM tests need the single-node cluster .ci/slurm-up starts (as root); without it they skip saying so. The
bad-input tests and `--status` need no cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RECIPES, TINY, error_line

QUICK = RECIPES / "quickstart.toml"
GRID = ["--grid", "loss.cycle.weight=1,5,10"]


def slurm_down_reason() -> str:
    """Why the SLURM tests cannot run here ("" when a node is up)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed (bash .ci/slurm-up, as root, installs and starts a one-node cluster)"
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    if proc.returncode != 0 or not any(s.strip().rstrip("*") in ("idle", "mixed", "allocated")
                                       for s in proc.stdout.split()):
        return f"no SLURM node is up ({(proc.stderr or proc.stdout).strip() or 'sinfo lists none'}): bash .ci/slurm-up"
    return ""


needs_slurm = pytest.mark.skipif(bool(slurm_down_reason()), reason=slurm_down_reason() or "SLURM is up")


def state_of(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").exists() else {"runs": {}}


def queue(job: str) -> str:
    found = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", job.split("_")[0]], capture_output=True,
                           text=True).stdout
    return dict(line.split("|") for line in found.split()).get(job, "")


@needs_slurm
def test_a_slurm_sweep_is_one_array_and_resumes_after_the_submitter_dies(cli, tmp_path):
    out = tmp_path / "sweep"
    # each task asks for every CPU of the one node, so the array's tasks run one after another: the kill below
    # lands with one run finished, one running and one queued
    cpus = ["--slurm-cpus", str(os.cpu_count()), "--slurm-time", "10", "--set", "callback.samples.images=0"]
    args = [sys.executable, "-m", "i2i", "sweep", str(QUICK), *TINY, *GRID, "--out", str(out), "--executor", "slurm",
            *cpus]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while not any(r["status"] == "finished" for r in state_of(out)["runs"].values()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no run finished in 120 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the submitter only: its jobs belong to SLURM and go on
    proc.wait()
    before = state_of(out)["runs"]
    jobs = {name: run["job"] for name, run in before.items()}
    assert len(jobs) == 3 and len({job.split("_")[0] for job in jobs.values()}) == 1  # one array
    finished = [name for name, run in before.items() if run["status"] == "finished"]
    assert len(finished) == 1
    stamp = (out / finished[0] / "metrics.jsonl").stat().st_mtime_ns
    # the queued one is cancelled, as preemption would end it: --resume must submit it again; the running one it
    # must follow, not start a second time
    states = {}
    while "RUNNING" not in states.values():  # the scheduler starts the next task within seconds of the first's end
        states = {name: queue(job) for name, job in jobs.items() if name not in finished}
        assert time.monotonic() < deadline, states
        time.sleep(0.1)
    assert sorted(states.values()) == ["PENDING", "RUNNING"], states
    cancelled = next(name for name, state in states.items() if state == "PENDING")
    running = next(name for name, state in states.items() if state == "RUNNING")
    subprocess.run(["scancel", jobs[cancelled]], check=True)
    while queue(jobs[cancelled]):
        time.sleep(0.1)

    status = cli("sweep", "--status", out)
    assert status.code == 0, status.err
    lines = {line.split("  ")[0]: line for line in status.out.splitlines()}
    assert f"finished  job {jobs[finished[0]]}  step 4/4" in lines[finished[0]]
    assert f"running  job {jobs[running]}" in lines[running]
    assert f"ended (resubmitted by --resume)  job {jobs[cancelled]}  step -" in lines[cancelled]

    result = cli("sweep", QUICK, *TINY, *GRID, "--set", "callback.samples.images=0", "--out", out, "--resume")
    assert result.code == 0, result.err
    assert "2 finished, 1 skipped" in result.out
    assert (out / "compare.html").exists()
    after = state_of(out)["runs"]
    assert all(run["status"] == "finished" for run in after.values())
    assert (out / finished[0] / "metrics.jsonl").stat().st_mtime_ns == stamp  # not run again
    assert after[running]["job"] == jobs[running]  # followed, not resubmitted
    assert after[cancelled]["job"].split("_")[0] != jobs[cancelled].split("_")[0]  # resubmitted
    assert f"submitted  {cancelled}" in result.err and f"submitted  {running}" not in result.err
    for name in after:
        assert (out / name / "checkpoints" / "step-00000004").is_dir()
        steps = [json.loads(line).get("step") for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert steps.count(4) == 1, (name, steps)  # trained once


def test_status_says_where_each_run_stands(cli, tmp_path):
    out = tmp_path / "sweep"
    short = [*TINY, "--set", "train.max_steps=2", "--set", "callback.samples.images=0"]
    assert cli("sweep", QUICK, *short, "--grid", "loss.cycle.weight=1", "--out", out).code == 0
    result = cli("sweep", "--status", out)
    assert result.code == 0, result.err
    assert result.out.startswith("loss.cycle.weight=1  finished  job -  step 2/2  (")


def test_status_of_a_folder_without_a_sweep_is_one_line(cli, tmp_path):
    line = error_line(cli("sweep", "--status", tmp_path))
    assert "holds no sweep (sweep.json is missing)" in line


def test_a_missing_submitit_is_one_line_before_anything_is_written(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # what `import submitit` meets when it is not installed
    out = tmp_path / "sweep"
    result = cli("sweep", QUICK, *TINY, *GRID, "--out", out, "--executor", "slurm")
    assert result.code == 2
    assert 'pip install "i2i-toolkit[slurm]"' in error_line(result)
    assert not out.exists()


def test_no_sbatch_on_path_and_an_unknown_executor_are_one_line(cli, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    line = error_line(cli("sweep", QUICK, *TINY, *GRID, "--out", out, "--executor", "slurm"))
    assert "sbatch" in line and "not found on PATH" in line and "--executor local" in line
    line = error_line(cli("sweep", QUICK, *TINY, *GRID, "--out", out, "--executor", "slrum"))
    assert "unknown executor 'slrum'" in line and "did you mean 'slurm'" in line and "local" in line
    assert not out.exists()
