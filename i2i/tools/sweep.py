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


def sweep(recipe: Path, grid: list[str], overrides: list[str] = (), out: Path | None = None,
          variants: list[str] = (), jobs: int = 1, resume: bool = False,
          on_event: Callable[[str, Combination, str], None] | None = None) -> SweepResult:
    """Run every combination of `grid` (and `variants`) of `recipe`, then write the comparison page."""
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

    threads = max(1, usable_cpus() // max(1, jobs))

    lock = threading.Lock()

    def run_one(combo: Combination) -> None:
        with lock:
            if on_event:
                on_event("started", combo, "")
        args = [sys.executable, "-m", "i2i", "run", str(recipe)]
        for override in [*overrides, *combo.overrides]:
            args += ["--set", override]
        args += ["--out", str(out / combo.name), "--resume"]
        log = out / "logs" / f"{combo.name}.log"
        log.parent.mkdir(exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if jobs > 1 else None
        started = time.perf_counter()
        with open(log, "w") as f:
            code = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
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
