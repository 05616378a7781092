"""TensorBoard: losses, learning rates, what callbacks add to the log record, sample grids and the recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from i2i.api import Option, TrainingContext
from i2i_stock.callbacks.trackers.base import Tracker, flat_recipe


class TensorBoard(Tracker):
    """Logs every log point to TensorBoard event files (`tensorboard --logdir RUN/tensorboard`)."""

    name = "tensorboard"
    packages = ("tensorboard",)
    options = (Option("log_dir", str, "", "the folder of the event files; empty: the run folder's tensorboard/"),
               Option("images", bool, True, "log the sample grid of each log point"))

    def __init__(self, log_dir: str = "", images: bool = True) -> None:
        self.log_dir, self.images = log_dir, images
        self.writer = None

    def start(self, context: TrainingContext) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        folder = Path(self.log_dir) if self.log_dir else context.folder.path / "tensorboard"
        # on --resume, drop what an interrupted session logged after the checkpoint it continues from
        self.writer = SummaryWriter(str(folder), purge_step=context.step + 1 if context.resumed_from else None)
        self.writer.add_text("recipe", "```toml\n" + context.recipe.to_toml() + "\n```", context.step)
        if not context.resumed_from:
            params = {k: v for k, v in flat_recipe(context.recipe.tables).items()
                      if isinstance(v, (bool, int, float, str))}
            for summary in hparams(params, {}):  # into this event file (add_hparams would open another)
                self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def log(self, context: TrainingContext, step: int, values: dict[str, float], sample: Path | None) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        if self.images and sample is not None:
            with Image.open(sample) as image:
                self.writer.add_image("samples", np.asarray(image.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def end(self, context: TrainingContext, outcome: str) -> None:
        self.writer.close()

    def abandon(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None
