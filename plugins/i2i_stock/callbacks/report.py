"""report.html, rewritten now and then during training and at its end."""

from __future__ import annotations

import time
from typing import Any

from i2i.api import Callback, Option, TrainingContext, write_report


class Report(Callback):
    """Writes report.html (samples, loss curves, summary) every `interval` seconds of training and at the end."""

    name = "report"
    order = 120
    default = True
    options = (Option("interval", float, 30.0, "seconds between rewrites during training (one takes about a"
                      " second); it is always written at the end", min=0.0),)

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self.last = -float("inf")

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """Rewrite the page if `interval` seconds have passed."""
        if context.is_main and time.perf_counter() - self.last >= self.interval:
            self._write(context)

    def on_train_end(self, context: TrainingContext, outcome: str, error: BaseException | None) -> None:
        """The final page, however training ended."""
        if context.is_main:
            self._write(context)

    def _write(self, context: TrainingContext) -> None:
        write_report(context.folder.path)
        self.last = time.perf_counter()
