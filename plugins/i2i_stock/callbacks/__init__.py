"""The stock callbacks: what the loop does beside stepping, registered like a third party's.

Each runs by default (``default = True``); a recipe turns one off with ``[callback.<name>] enabled = false``.
"""

from __future__ import annotations

from i2i.hookspecs import hookimpl
from i2i_stock.callbacks.checkpoints import Checkpoints
from i2i_stock.callbacks.finite import FiniteLosses
from i2i_stock.callbacks.metrics import MetricsLog
from i2i_stock.callbacks.progress import ProgressBar
from i2i_stock.callbacks.report import Report
from i2i_stock.callbacks.samples import Samples


@hookimpl
def i2i_callbacks() -> list[type]:
    """The stock callbacks."""
    return [MetricsLog, Samples, Report, Checkpoints, FiniteLosses, ProgressBar]
