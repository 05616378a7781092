"""What the experiment trackers share: the missing-package check, the guard that turns a tracker's failure into one
warning, and the log record flattened into named numbers."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any, ClassVar

from i2i.api import Callback, I2IError, TrainingContext


class Tracker(Callback):
    """Base of the tracker callbacks: rank 0 only, after samples and report, and never the reason training stops.

    A subclass implements `start`, `log` and `end`; the first exception any of them raises is shown once as a
    warning naming the tracker, and the tracker stays quiet for the rest of the run.
    """

    order = 150  # after samples (110) and report (120): the step's sample grid exists
    #: the modules the tracker imports; the extra of i2i named like the tracker installs them
    packages: ClassVar[tuple[str, ...]] = ()
    failed = False

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Refuse, before training, a recipe that enables the tracker without its packages installed."""
        for package in cls.packages:
            try:
                found = importlib.util.find_spec(package) is not None
            except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
                found = False
            if not found:
                raise I2IError(f"callback '{cls.name}' needs the {package} package: pip install"
                               f" \"i2i-toolkit[{cls.name}]\"")

    def on_train_start(self, context: TrainingContext) -> None:
        """Open the tracker's run (continuing the checkpoint's one on --resume) and record the recipe."""
        self._guard(context, self.start, context)

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """Record the log point's numbers (and the sample grid, where the tracker takes images)."""
        sample = context.folder.sample_file(context.step)
        self._guard(context, self.log, context, record["step"], scalars(record), sample if sample.is_file() else None)

    def on_train_end(self, context: TrainingContext, outcome: str, error: BaseException | None) -> None:
        """Close the tracker's run with the outcome."""
        self._guard(context, self.end, context, outcome)

    def _guard(self, context: TrainingContext, action, *args: Any) -> None:
        if self.failed or not context.is_main:
            return
        try:
            with warnings.catch_warnings():  # the libraries' deprecation notices are not the user's to act on
                for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
                    warnings.simplefilter("ignore", category)
                action(*args)
        except Exception as exc:  # a tracker never stops training: one warning, then it stays quiet
            self.failed = True
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            warnings.warn(f"tracker '{self.name}' stopped logging: {type(exc).__name__}: {first}"[:400])
            self.abandon()

    def start(self, context: TrainingContext) -> None:
        """Open the run."""

    def log(self, context: TrainingContext, step: int, values: dict[str, float], sample: Path | None) -> None:
        """Record one log point: `values` by name, and the sample grid's file when there is one."""

    def end(self, context: TrainingContext, outcome: str) -> None:
        """Close the run; `outcome` is finished, stopped, interrupted or failed."""

    def abandon(self) -> None:
        """Release what the tracker holds after it failed (best effort, never raises)."""


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a log record by name: `loss/<name>`, `lr/<group>`, and every other numeric entry (nested
    dicts joined with '/', e.g. `validation/AtoB/l1`); the step itself is the x axis, not a value."""
    renamed = {"loss": record.get("losses", {}), **{k: v for k, v in record.items() if k not in ("losses", "step")}}
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = float(value)

    walk("", renamed)
    return out


def flat_recipe(tables: dict[str, Any]) -> dict[str, Any]:
    """The resolved recipe as {"table.key": value}, nested tables joined with '.'."""
    out: dict[str, Any] = {}
    for key, value in tables.items():
        if isinstance(value, dict):
            out.update({f"{key}.{inner}": item for inner, item in flat_recipe(value).items()})
        else:
            out[key] = value
    return out
