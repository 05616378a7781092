"""The progress display: a bar with it/s and ETA, and the losses of each log point."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text
from torch import Tensor

from i2i.api import Callback, TrainingContext


class TrainingDisplay(Progress):
    """A progress bar with it/s and ETA, and under it the losses of the last logged step."""

    def __init__(self, console: Console) -> None:
        self.losses = Text()
        super().__init__(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                         TimeRemainingColumn(), console=console)
        self.task = self.add_task("train", total=None, rate="")

    def get_renderables(self):
        """The bar, then the current losses."""
        yield self.make_tasks_table(self.tasks)
        if self.losses:
            yield self.losses


class ProgressBar(Callback):
    """Shows a progress bar with it/s and ETA on stderr, and a line with the mean losses at each log point."""

    name = "progress"
    order = 300
    default = True

    def __init__(self) -> None:
        self.display: TrainingDisplay | None = None

    def on_train_start(self, context: TrainingContext) -> None:
        """Say what trains where, and start the bar (rank 0 only: the others would repeat it)."""
        if not context.is_main:
            return
        console = Console(stderr=True)
        processes = context.distributed.world_size
        on = f"{processes} processes on {context.device.type}" if processes > 1 else str(context.device)
        console.print(f"training {context.recipe['method']['name']} for {context.total_steps} steps on {on}"
                      f" into {context.folder.path}", highlight=False, markup=False)
        self.display = TrainingDisplay(console)
        self.display.update(self.display.task, completed=context.step, total=context.total_steps)
        self.display.start()

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """Advance the bar."""
        if self.display is not None:
            speed = self.display.tasks[0].speed
            self.display.update(self.display.task, completed=context.step, total=context.total_steps,
                                description=f"epoch {context.epoch}", rate=f"{speed:.2f} it/s" if speed else "")

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """Show the losses under the bar, and as a line above it so the history stays on screen and in logs."""
        if self.display is not None:
            self.display.losses = Text("  ".join(f"{k} {v:.3f}" for k, v in record["losses"].items()), style="dim")
            self.display.console.print(f"step {context.step}/{context.total_steps}  {self.display.losses.plain}",
                                       highlight=False, markup=False)

    def on_train_end(self, context: TrainingContext, outcome: str, error: BaseException | None) -> None:
        """Stop the bar."""
        if self.display is not None:
            self.display.stop()
            self.display = None
