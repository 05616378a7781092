"""Training on two processes with torchrun (gloo on the CPU), as users launch it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import RECIPES, TINY
from i2i.data.loader import EpochSampler

QUICK = RECIPES / "quickstart.toml"
PROBE = Path(__file__).parent / "distributed_probe.py"
# one torch thread per process: two processes share a 2-core CI machine
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(*args: str, processes: int = 2) -> list[str]:
    """The command line of `torchrun --standalone --nproc_per_node=N ARGS` (a free port each time)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            *map(str, args)]


def run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_the_sampler_splits_each_epoch_into_equal_disjoint_shares():
    for length, start, world in [(8, 0, 2), (7, 0, 2), (10, 3, 3), (1, 0, 2)]:
        shares = []
        for rank in range(world):
            sampler = EpochSampler(length, seed=5, rank=rank, world_size=world)
            sampler.set_epoch(1, start=start)
            shares.append(list(sampler))
        assert len({len(share) for share in shares}) == 1  # the same number of steps on every process
        one = EpochSampler(length, seed=5)
        one.set_epoch(1, start=start)
        whole = list(one)
        # interleaved, the shares are one process's order (padded by wrapping around at the end)
        interleaved = [item for step in zip(*shares) for item in step]
        assert interleaved[:len(whole)] == whole
        assert all(item in whole for item in interleaved[len(whole):])


def test_torchrun_trains_one_run_folder_and_the_ranks_end_with_identical_weights(tmp_path):
    proc = ok(run(torchrun(PROBE, "train", tmp_path, QUICK, *TINY, "--set", "train.max_steps=5",
                           "--set", "train.checkpoint_every=2", "--set", "buffer.size=2")))
    rank0, rank1 = load_file(tmp_path / "rank-0.safetensors"), load_file(tmp_path / "rank-1.safetensors")
    assert rank0.keys() == rank1.keys() and len(rank0) > 20
    assert [k for k in rank0 if not rank0[k].equal(rank1[k])] == []
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000002", "step-00000004", "step-00000005"], proc.stderr
    final = load_file(tmp_path / "run" / "checkpoints" / "step-00000005" / "G_A.safetensors")
    assert all(final[k].equal(rank0[f"G_A.{k}"]) for k in final)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # logged by rank 0 alone (steps 2, 4, 5)


@pytest.mark.parametrize("norms", [("instance", "instance"), ("syncbatch", "batch")], ids=["instance", "syncbatch"])
def test_two_processes_of_batch_1_give_the_gradients_of_one_process_of_batch_2(tmp_path, norms):
    distributed_norm, single_norm = norms
    common = [*TINY, "--set", "generator.channels=8", "--set", "discriminator.channels=8"]
    ok(run(torchrun(PROBE, "grads", tmp_path / "two", QUICK, *common, "--set", "data.batch_size=1",
                    "--set", f"generator.norm={distributed_norm}", "--set", f"discriminator.norm={distributed_norm}")))
    ok(run([sys.executable, PROBE, "grads", tmp_path / "one", QUICK, *common, "--set", "data.batch_size=2",
            "--set", f"generator.norm={single_norm}", "--set", f"discriminator.norm={single_norm}"]))
    two = [load_file(tmp_path / "two" / f"grads-{rank}.safetensors") for rank in (0, 1)]
    one = load_file(tmp_path / "one" / "grads-0.safetensors")
    assert one.keys() == two[0].keys() == two[1].keys() and len(one) > 20
    assert [k for k in one if not two[0][k].equal(two[1][k])] == []  # every process holds the same average
    network_scale = {}
    for key, value in one.items():
        net = key.split(".")[0]
        network_scale[net] = max(network_scale.get(net, 0.0), value.abs().max().item())
    for key, expected in one.items():
        # float sums in another order: relative to the tensor, plus a floor for tensors whose true gradient is ~0
        # (a conv bias before instance norm) at a small fraction of the network's largest gradient; summing
        # instead of averaging, or not reducing at all, is off by the order of the gradient itself
        scale = expected.abs().max().item()
        error = (two[0][key] - expected).abs().max().item()
        assert error <= 1e-4 * scale + 1e-5 * network_scale[key.split(".")[0]], f"{key}: off by {error}"
    assert any(g.abs().max() > 0 for g in one.values())


