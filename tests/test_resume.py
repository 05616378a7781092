"""Resume loses nothing: kill -9 or Ctrl-C mid-run, --resume, and the result equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RECIPES, TINY, assert_same_final_state, checkpoint_tensors, error_line, run_module

QUICK = RECIPES / "quickstart.toml"
# a pool of 3 fills in 3 steps, so its random swaps (and their RNG state) are exercised across the resume
LONG = [*TINY, "--set", "data.count=16", "--set", "train.max_steps=40", "--set", "train.checkpoint_every=3", "--set", "train.log_every=5",
        "--set", "buffer.size=3", "--set", "train.keep_checkpoints=0"]


def start(run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "i2i", "run", str(QUICK), *LONG, *extra, "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The uninterrupted run that both interrupted ones are compared with (trained once for the module)."""
    folder = tmp_path_factory.mktemp("resume")
    run = folder / "whole"
    # a CPU-share folder of its own, as every test has (conftest): no other run changes its thread count
    result = run_module("run", QUICK, *LONG, "--out", run, env={"I2I_CPU_SHARE": str(folder / "share")})
    assert result.code == 0, result.err
    return run


def test_kill_9_then_resume_equals_an_uninterrupted_run(cli, tmp_path, whole):
    run = tmp_path / "killed"
    proc = start(run)
    wait_for(run / "checkpoints" / "step-00000009", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "checkpoints" / "step-00000040").exists(), "the run finished before it was killed"
    result = cli("run", QUICK, *LONG, "--out", run, "--resume")
    assert result.code == 0, result.err
    assert_same_final_state(whole, run, 40)


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_identically(cli, tmp_path, whole):
    run = tmp_path / "stopped"
    proc = start(run)
    wait_for(run / "checkpoints" / "step-00000003", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: stopped at step" in err and "--resume" in err and "Traceback" not in err
    stopped_at = int(err.split("stopped at step ")[1].split(";")[0])
    assert (run / "checkpoints" / f"step-{stopped_at:08d}").is_dir()
    assert cli("run", QUICK, *LONG, "--out", run, "--resume").code == 0
    assert_same_final_state(whole, run, 40)


def test_a_truncated_newest_checkpoint_is_skipped_with_a_warning(cli, tmp_path):
    short = [*LONG, "--set", "train.max_steps=9"]
    assert cli("run", QUICK, *short, "--set", "train.max_steps=12", "--out", tmp_path / "whole").code == 0
    run = tmp_path / "damaged"
    assert cli("run", QUICK, *short, "--out", run).code == 0
    newest = run / "checkpoints" / "step-00000009" / "G_A.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    result = cli("run", QUICK, *short, "--set", "train.max_steps=12", "--out", run, "--resume")
    assert result.code == 0, result.err
    assert "cannot resume from step-00000009" in result.err and "G_A.safetensors" in result.err
    assert_same_final_state(tmp_path / "whole", run, 12)


def test_resuming_with_another_model_is_refused_naming_the_key(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("run", QUICK, *TINY, "--out", run).code == 0
    before = checkpoint_tensors(run / "checkpoints" / "step-00000004")
    line = error_line(cli("run", QUICK, *TINY, "--set", "generator.channels=8", "--out", run, "--resume"))
    assert "the recipe's model differs" in line and "G_A: key 'model.1.bias' has shape (8,)" in line
    assert "[generator] channels = 8 here, 4 in the checkpoint" in line
    after = checkpoint_tensors(run / "checkpoints" / "step-00000004")
    assert all(before[k].equal(after[k]) for k in before)


def test_keep_checkpoints_bounds_the_periodic_ones(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", "train.max_steps=6", "--set", "train.checkpoint_every=1",
                 "--set", "train.keep_checkpoints=2", "--out", run)
    assert result.code == 0, result.err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000004", "step-00000005", "step-00000006"]


def test_resume_without_a_checkpoint_starts_afresh_and_a_finished_run_stays(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--out", run, "--resume")
    assert result.code == 0 and "no complete checkpoint" in result.err
    before = checkpoint_tensors(run / "checkpoints" / "step-00000004")
    again = cli("run", QUICK, *TINY, "--out", run, "--resume")
    assert again.code == 0, again.err
    after = checkpoint_tensors(run / "checkpoints" / "step-00000004")
    assert all(before[k].equal(after[k]) for k in before)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_resuming_a_finished_run_removes_what_a_kill_mid_prune_left(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("run", QUICK, *TINY, "--out", run).code == 0
    # a kill -9 after a prune renamed step 2 aside but before it was deleted, during the final save
    os.rename(run / "checkpoints" / "step-00000002", run / "checkpoints" / ".step-00000002.deleting")
    result = cli("run", QUICK, *TINY, "--out", run, "--resume")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004"]
