"""Experiment trackers as callbacks (TensorBoard, MLflow, W&B): off unless a recipe names one, each needing the
extra of i2i named like it (pip install "i2i-toolkit[mlflow]")."""

from i2i_stock.callbacks.trackers.mlflow import MLflow
from i2i_stock.callbacks.trackers.tensorboard import TensorBoard
from i2i_stock.callbacks.trackers.wandb import WandB

__all__ = ["MLflow", "TensorBoard", "WandB"]
