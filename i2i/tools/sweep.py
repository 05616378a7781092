"""Sweeps: one run per combination of recipe values, each a normal run folder, then a comparison page.

Each run is its own `python -m i2i run` process: a run that crashes (even hard) does not take the others
down, runs can go in parallel, and the sweep's state file records which ones finished, so `--resume` only
runs what is missing.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from i2i.storage.atomic import atomic_file
from i2i.engine.devices import usable_cpus
from i2i.errors import I2IError
from i2i.recipe import load_recipe, parse_override

STATE = "sweep.json"


@dataclass
class Combination:
    """One run of a sweep: its folder name and the --set overrides that make it."""

    name: str
    overrides: list[str]


@dataclass
class SweepResult:
    """What a sweep did."""

    out: Path
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    compare: Path | None = None


def _split_values(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    key = key.strip()
    parts = [v.strip() for v in values.split(",")]
    if not sep or not key or not values.strip() or any(not v for v in parts):
        raise I2IError(f"--grid {text!r}: expected KEY=V1,V2,... e.g. --grid loss.cycle.weight=0,10")
    return key, parts


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`NAME:KEY=V,KEY=V` as (name, overrides); `NAME:` alone is the recipe unchanged."""
    name, sep, body = text.partition(":")
    name = name.strip()
    if not sep or not name or "/" in name:
        raise I2IError(f"--variant {text!r}: expected NAME:KEY=VALUE,KEY=VALUE e.g. --variant"
                       " no_cycle:loss.cycle.weight=0 (NAME: alone keeps the recipe as it is)")
    overrides = [part.strip() for part in body.split(",") if part.strip()]
    for override in overrides:
        parse_override(override)
    return name, overrides


def combinations(grid: list[str], variants: list[str] = ()) -> list[Combination]:
    """Every combination of the variants and the grid values, named after what differs."""
    axes = [_split_values(text) for text in grid]
    keys = [key for key, _ in axes]
    if len(set(keys)) != len(keys):
        raise I2IError(f"--grid names a key twice: {', '.join(sorted(k for k in keys if keys.count(k) > 1))}")
    named = [parse_variant(v) for v in variants] or [("", [])]
    if len({name for name, _ in named}) != len(named):
        raise I2IError("two --variant options have the same name")
    out = []
    for (variant, variant_sets), values in itertools.product(named, itertools.product(*(v for _, v in axes))):
        sets = [f"{key}={value}" for key, value in zip(keys, values)]
        label = ",".join([variant] * bool(variant) + sets) or "base"
        # a folder name: values such as paths must not create subfolders
        out.append(Combination(label.replace("/", "_"), [*variant_sets, *sets]))
    return out


def _read_state(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / STATE).read_text())
    except (OSError, ValueError):
        return {"runs": {}}


def _write_state(out: Path, state: dict[str, Any]) -> None:
    with atomic_file(out / STATE, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)


