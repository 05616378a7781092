"""Sweeps: one run per combination of recipe values, each a normal run folder, then a comparison page.

Each run is its own `python -m i2i run` process: a run that crashes (even hard) does not take the others
down, runs can go in parallel (on this machine or a cluster: i2i.tools.executors), and the sweep's state file
records where each run stands, so `--resume` only runs what is missing.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from i2i.errors import I2IError
from i2i.recipe import load_recipe, parse_override
from i2i.tools.executors import (STATE, Executor, Placement, Resources, SweepRuns, executor_class, read_state,
                                 resources_record, write_state)

__all__ = ["Combination", "Placement", "RunStatus", "SweepResult", "combinations", "parse_variant", "sweep",
           "sweep_status"]


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


def sweep(recipe: Path, grid: list[str], overrides: list[str] = (), out: Path | None = None,
          variants: list[str] = (), jobs: int = 1, resume: bool = False,
          on_event: Callable[[str, Combination, str], None] | None = None,
          on_note: Callable[[str], None] | None = None, executor: str | None = None,
          resources: dict[str, Any] | None = None) -> SweepResult:
    """Run every combination of `grid` (and `variants`) of `recipe` through `executor` (default: the one the
    sweep used before, else local), then write the comparison page (`on_note` hears where the runs go).
    `resources`: what each run asks of a cluster (Resources' fields), over what the sweep asked before."""
    combos = combinations(list(grid), list(variants))
    if not combos:
        raise I2IError("nothing to sweep: give at least one --grid KEY=V1,V2 or --variant")
    # every combination is checked before anything runs, so a typo fails at once, not after hours
    base = None
    for combo in combos:
        base = load_recipe(recipe, [*overrides, *combo.overrides])
    out = Path(out) if out is not None else Path("runs") / f"{base['run']['name']}-sweep"
    state = read_state(out)
    if (out / STATE).exists() and not resume:
        raise I2IError(f"{out} already holds a sweep: pass --resume to finish it, or --out DIR for a new one")
    runner = _choose_executor(state, executor)
    runner.check()
    asked = Resources(**{**state.get("resources", {}), **(resources or {})})
    out.mkdir(parents=True, exist_ok=True)
    state.update({"recipe": str(recipe), "grid": list(grid), "variants": list(variants),
                  "overrides": list(overrides), "executor": runner.name, "resources": resources_record(asked)})
    result = SweepResult(out)
    todo = []
    for combo in combos:
        if state["runs"].get(combo.name, {}).get("status") == "finished":
            result.skipped.append(combo.name)
            if on_event:
                on_event("skipped", combo, "finished earlier")
        else:
            todo.append(combo)
    write_state(out, state)

    runs = SweepRuns(out, Path(recipe), list(overrides), base["run"]["device"], jobs, asked, state, result,
                     on_event, on_note)
    if todo:
        runner.run(runs, todo)

    done = [out / c.name for c in combos if state["runs"].get(c.name, {}).get("status") == "finished"]
    if done:
        from i2i.tools.compare import compare_runs

        result.compare = compare_runs(done, out).html
    return result


def _choose_executor(state: dict[str, Any], name: str | None) -> Executor:
    """The executor asked for, or the one the sweep ran with; switching while runs are in flight is refused, since
    the new one would start them a second time."""
    before = state.get("executor")
    chosen = executor_class(name or before or "local")()
    flying = [n for n, r in state.get("runs", {}).items() if r.get("status") in ("submitted", "running")]
    if before and chosen.name != before and flying:
        raise I2IError(f"--executor {chosen.name}: this sweep's runs {', '.join(flying)} are in flight through"
                       f" --executor {before}; resume with --executor {before} (or leave --executor out)")
    return chosen


@dataclass
class RunStatus:
    """Where one run of a sweep stands, for `i2i sweep --status`."""

    name: str
    state: str
    job: str
    step: int | None  # the newest checkpoint's step (None: no checkpoint yet)
    total: int | None  # train.max_steps when the recipe caps the run (None: set by epochs)
    detail: str


def sweep_status(out: Path) -> list[RunStatus]:
    """Where each run of the sweep in `out` stands; submits nothing."""
    from i2i.storage.rundir import RunFolder

    out = Path(out)
    if not (out / STATE).is_file():
        raise I2IError(f"{out} holds no sweep ({STATE} is missing): give the folder `i2i sweep --out` wrote")
    state = read_state(out)
    runner = executor_class(state.get("executor") or "local")()
    found = []
    for combo in combinations(state.get("grid", []), state.get("variants", [])):
        entry = state["runs"].get(combo.name, {})
        run = RunFolder(out / combo.name)
        newest = run.newest_checkpoint() if run.holds_run() else None
        numbered = re.match(r"step-(\d+)", newest.name) if newest is not None else None
        step = int(numbered.group(1)) if numbered else None
        total = None
        if run.holds_run():
            try:
                total = run.read_recipe()["train"]["max_steps"] or None
            except (I2IError, KeyError, TypeError):
                total = None
        found.append(RunStatus(combo.name, runner.where(out, combo.name, entry), entry.get("job", ""), step, total,
                               entry.get("detail", "")))
    return found
