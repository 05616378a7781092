"""Weights & Biases: the recipe as config, every log point as metrics, sample grids; --resume continues the same
W&B run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from i2i.api import Option, TrainingContext
from i2i_stock.callbacks.trackers.base import Tracker

#: how a training outcome ends the W&B run
EXIT_CODES = {"finished": 0, "stopped": 0, "interrupted": 255, "failed": 1}


class WandB(Tracker):
    """Logs the run to Weights & Biases (online, or offline with WANDB_MODE=offline / mode = "offline")."""

    name = "wandb"
    packages = ("wandb",)
    options = (Option("project", str, "i2i", "the W&B project"),
               Option("mode", str, "", "online, offline or disabled; empty: WANDB_MODE, else W&B's default",
                      choices=("", "online", "offline", "disabled")),
               Option("dir", str, "", "the folder W&B writes its wandb/ files in; empty: the run folder"))

    def __init__(self, project: str = "i2i", mode: str = "", dir: str = "") -> None:
        self.project, self.mode, self.dir = project, mode, dir
        self.run, self.run_id = None, None

    def start(self, context: TrainingContext) -> None:
        import wandb

        settings = wandb.Settings(console="off", silent=True, save_code=False, x_disable_stats=True)
        self.run = wandb.init(project=self.project, dir=self.dir or str(context.folder.path),
                              mode=self.mode or None, id=self.run_id, resume="allow" if self.run_id else None,
                              name=context.folder.path.resolve().name, config=context.recipe.tables,
                              allow_val_change=True, settings=settings)
        self.run_id = self.run.id
        # the training step is every metric's x axis (W&B's own step cannot go back after an interrupted session)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, context: TrainingContext, step: int, values: dict[str, float], sample: Path | None) -> None:
        import wandb

        entry: dict[str, Any] = {"step": step, **values}
        if sample is not None:
            entry["samples"] = wandb.Image(str(sample))
        self.run.log(entry)

    def end(self, context: TrainingContext, outcome: str) -> None:
        self.run.finish(exit_code=EXIT_CODES[outcome])
        self.run = None

    def abandon(self) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=1)
            except Exception:
                pass
            self.run = None

    def state_dict(self) -> dict[str, Any]:
        """The W&B run's id, so --resume continues it."""
        return {"run_id": self.run_id or ""}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id") or None
