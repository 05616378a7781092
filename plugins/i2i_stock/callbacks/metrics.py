"""metrics.jsonl: one JSON line per log point."""

from __future__ import annotations

from typing import Any

from i2i.api import Callback, TrainingContext


class MetricsLog(Callback):
    """Writes metrics.jsonl: one line per log point with step, epoch, learning rates, time and mean losses."""

    name = "metrics"
    order = 100  # after callbacks that add to the record (default order 0)
    default = True

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """Append the record (what earlier callbacks added included)."""
        if context.is_main:
            context.folder.append_metrics(record)
