"""Sample grids: fixed held-out images translated at every log point."""

from __future__ import annotations

from typing import Any

from torch.utils.data import default_collate

from i2i.api import Callback, Option, TrainingContext, save_samples, spread


class Samples(Callback):
    """Translates `images` fixed held-out images per domain at every log point (shown in report.html)."""

    name = "samples"
    order = 110
    default = True
    options = (Option("images", int, 4, "held-out images per domain translated at each log point (0: none)",
                      min=0, replaces="train.samples"),)

    def __init__(self, *, images: int = 4) -> None:
        self.images = images
        self.items: dict[str, Any] | None = None

    def on_train_start(self, context: TrainingContext) -> None:
        """Take the first images of the test split (the training split when there is none); of N-domain data, images
        spread over it."""
        count = self.images
        if count and context.is_main:
            dataset = context.dataset
            held_out = dataset.load("test" if dataset.has_split("test") else "train", augment=False)
            # N-domain items come domain by domain: spread the picks, so the grid shows every source domain
            picks = range(min(count, len(held_out))) if dataset.domains() == ("A", "B") else spread(len(held_out),
                                                                                                   count)
            self.items = default_collate([held_out[i] for i in picks])

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """Save the method's visuals of the samples as samples/step-NNNNNNNN.png."""
        if self.items is None:
            return
        with context.evaluation_weights():  # eval mode, with the weights callbacks evaluate with (e.g. EMA)
            visuals = context.method.visuals(context.to_device(self.items))
        save_samples({k: v.float().cpu() for k, v in visuals.items()}, context.folder.sample_file(context.step))
