"""The training engine: the loop as the algorithm reads (trainer.py), its state (state.py), the setup steps
(setup.py), the optimizer step (stepper.py), device placement (placement.py) and lifecycle events (events.py)."""

from i2i.engine.trainer import Trainer, default_run_dir, train

__all__ = ["Trainer", "default_run_dir", "train"]
