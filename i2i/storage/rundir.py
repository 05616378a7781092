"""The run folder: the one place that knows its layout, so tools never spell a file name of it by hand.

    RUN/recipe.toml             the resolved recipe
    RUN/metrics.jsonl           one JSON object per logged step
    RUN/report.html, losses.png what a person opens (and validation.png, when the run validated)
    RUN/metrics.json            `i2i evaluate`'s results
    RUN/starting_weights.json   what each network started from (a fine-tuned run's sources) and what is frozen
    RUN/trial.json              a search's trial: its number, values, state (RUNNING, COMPLETE, PRUNED, FAIL), value
    RUN/samples/step-N.png      sample grids (with a .json sidecar naming the columns)
    RUN/checkpoints/step-N      checkpoints, and checkpoints/best

What a checkpoint folder holds (training.json, its checksums, the step-N names) is i2i.storage.checkpoint's business.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from i2i.storage.atomic import atomic_file
from i2i.storage.checkpoint import (STATE_FILE, list_checkpoints, read_training_json, remove_leftovers, step_name)
from i2i.errors import I2IError

if TYPE_CHECKING:
    from i2i.recipe import Recipe
    from i2i.contract.registry import Registry

__all__ = ["BEST", "CHECKPOINTS_DIR", "EVALUATION_FILE", "LOSSES_PLOT", "METRICS_FILE", "RECIPE_FILE",
           "REPORT_FILE", "SAMPLES_DIR", "STARTING_FILE", "TRIAL_FILE", "VALIDATION_PLOT", "RunFolder"]

RECIPE_FILE = "recipe.toml"
METRICS_FILE = "metrics.jsonl"
REPORT_FILE = "report.html"
LOSSES_PLOT = "losses.png"
VALIDATION_PLOT = "validation.png"
EVALUATION_FILE = "metrics.json"
STARTING_FILE = "starting_weights.json"
TRIAL_FILE = "trial.json"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
BEST = "best"
LATEST = "latest"
_SAMPLE = re.compile(r"^step-(\d+)\.png$")
_WHICH_STEP = re.compile(r"^(?:step-)?(\d+)$")


class RunFolder:
    """A run folder written by `i2i run`: where each of its files lies, and reading and writing them."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def recipe_file(self) -> Path:
        """The resolved recipe."""
        return self.path / RECIPE_FILE

    @property
    def metrics_file(self) -> Path:
        """The training log: one JSON object per logged step."""
        return self.path / METRICS_FILE

    @property
    def report_file(self) -> Path:
        """The self-contained HTML report."""
        return self.path / REPORT_FILE

    @property
    def losses_plot(self) -> Path:
        """The loss curves the report shows."""
        return self.path / LOSSES_PLOT

    @property
    def validation_plot(self) -> Path:
        """The validation metrics against step that the report shows."""
        return self.path / VALIDATION_PLOT

    @property
    def evaluation_file(self) -> Path:
        """What `i2i evaluate` measured."""
        return self.path / EVALUATION_FILE

    @property
    def starting_file(self) -> Path:
        """What each network started from and which of its layers are frozen (runs with [init] tables)."""
        return self.path / STARTING_FILE

    @property
    def trial_file(self) -> Path:
        """What a hyperparameter search's trial recorded about this run (i2i.tools.search)."""
        return self.path / TRIAL_FILE

    @property
    def samples_dir(self) -> Path:
        """The folder of sample grids."""
        return self.path / SAMPLES_DIR

    @property
    def checkpoints_dir(self) -> Path:
        """The folder of checkpoints."""
        return self.path / CHECKPOINTS_DIR

    def sample_file(self, step: int) -> Path:
        """The sample grid of `step`."""
        return self.samples_dir / f"{step_name(step)}.png"

    def samples(self) -> list[tuple[int, Path]]:
        """(step, png) of every sample grid, oldest first."""
        if not self.samples_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.samples_dir.iterdir() if (m := _SAMPLE.match(p.name))]
        return sorted(found, key=lambda item: item[0])

    # -- is there a run --------------------------------------------------------------------------------------

    @classmethod
    def is_run(cls, path: Path | str) -> bool:
        """Whether `path` looks like a run folder: it has a recipe.toml or a checkpoints/ folder."""
        folder = cls(path)
        return folder.recipe_file.is_file() or folder.checkpoints_dir.is_dir()

    @classmethod
    def containing(cls, checkpoint: Path) -> RunFolder | None:
        """The run a checkpoint folder (RUN/checkpoints/NAME) belongs to, or None when it sits elsewhere."""
        parent = Path(checkpoint).parent
        if parent.name == CHECKPOINTS_DIR and (run := cls(parent.parent)).recipe_file.is_file():
            return run
        return None

    def holds_run(self) -> bool:
        """Whether the folder already holds a run (its recipe or a checkpoint)."""
        return self.recipe_file.exists() or bool(self.checkpoints())

    def check_new(self, overwrite: bool = False) -> None:
        """Refuse to mix a new run into an existing one unless asked to replace it; writes nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise I2IError(f"run folder {self.path} exists and is not a folder")
        if self.holds_run() and not overwrite:
            raise I2IError(f"{self.path} already holds a run: pass --out DIR (or --set run.name=NEW) for a new run,"
                           " or --overwrite to replace it")

    def prepare(self, overwrite: bool = False) -> None:
        """Create the run folder, replacing an existing run only when `overwrite` is set."""
        self.check_new(overwrite)
        if self.holds_run():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    # -- checkpoints -----------------------------------------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        """The complete step checkpoints, oldest first."""
        return list_checkpoints(self.checkpoints_dir)

    def newest_checkpoint(self) -> Path | None:
        """The newest complete step checkpoint, or None."""
        found = self.checkpoints()
        return found[-1] if found else None

    def best_checkpoint(self) -> Path | None:
        """checkpoints/best when it is a complete checkpoint folder, else None."""
        best = self.best_dir
        # its training.json is written last, so a folder without one is a save cut short
        return best if (best / STATE_FILE).is_file() else None

    def checkpoint(self, which: str | None = None) -> Path:
        """The checkpoint folder `which` names: None or "latest" (the newest), "best", "step-N" or "N"."""
        found = self.checkpoints()
        if which is None or which == LATEST:
            if not found:
                raise I2IError(f"run folder {self.path} has no complete checkpoint yet (looked for"
                               f" {self.checkpoints_dir / 'step-NNNNNNNN'}): train it longer or pass another run")
            return found[-1]
        if which == BEST:
            chosen = self.best_checkpoint()
        else:
            m = _WHICH_STEP.match(str(which))
            chosen = self.checkpoints_dir / step_name(int(m.group(1))) if m else None
            chosen = chosen if chosen in found else None
        if chosen is None:
            names = [p.name for p in found] + [BEST] * (self.best_checkpoint() is not None)
            there = f"use one of {', '.join([LATEST] * bool(found) + names)}" if names else "it has none yet"
            raise I2IError(f"run folder {self.path} has no checkpoint {which!r}: {there}")
        return chosen

    @staticmethod
    def read_state(checkpoint: Path) -> dict[str, Any]:
        """A checkpoint folder's training.json (step, recipe, generators, variants, state), verified against the
        SHA-256 it records; the training tensors are the checkpoint owner's (i2i.engine.checkpoints)."""
        return read_training_json(checkpoint)

    @property
    def best_dir(self) -> Path:
        """Where checkpoints/best lies (complete or not)."""
        return self.checkpoints_dir / BEST

    # -- recipe ----------------------------------------------------------------------------------------------

    def read_recipe(self) -> dict[str, Any]:
        """The raw TOML table of recipe.toml."""
        from i2i.recipe import read_toml  # recipe.py imports the registry, which this layer sits below

        return read_toml(self.recipe_file)

    def read_recipe_text(self) -> str:
        """recipe.toml as text (undecodable bytes replaced), or "" when there is none."""
        try:
            return self.recipe_file.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError):
            return ""

    def load_recipe(self, overrides: list[str] = (), registry: Registry | None = None,
                    resume: bool = False) -> Recipe:
        """recipe.toml read, overridden and resolved, as `i2i.recipe.load_recipe` does."""
        from i2i.recipe import load_recipe

        return load_recipe(self.recipe_file, overrides, registry, resume=resume)

    def save_recipe(self, recipe: Recipe) -> None:
        """Write the resolved recipe as recipe.toml (atomically: a crash leaves the previous one whole)."""
        with atomic_file(self.recipe_file, "w") as f:
            f.write(recipe.to_toml())

    # -- starting weights ------------------------------------------------------------------------------------

    def save_starting_weights(self, record: dict[str, Any]) -> None:
        """Write what each network started from (see i2i.engine.starting), atomically."""
        with atomic_file(self.starting_file, "w") as f:
            f.write(json.dumps(record, indent=1, sort_keys=True))

    def read_starting_weights(self) -> dict[str, dict[str, Any]]:
        """{network: what it started from} as the run recorded it; {} for a run from random weights (or an
        unreadable record: it only informs)."""
        try:
            record = json.loads(self.starting_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        networks = record.get("networks") if isinstance(record, dict) else None
        return {k: v for k, v in networks.items() if isinstance(v, dict)} if isinstance(networks, dict) else {}

    # -- a search's trial -------------------------------------------------------------------------------------

    def save_trial(self, record: dict[str, Any]) -> None:
        """Write what the search says of this run as a trial (state, number, values, objective), atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.trial_file, "w") as f:
            f.write(json.dumps(record, indent=1, sort_keys=True))

    def read_trial(self) -> dict[str, Any]:
        """The trial record of a search's run ({} for a run no search made, or an unreadable record)."""
        try:
            record = json.loads(self.trial_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    # -- metrics and samples ---------------------------------------------------------------------------------

    def read_metrics(self) -> list[dict]:
        """The records of metrics.jsonl, skipping blank, truncated or non-object lines."""
        try:
            # errors="replace": a crash can cut a multi-byte character in half on the last line.
            text = self.metrics_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def append_metrics(self, record: dict) -> None:
        """Append `record` to metrics.jsonl as one line, flushed."""
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")  # closing flushes it: a crash loses no logged step

    def forget_after(self, step: int) -> None:
        """Drop what an interrupted run wrote after `step`, the checkpoint it resumes from: metrics, samples, and the
        temporary folders of checkpoint saves and prunes a kill cut short (even when no save follows)."""
        if self.checkpoints_dir.is_dir():
            remove_leftovers(self.checkpoints_dir)
        if self.metrics_file.exists():
            kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            if self.metrics_file.read_text(encoding="utf-8", errors="replace") != text:  # else nothing to drop
                # atomic: a crash mid-rewrite must not lose the records before `step` too
                with atomic_file(self.metrics_file, "w") as f:
                    f.write(text)
        for sample_step, png in self.samples():
            if sample_step > step:
                png.with_suffix(".json").unlink(missing_ok=True)
                png.unlink()
