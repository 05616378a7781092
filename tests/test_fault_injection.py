"""Fault injection: kill -9 at random moments (many trials, bounded in number) and a disk that fills up.

Whatever moment a run dies at, `--resume` must find a complete checkpoint and finish bit for bit as an
uninterrupted run; a full disk must leave the previous checkpoint intact and say so in one line. Nothing here
is bounded by wall-clock time but hang detection, so a loaded machine only makes it slower.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RECIPES, TINY, Result, assert_same_final_state, error_line
from i2i.storage.checkpoint import list_checkpoints, read_tensors, read_training_json

# The trials fork a process that has imported torch: relied on (and tested) on Linux only.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks a process (Linux only)")

QUICK = RECIPES / "quickstart.toml"
STEPS = 12
# callback.checkpoints.keep=2 makes every save also prune, so kills land in deletions too; a pool of 3 keeps its
# random swaps (and their RNG state) in play across resumes.
KILLED = [*TINY, "--set", f"train.max_steps={STEPS}", "--set", "callback.checkpoints.every=1",
          "--set", "train.log_every=4", "--set", "callback.checkpoints.keep=2", "--set", "buffer.size=3",
          "--set", "callback.samples.images=1"]
MIN_KILLS = 12
MIN_MID_CHECKPOINT = 2  # of them, landed while a checkpoint was being written or pruned
# Children the campaign may start, killed or not: it stops at MIN_KILLS kills (MIN_MID_CHECKPOINT of them
# mid-checkpoint), which takes about 2 * MIN_KILLS; a bound on trials, not time, holds on a loaded machine.
MAX_TRIALS = 4 * MIN_KILLS
# A kill at a random moment comes within this share of the uninterrupted run's duration, measured in the same
# session: on a quiet machine about 1 s (start-up and the first steps), and as far into the run under load.
RANDOM_MOMENT = 0.3

# A process that imports i2i once and then forks one child per trial, so a trial starts in milliseconds
# rather than the seconds an interpreter needs to import torch. It computes nothing itself, so the children
# start from the state a fresh `i2i` process has. A child either runs `i2i ARGS` to the end or, when asked,
# SIGKILLs itself at its n-th file-system call (a write, fsync, rename, replace, unlink or rmdir): mid-file,
# mid-checkpoint or mid-prune. The parent reaps a child only when the test says so, so its pid cannot be reused
# before the test has killed it.
FORKER = r"""
import errno, json, os, signal, sys
import i2i.engine
from i2i.cli import main
from i2i.contract.registry import default_registry

default_registry()

