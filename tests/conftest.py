"""Shared fixtures: running the CLI in-process or as a subprocess, tiny recipe settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tiny widths and sizes keep a training step in milliseconds on a CI CPU.
TINY = [
    "--set", "data.count=8", "--set", "data.load_size=36", "--set", "data.crop_size=32",
    "--set", "data.workers=0", "--set", "generator.channels=4", "--set", "generator.blocks=1",
    "--set", "discriminator.channels=4", "--set", "train.max_steps=4", "--set", "train.log_every=2",
    "--set", "callback.checkpoints.every=2", "--set", "callback.samples.images=2",
]


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's in-process runs (restored after): tiny networks gain nothing from more,
    and on a busy 2-core machine spinning threads only slow each other down. Runs compared bit for bit must
    all run under it."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty download cache ($I2I_CACHE), so a developer's real cache (e.g. Inception weights
    that `i2i evaluate` would pick up) never changes a result. Module-scoped fixtures run before it."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("I2I_CACHE", str(cache))
    # and no test reaches the internet through `i2i download`: its default mirror is a closed port on 127.0.0.1
    # (the download tests point --url or $I2I_DOWNLOAD_URL at their own server on 127.0.0.1)
    monkeypatch.setenv("I2I_DOWNLOAD_URL", "http://127.0.0.1:9")
    # and runs share CPUs only with the runs of their own test (i2i.engine.sharing): another test session on the
    # machine must not change their thread counts, which some CPU kernels' sums depend on
    monkeypatch.setenv("I2I_CPU_SHARE", str(cache / "cpu-share"))
    return cache


@dataclass
class Result:
    """What a CLI call returned."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `i2i ARGS...` in this process (as the console script does) and capture what it prints."""
    from i2i.cli import main

    def run(*args: str, cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_module(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300) -> Result:
    """Run `python -m i2i ARGS...` in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "i2i", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def error_line(result: Result) -> str:
    """The single error line a failed command printed (asserting there is exactly one and no traceback)."""
    assert result.code != 0, f"expected failure, got success: {result.out}{result.err}"
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    return errors[0]


def checkpoint_tensors(folder: Path) -> dict[str, object]:
    """Every tensor of a checkpoint folder, keyed "<file stem>/<tensor name>"."""
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update({f"{file.stem}/{k}": v for k, v in load_file(file).items()})
    return out


def assert_same_final_state(a: Path, b: Path, step: int) -> None:
    """Runs `a` and `b` hold bit-identical checkpoints at `step` and the same metrics (but for the time)."""
    name = f"step-{step:08d}"
    ta, tb = checkpoint_tensors(a / "checkpoints" / name), checkpoint_tensors(b / "checkpoints" / name)
    assert ta.keys() == tb.keys() and len(ta) > 20
    different = [k for k in ta if not (ta[k].dtype == tb[k].dtype and ta[k].equal(tb[k]))]
    assert not different, different[:5]
    strip = lambda run: [{k: v for k, v in json.loads(line).items() if k != "elapsed"}  # noqa: E731
                         for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b)


def kill_9_at(run: Path, step: int, last: int, args: list[str], env: dict | None = None) -> None:
    """Start `python -m i2i run ARGS... --out RUN`, and kill -9 it as soon as checkpoint `step` appears (asserting it
    had not reached step `last`, the end)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "i2i", "run", *map(str, args), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / f"step-{step:08d}").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoints" / f"step-{last:08d}").exists(), "the run finished before it was killed"


@pytest.fixture
def depth_generator_file(tmp_path: Path):
    """Saves a test generator class as a generator file recording the 16-bit value mapping ("depth") a run of
    16-bit data has: make(cls, options) -> the file; the class is registered as a plugin for the test."""
    import i2i
    from safetensors.torch import save_file

    from i2i.contract.registry import default_registry
    from i2i.data.values import DomainRange, ValueMap
    from i2i.storage.checkpoint import VALUES_KEY, part_metadata

    registry = default_registry()
    names = []

    def make(cls, options: dict) -> Path:
        class Plugin:
            @i2i.hookimpl
            def i2i_generators(self):
                return [cls]

        registry.register(Plugin(), name=cls.name)
        names.append(cls.name)
        meta = {**part_metadata("generator", cls.name, options),
                VALUES_KEY: ValueMap("depth", {"A": DomainRange(), "B": DomainRange()}).to_json()}
        file = tmp_path / f"{cls.name}.safetensors"
        save_file(cls(**options).state_dict(), file, metadata=meta)
        return file

    yield make
    for name in names:
        registry.manager.unregister(name=name)
    registry._parts = None

