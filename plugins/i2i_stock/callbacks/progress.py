"""The progress display: on a terminal, a bar with it/s and ETA; in a log file or a pipe, a plain line every
`every_s` seconds; and the losses of each log point as a line of their own in both."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text
from torch import Tensor

from i2i.api import Callback, Option, TrainingContext


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


class ProgressLines:
    """Progress as plain lines, for a stderr that is not a terminal: a bar there is drawn only when it stops."""

    def __init__(self, console: Console, every_s: float, step: int) -> None:
        self.console, self.every_s = console, every_s
        self.first = step + 1  # the first step of this session (a resumed run starts past 0)
        self.since, self.since_step = time.perf_counter(), step  # the previous line (or the session's start)
        self.shown_step = -1  # the step of the last line

    def step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """A line at the session's first step, then once `every_s` seconds have passed since the previous one."""
        now = time.perf_counter()
        if context.step != self.first and now - self.since < self.every_s:
            return
        done, total = context.step, context.total_steps
        speed = (done - self.since_step) / max(now - self.since, 1e-9)  # over the last interval: today's speed
        self.since, self.since_step, self.shown_step = now, done, done
        shown = "  ".join(f"{name} {float(value):.3f}" for name, value in losses.items())
        self.console.print(f"step {done}/{total} ({100 * done // max(total, 1)}%)  epoch {context.epoch + 1}"
                           f"  {rate_text(speed)}  elapsed {clock(context.elapsed())}"
                           f"  ETA {clock((total - done) / speed) if speed > 0 else '?'}  {shown}",
                           highlight=False, markup=False)


class ProgressBar(Callback):
    """Shows progress on stderr: on a terminal a bar with it/s and ETA; otherwise (a log file, a pipe, CI) a plain
    line at the first step and every `every_s` seconds with step, it/s, elapsed time, ETA and the step's losses.
    Each log point adds a line with its mean losses."""

    name = "progress"
    order = 300
    default = True
    options = (Option("every_s", float, 30.0, "seconds between the plain progress lines written when stderr is not"
                      " a terminal (a log file, a pipe, CI; a terminal gets the bar); 0: a line every step",
                      min=0.0),)

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self.display: TrainingDisplay | None = None
        self.lines: ProgressLines | None = None
        self.console: Console | None = None

    def on_train_start(self, context: TrainingContext) -> None:
        """Say what trains where, and start the bar or the lines (rank 0 only: the others would repeat it)."""
        if not context.is_main:
            return
        self.console = console = Console(stderr=True)
        # A console that is not a terminal is 80 columns wide: soft wrap keeps each line of a log one line.
        console.soft_wrap = not console.is_terminal
        processes = context.distributed.world_size
        on = f"{processes} processes on {context.device.type}" if processes > 1 else str(context.device)
        steps = (f"from step {context.step} to {context.total_steps}" if context.step
                 else f"for {context.total_steps} steps")
        console.print(f"training {context.recipe['method']['name']} {steps} on {on} into {context.folder.path}",
                      highlight=False, markup=False)
        if not console.is_terminal:
            self.lines = ProgressLines(console, self.every_s, context.step)
            return
        self.display = TrainingDisplay(console)
        self.display.update(self.display.task, completed=context.step, total=context.total_steps)
        self.display.start()

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """Advance the bar, or write a line when one is due."""
        if self.lines is not None:
            self.lines.step_end(context, losses)
        if self.display is not None:
            speed = self.display.tasks[0].speed
            self.display.update(self.display.task, completed=context.step, total=context.total_steps,
                                description=f"epoch {context.epoch + 1}", rate=rate_text(speed) if speed else "")

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """The mean losses of the log point as a line, so the history stays on screen and in logs (and under the
        bar)."""
        if self.console is None:
            return
        if self.lines is not None and self.lines.shown_step == context.step == 1:
            return  # step 1's line above shows these losses: the mean of one step
        losses = "  ".join(f"{k} {v:.3f}" for k, v in record["losses"].items())
        if self.display is not None:
            self.display.losses = Text(losses, style="dim")
        self.console.print(f"step {context.step}/{context.total_steps}  {losses}", highlight=False, markup=False)

    def on_train_end(self, context: TrainingContext, outcome: str, error: BaseException | None) -> None:
        """Stop the bar."""
        if self.display is not None:
            self.display.stop()
        self.display = self.lines = self.console = None


def rate_text(steps_per_s: float) -> str:
    """A training speed as people read it: "2.31 it/s", or "44.2 s/it" when a step takes over a second."""
    if steps_per_s <= 0:
        return "? it/s"
    return f"{steps_per_s:.2f} it/s" if steps_per_s >= 1 else f"{1 / steps_per_s:.1f} s/it"


def clock(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}"