def disk_full_from(n):
    # From the n-th file opened for writing in a checkpoint's temp folder on, writes fail as on a full disk
    # (after half the data got through).
    opened, doomed = [0], set()
    real_open, real_write, real_close = os.open, os.write, os.close
    def open_(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if ".tmp-" in os.fspath(path) and flags & os.O_WRONLY:
            opened[0] += 1
            if opened[0] >= n:
                doomed.add(fd)
        return fd
    def write(fd, data):
        if fd in doomed:
            real_write(fd, memoryview(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)
    def close(fd):
        doomed.discard(fd)
        return real_close(fd)
    os.open, os.write, os.close = open_, write, close

def die_at(n):
    calls = [0]
    def wrap(name):
        real = getattr(os, name)
        def call(*args, **kwargs):
            calls[0] += 1
            if calls[0] >= n:
                if name == "write" and len(args[1]) > 1:
                    real(args[0], memoryview(args[1])[: len(args[1]) // 2])  # half a file reaches the disk
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        setattr(os, name, call)
    for name in ("write", "fsync", "rename", "replace", "unlink", "rmdir"):
        wrap(name)

for line in sys.stdin:
    order = json.loads(line)
    pid = os.fork()
    if pid == 0:
        log = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        if order["die_at"]:
            die_at(order["die_at"])
        if order["disk_full_from"]:
            disk_full_from(order["disk_full_from"])
        code = 0
        try:
            main(order["args"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
    sys.stdin.readline()
    print(os.waitpid(pid, 0)[1], flush=True)
"""


class Forker:
    """Runs `i2i ARGS` in forked children of one long-lived process, and kills them on request."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir()
        # One thread per process: on a busy 2-core machine torch's spinning threads only slow each other down.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", FORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.count = 0

    def start(self, args: list[str], die_at: int = 0, disk_full_from: int = 0) -> int:
        """Start a child running `i2i ARGS`; it kills itself at its `die_at`-th file-system call, and its disk
        is full from the `disk_full_from`-th checkpoint file on (0: never)."""
        self.count += 1
        self.log = self.logs / f"{self.count:03d}.log"
        order = {"args": [str(a) for a in args], "log": str(self.log), "die_at": die_at,
                 "disk_full_from": disk_full_from}
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()
        self.pid = int(self.proc.stdout.readline())
        return self.pid

    def reap(self, timeout: float = 120) -> int:
        """Wait for the child; its wait status."""
        self.proc.stdin.write("reap\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:  # readline would block forever on a hung child; poll the pipe instead
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                return int(self.proc.stdout.readline())
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)  # so the forker can go on (and be stopped)
                raise AssertionError(f"i2i hung; it printed: {self.log.read_text()[-2000:]}")

    def run(self, args: list[str], **faults: int) -> tuple[int, str]:
        """Run `i2i ARGS` to its end: the exit code and what it printed."""
        self.start(args, **faults)
        return os.waitstatus_to_exitcode(self.reap()), self.log.read_text()

    def close(self) -> None:
        """Stop the forking process."""
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def forker(tmp_path_factory):
    """One forking process for the module's runs."""
    started = Forker(tmp_path_factory.mktemp("forker") / "logs")
    yield started
    started.close()


@pytest.fixture(scope="module")
def uninterrupted(forker, tmp_path_factory) -> tuple[Path, float]:
    """The uninterrupted run every interrupted one must end up equal to, and how long it took (s)."""
    run = tmp_path_factory.mktemp("whole") / "run"
    started = time.monotonic()
    code, log = forker.run(["run", QUICK, *KILLED, "--out", run])
    assert code == 0, log
    return run, time.monotonic() - started


@pytest.fixture(scope="module")
def whole(uninterrupted) -> Path:
    """The uninterrupted run's folder."""
    return uninterrupted[0]


def assert_every_checkpoint_is_complete(run: Path) -> None:
    """Each folder under a checkpoint name loads completely and matches its recorded checksums."""
    for folder in list_checkpoints(run / "checkpoints"):
        read_training_json(folder)
        for file in folder.glob("*.safetensors"):
            read_tensors(file)


def partial_folders(run: Path) -> set[str]:
    """The temporary folders of checkpoints being written or pruned (.step-*) in a run folder."""
    return {p.name for p in (run / "checkpoints").glob(".step-*")}


def test_kill_9_at_random_moments_then_resume_is_bit_identical(forker, uninterrupted, tmp_path):
    whole, whole_seconds = uninterrupted
    rng = random.Random(9)
    kills = mid_checkpoint = campaigns = trials = 0
    # Runs killed and resumed until they finish, one after another, until enough kills landed, enough of them
    # mid-checkpoint (or MAX_TRIALS children were started): a run may finish after a few kills.
    while campaigns == 0 or ((kills < MIN_KILLS or mid_checkpoint < MIN_MID_CHECKPOINT) and trials < MAX_TRIALS):
        campaigns += 1
        run = tmp_path / f"killed-{campaigns}"
        args = ["run", QUICK, *KILLED, "--out", run, "--resume"]
        finished = False
        while not finished and trials < MAX_TRIALS:
            trials += 1
            before = partial_folders(run)
            if kills % 2 == 0:  # the n-th file-system call: within about the next checkpoint or two, whatever
                # the machine's speed; most such calls happen inside a .step-* folder that the kill leaves behind
                pid = forker.start(args, die_at=rng.randint(1, 30))
            else:  # a random moment, from start-up (loading the checkpoint) to a few steps in
                pid = forker.start(args)
                time.sleep(rng.uniform(0.0, RANDOM_MOMENT * whole_seconds))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            status = forker.reap()
            if os.WIFSIGNALED(status):
                assert os.WTERMSIG(status) == signal.SIGKILL
                kills += 1
                mid_checkpoint += bool(partial_folders(run) - before)  # this kill's, not an earlier one's
            else:
                assert os.waitstatus_to_exitcode(status) == 0, forker.log.read_text()
                finished = True
            log = forker.log.read_text()
            # a folder under a checkpoint's name is always complete, so no resume ever has to skip one
            assert "Traceback" not in log and "cannot resume" not in log, log
            if run.exists():
                assert_every_checkpoint_is_complete(run)
        if not finished:
            code, log = forker.run(args)
            assert code == 0 and "cannot resume" not in log, log
        assert_same_final_state(whole, run, STEPS)
        # the partial folders the kills left behind were removed by later saves
        assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert kills >= MIN_KILLS, f"only {kills} of {trials} children were killed before they finished"
    assert mid_checkpoint >= MIN_MID_CHECKPOINT, \
        f"only {mid_checkpoint} of {kills} kills landed while a checkpoint was written"


def assert_disk_full_is_reported_and_resumable(forker, whole: Path, run: Path, code: int, log: str) -> None:
    """The failed run said which checkpoint it could not write and that the previous one is intact, left no
    partial folder, and --resume (with space again) finishes bit for bit as the uninterrupted run."""
    assert code == 2, log
    line = error_line(Result(code, "", log))
    kept = list_checkpoints(run / "checkpoints")
    assert kept, "no checkpoint survived"
    assert "No space left on device" in line and f"the previous checkpoint {kept[-1]} is intact" in line, line
    failed = int(line.split("could not write checkpoint ")[1].split(":")[0].rsplit("step-", 1)[1])
    assert int(kept[-1].name[5:]) == failed - 1, (line, kept)
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert_every_checkpoint_is_complete(run)
    code, log = forker.run(["run", QUICK, *KILLED, "--out", run, "--resume"])
    assert code == 0 and "cannot resume" not in log, log
    assert_same_final_state(whole, run, STEPS)


def test_a_write_failing_with_enospc_keeps_the_previous_checkpoint(forker, whole, tmp_path):
    run = tmp_path / "full"
    # 6 files per checkpoint: the disk fills during the second file of the fourth checkpoint
    code, log = forker.run(["run", QUICK, *KILLED, "--out", run], disk_full_from=3 * 6 + 2)
    assert "could not write checkpoint" in log and "step-00000004" in log, log
    assert_disk_full_is_reported_and_resumable(forker, whole, run, code, log)


def test_a_real_full_tmpfs_keeps_the_previous_checkpoint(forker, whole, tmp_path):
    checkpoints = tmp_path / "full" / "checkpoints"
    checkpoints.mkdir(parents=True)
    size = sum(-(-f.stat().st_size // 4096) * 4096 for f in (whole / "checkpoints").glob("step-*/*"))
    size //= len(list((whole / "checkpoints").glob("step-*")))  # one checkpoint, in whole pages
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size * 5 // 2}", "tmpfs", str(checkpoints)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        # room for two and a half checkpoints: the third one does not fit
        code, log = forker.run(["run", QUICK, *KILLED, "--set", "callback.checkpoints.keep=0",
                                "--out", checkpoints.parent])
        assert code == 2, log
        subprocess.run(["mount", "-o", "remount,size=64m", str(checkpoints)], check=True)
        assert_disk_full_is_reported_and_resumable(forker, whole, checkpoints.parent, code, log)
    finally:
        subprocess.run(["umount", str(checkpoints)], check=False)