@dataclass
class Placement:
    """Where a sweep's runs go: CPU runs share the CPUs (each sizes its threads to its share), GPU runs take the
    least busy of the visible GPUs (one each while there are enough)."""

    text: str  # for people: how many at a time, and where
    gpus: list[int]  # the GPUs runs are placed on ([] on the CPU)
    busy: dict[int, int] = field(default_factory=dict)  # runs on each GPU now

    @classmethod
    def plan(cls, device: str, jobs: int, runs: int, gpu_count: int | None = None) -> "Placement":
        """The placement of `runs` runs, `jobs` at a time, on [run] device `device` (`gpu_count`: the visible GPUs,
        asked of torch when None)."""
        at_once = min(jobs, runs) or 1
        head = f"{runs} run{'s' * (runs != 1)}, {at_once} at a time"
        if gpu_count is None:
            gpu_count = _cuda_count() if device in ("auto", "cuda") else 0
        if device in ("auto", "cuda") and gpu_count > 1:
            per = -(-at_once // gpu_count)
            where = (f"one GPU each (GPUs 0-{min(at_once, gpu_count) - 1})" if at_once <= gpu_count
                     else f"over {gpu_count} GPUs, up to {per} on each")
            return cls(f"{head}: {where}, through CUDA_VISIBLE_DEVICES", list(range(gpu_count)))
        if device.startswith("cuda") or (device == "auto" and gpu_count == 1):
            gpu = device.partition(":")[2] or "0"
            return cls(f"{head} on GPU {gpu}" + (" (they share it)" if at_once > 1 else ""), [])
        if device not in ("auto", "cpu"):
            return cls(f"{head} on {device}", [])
        cpus = usable_cpus()
        share = max(1, cpus // at_once)
        return cls(f"{head} on the CPU: each takes an equal share of the {cpus} CPUs ({share} thread"
                   f"{'s' * (share != 1)} each while {at_once} run; more as others end)", [])

    def take(self) -> int | None:
        """The GPU for a run that starts now (the one with the fewest runs), or None when runs are not placed."""
        if not self.gpus:
            return None
        gpu = min(self.gpus, key=lambda g: (self.busy.get(g, 0), g))
        self.busy[gpu] = self.busy.get(gpu, 0) + 1
        return gpu

    @staticmethod
    def visible(gpu: int) -> str:
        """CUDA_VISIBLE_DEVICES for a run on the sweep's `gpu`-th visible GPU (the user's own list respected)."""
        listed = [item.strip() for item in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if item.strip()]
        return listed[gpu] if gpu < len(listed) else str(gpu)

    def give_back(self, gpu: int | None) -> None:
        """A run on `gpu` ended."""
        if gpu is not None:
            self.busy[gpu] -= 1


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def sweep(recipe: Path, grid: list[str], overrides: list[str] = (), out: Path | None = None,
          variants: list[str] = (), jobs: int = 1, resume: bool = False,
          on_event: Callable[[str, Combination, str], None] | None = None,
          on_note: Callable[[str], None] | None = None) -> SweepResult:
    """Run every combination of `grid` (and `variants`) of `recipe`, then write the comparison page (`on_note`
    hears where the runs go)."""
    combos = combinations(list(grid), list(variants))
    if not combos:
        raise I2IError("nothing to sweep: give at least one --grid KEY=V1,V2 or --variant")
    # every combination is checked before anything runs, so a typo fails at once, not after hours
    base = None
    for combo in combos:
        base = load_recipe(recipe, [*overrides, *combo.overrides])
    out = Path(out) if out is not None else Path("runs") / f"{base['run']['name']}-sweep"
    state = _read_state(out)
    if (out / STATE).exists() and not resume:
        raise I2IError(f"{out} already holds a sweep: pass --resume to finish it, or --out DIR for a new one")
    out.mkdir(parents=True, exist_ok=True)
    state.update({"recipe": str(recipe), "grid": list(grid), "variants": list(variants),
                  "overrides": list(overrides)})
    result = SweepResult(out)
    todo = []
    for combo in combos:
        if state["runs"].get(combo.name, {}).get("status") == "finished":
            result.skipped.append(combo.name)
            if on_event:
                on_event("skipped", combo, "finished earlier")
        else:
            todo.append(combo)
    _write_state(out, state)

    place = Placement.plan(base["run"]["device"], jobs, len(todo))
    if on_note and todo:
        on_note(place.text)

    lock = threading.Lock()

    def run_one(combo: Combination) -> None:
        with lock:
            gpu = place.take()
            if on_event:
                on_event("started", combo, f"GPU {gpu}" if gpu is not None else "")
        args = [sys.executable, "-m", "i2i", "run", str(recipe)]
        for override in [*overrides, *combo.overrides]:
            args += ["--set", override]
        args += ["--out", str(out / combo.name), "--resume"]
        log = out / "logs" / f"{combo.name}.log"
        log.parent.mkdir(exist_ok=True)
        # CPU runs size their threads themselves (i2i.engine.sharing); a run of several GPUs' sweep sees only its own
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": place.visible(gpu)} if gpu is not None else None
        started = time.perf_counter()
        try:
            with open(log, "w") as f:
                code = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        finally:
            with lock:
                place.give_back(gpu)
        errors = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("error")]
        detail = (errors[-1] if errors else f"exit code {code} (see {log})") if code else \
            f"{time.perf_counter() - started:.0f} s"
        status = "finished" if code == 0 else "failed"
        with lock:  # state, result and messages change one run at a time
            state["runs"][combo.name] = {"status": status, "overrides": combo.overrides, "detail": detail}
            _write_state(out, state)
            if code == 0:
                result.finished.append(combo.name)
            else:
                result.failed[combo.name] = detail
            if on_event:
                on_event(status, combo, detail)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(run_one, todo))

    done = [out / c.name for c in combos if state["runs"].get(c.name, {}).get("status") == "finished"]
    if done:
        from i2i.tools.compare import compare_runs

        result.compare = compare_runs(done, out).html
    return result
