"""`i2i search` through the CLI: workers sharing one journal, pruning, the best recipe, a killed worker, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import RECIPES, TINY, assert_same_final_state, error_line

optuna = pytest.importorskip("optuna", reason="the search extra (optuna) is not installed")

QUICK = RECIPES / "quickstart.toml"
# paired synthetic data gives AtoB.l1; validation at every log point (steps 2, 4, 6); one thread: bit-identical runs
BASE = [*TINY, "--set", "train.max_steps=6", "--set", "run.threads=1", "--set", "data.paired=true",
        "--set", "callback.validation.enabled=true", "--set", "callback.validation.every=2",
        "--set", "callback.validation.batch_size=8"]
DIVERGING = "1e20"  # a learning rate whose losses are not finite by step 2 (lr 10 stays finite, yet useless)


def study_of(out: Path) -> "optuna.study.Study":
    """The search's study, read back with Optuna's own API."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "journal.log")))
    return optuna.load_study(study_name="i2i-search", storage=storage)


def worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "i2i", "search", str(QUICK), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_workers_share_a_study_prune_a_diverged_trial_and_the_best_recipe_reproduces(cli, tmp_path, one_thread):
    out = tmp_path / "search"
    # the grid makes the six trials known: lr 2e-4, 2e-3 and the diverging one, each with two cycle weights
    args = [*BASE, "--param", f"optim.lr=choice:0.0002,0.002,{DIVERGING}", "--param", "loss.cycle.weight=int:5..6",
            "--objective", "AtoB.l1", "--trials", "6", "--sampler", "grid", "--out", out]
    workers = [worker(*args), worker(*args)]
    ends = [proc.communicate(timeout=240) for proc in workers]
    for proc, (stdout, stderr) in zip(workers, ends):
        assert proc.returncode == 0, stderr
    assert sum("best recipe:" in stdout for stdout, _ in ends) >= 1  # the last worker to end wrote the results
    assert all("started  trial" in stderr for _, stderr in ends)  # both worked on the study

    trials = study_of(out).get_trials()
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    assert sorted((t.params["optim.lr"], t.params["loss.cycle.weight"]) for t in trials) == sorted(
        (lr, w) for lr in ("0.0002", "0.002", DIVERGING) for w in (5, 6))
    diverged = [t for t in trials if t.params["optim.lr"] == DIVERGING]
    for trial in diverged:  # pruned, not failed, at the first validation point (step 2)
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["pruned"]["step"] == 2
        record = json.loads((out / "trials" / trial.user_attrs["folder"] / "trial.json").read_text())
        assert record["state"] == "PRUNED" and record["step"] == 2 and record["number"] == trial.number
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    best = min(complete, key=lambda t: t.value)
    run = out / "trials" / best.user_attrs["folder"]
    assert json.loads((run / "trial.json").read_text())["state"] == "COMPLETE"

    again = tmp_path / "again"
    result = cli("run", out / "best.toml", "--out", again)
    assert result.code == 0, result.err
    assert_same_final_state(run, again, 6)
    Image.open(out / "objective.png").verify()
    assert best.user_attrs["folder"] in (out / "compare.html").read_text()


def test_a_killed_worker_is_restarted_and_its_trial_continues_from_its_checkpoint(cli, tmp_path, one_thread):
    out = tmp_path / "search"
    args = [*BASE, "--set", "train.max_steps=8", "--param", "loss.cycle.weight=float:5..10", "--objective",
            "AtoB.l1", "--trials", "2", "--pruner", "none", "--sampler", "random", "--out", out]
    proc = worker(*args)
    first = out / "trials" / "trial-0000" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (first / "step-00000002").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (first / "step-00000008").exists(), "the trial ended before its worker was killed"
    kept = (first / "step-00000002").stat()

    result = cli("search", QUICK, *args)  # the restarted worker
    assert result.code == 0, result.err
    assert "is gone: a new trial continues its run trial-0000" in result.err
    trials = study_of(out).get_trials()
    dead = trials[0]
    assert dead.state == optuna.trial.TrialState.FAIL and dead.user_attrs["superseded"]
    continued = [t for t in trials if t.user_attrs.get("continues") == 0]
    assert len(continued) == 1 and continued[0].state == optuna.trial.TrialState.COMPLETE
    assert continued[0].params == dead.params
    # the budget counts the trials that ran to an end: the dead one is continued, not counted
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2
    # continued, not redone: the checkpoint written before the kill is the same folder, and training went on
    assert (first / "step-00000002").stat().st_ino == kept.st_ino
    assert (first / "step-00000008").is_dir()
    record = json.loads((first.parent / "trial.json").read_text())
    assert record["continues"] == 0 and record["number"] == continued[0].number and record["state"] == "COMPLETE"
    assert 2 in continued[0].intermediate_values  # what the run logged before the kill, reported again
    assert "best recipe:" in result.out


@pytest.mark.parametrize("flags, culprit", [
    (["--param", "optim.lrr=log:1e-4..1e-2"], "lrr"),
    (["--param", "optim.lr=float:0.1..0.1"], "is empty"),
    (["--param", "generator.blocks=int:5..2"], "is reversed"),
    (["--param", "optim.lr=log:0..1e-2"], "needs LO above 0"),
    (["--param", "generator.norm=choice:"], "an empty choice"),
    (["--param", "optim.lr=float:1e-4..1e-3", "--sampler", "grid"], "the grid sampler takes int ranges"),
    (["--set", "callback.validation.enabled=false"], "callback.validation is off"),
    (["--set", "data.paired=false"], "need paired data"),
    (["--objective", "AtoB.fid"], "need callback.validation.inception_weights"),
    (["--objective", "AtoB.lpips"], "is not DIRECTION.METRIC"),
])
def test_bad_input_is_one_line_before_anything_runs(cli, tmp_path, flags, culprit):
    out = tmp_path / "search"
    objective = [] if "--objective" in flags else ["--objective", "AtoB.l1"]
    param = [] if "--param" in flags else ["--param", "optim.lr=log:1e-4..1e-2"]
    line = error_line(cli("search", QUICK, *BASE, *param, *objective, *flags, "--out", out))
    assert culprit in line, line
    assert not out.exists()


def test_a_missing_extra_is_named(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the extra were not installed
    out = tmp_path / "search"
    line = error_line(cli("search", QUICK, *BASE, "--param", "optim.lr=log:1e-4..1e-2", "--objective", "AtoB.l1",
                          "--out", out))
    assert 'pip install "i2i-toolkit[search]"' in line
    assert not out.exists()
