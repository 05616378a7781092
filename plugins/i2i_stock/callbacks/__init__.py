"""The stock callbacks: what the loop does beside stepping, registered like a third party's.

metrics, samples, report, checkpoints, finite and progress run by default (``default = True``; a recipe turns
one off with ``[callback.<name>] enabled = false``); ema, validation and the trackers (tensorboard, mlflow,
wandb) run when a recipe names them in a ``[callback.<name>]`` table.
"""

from __future__ import annotations

from i2i.api import hookimpl
from i2i_stock.callbacks.checkpoints import Checkpoints
from i2i_stock.callbacks.ema import EMA
from i2i_stock.callbacks.finite import FiniteLosses
from i2i_stock.callbacks.metrics import MetricsLog
from i2i_stock.callbacks.progress import ProgressBar
from i2i_stock.callbacks.report import Report
from i2i_stock.callbacks.samples import Samples
from i2i_stock.callbacks.trackers import MLflow, TensorBoard, WandB
from i2i_stock.callbacks.validation import Validation


@hookimpl
def i2i_callbacks() -> list[type]:
    """The stock callbacks."""
    return [MetricsLog, Samples, Report, Checkpoints, FiniteLosses, ProgressBar, EMA, Validation,
            TensorBoard, MLflow, WandB]