def _worker_of_rank(launcher_pid: int, rank: int, timeout: float = 60) -> int:
    """The pid of torchrun's worker process whose environment says RANK=`rank`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{launcher_pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in environ:
                    return int(child)
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank} found")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker processes through /proc")
def test_killing_one_rank_ends_the_run_without_a_hang_and_resume_continues_on_one_process(tmp_path):
    out = tmp_path / "run"
    settings = [*TINY, "--set", "data.count=64", "--set", "train.max_steps=400", "--set", "train.checkpoint_every=2",
                "--set", "run.distributed_timeout=30"]
    launcher = subprocess.Popen(torchrun("-m", "i2i", "run", QUICK, *settings, "--out", out),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        victim = _worker_of_rank(launcher.pid, 1)
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "step-00000004").exists():
            assert launcher.poll() is None, launcher.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        _, err = launcher.communicate(timeout=90)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert time.monotonic() - killed_at < 60
    # torchrun names the failed rank; rank 0, if it got to say anything, said it in one line of ours
    assert "rank" in err and ("Signal 9" in err or "SIGKILL" in err or "exitcode" in err), err[-2000:]
    assert "Traceback" not in "\n".join(line for line in err.splitlines() if line.startswith("rank 0"))
    # the run folder holds complete checkpoints; one process continues it to the end
    resumed = run([sys.executable, "-m", "i2i", "run", QUICK, *settings, "--set", "train.max_steps=12",
                   "--out", out, "--resume"])
    ok(resumed)
    assert (out / "checkpoints" / "step-00000012").is_dir()


def test_a_single_process_checkpoint_resumes_under_torchrun(tmp_path):
    out = tmp_path / "run"
    settings = [*TINY, "--set", "train.checkpoint_every=2"]
    ok(run([sys.executable, "-m", "i2i", "run", QUICK, *settings, "--set", "train.max_steps=3", "--out", out]))
    proc = ok(run(torchrun("-m", "i2i", "run", QUICK, *settings, "--set", "train.max_steps=6", "--out", out,
                           "--resume")))
    assert "2 processes" in proc.stderr
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 3, 4, 6]
    assert (out / "checkpoints" / "step-00000006").is_dir()


def test_callbacks_that_act_on_rank_0_alone_do_not_hang_the_others(tmp_path):
    # validation measures on rank 0 only and asks for a checkpoint there when AtoB.l1 improves; the finite-loss
    # check gathers over both processes, so it must decide from what both share, or the ranks would wait forever
    run_dir = tmp_path / "run"
    proc = ok(run(torchrun("-m", "i2i", "run", RECIPES / "pix2pix.toml", "--set", "data.name=synthetic",
                           "--set", "data.paired=true", "--set", "data.count=8", "--set", "data.load_size=36",
                           "--set", "data.crop_size=32", "--set", "data.workers=0", "--set", "generator.downs=5",
                           "--set", "generator.channels=4", "--set", "discriminator.channels=4",
                           "--set", "train.max_steps=6", "--set", "train.log_every=3",
                           "--set", "train.checkpoint_every=0", "--set", "callback.validation.every=2",
                           "--set", "callback.validation.keep_best=AtoB.l1", "--set", "callback.ema.decay=0.9",
                           "--set", "run.device=cpu", "--out", run_dir), timeout=180))
    assert "error" not in proc.stderr.lower(), proc.stderr
    assert (run_dir / "checkpoints" / "best" / "G.ema.safetensors").is_file()
    assert (run_dir / "checkpoints" / "step-00000006").is_dir()
