"""Validation during training: `i2i evaluate`'s metrics of the current weights, and checkpoints/best."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from i2i.api import (Callback, DIRECTIONS, FID_PROTOCOLS, I2IError, LOWER_IS_BETTER, Option, TrainingContext,
                    check_measurable, download_command, improves, inception_path, load_inception, measure_held_out,
                    metric_names)

_WHAT = ("set callback.validation.inception_weights (a file, or \"downloaded\") for FID and KID, or validate on"
         " paired data")
#: inception_weights naming the file `i2i download inception` put in the cache for the fid protocol
DOWNLOADED = "downloaded"


class Validation(Callback):
    """Measures the current weights on held-out data as `i2i evaluate` does, every `every` steps; keeps the best.

    Results go into the log record as "validation" (metrics.jsonl, trackers); with keep_best, a checkpoint is
    written whenever the watched metric improves and copied to checkpoints/best. It runs on rank 0 only, with
    the networks in eval mode and the random streams untouched: training gives the same weights with it or not.
    """

    name = "validation"
    options = (
        Option("every", int, 0, "steps between validations (0: only at the end); also at the last step", min=0),
        Option("split", str, "test", "the dataset's held-out split to measure on"),
        Option("images", int, 0, "at most this many held-out images per direction (0: all)", min=0),
        Option("batch_size", int, 8, "images translated together", min=1),
        Option("inception_weights", str, "", "Inception weights file for FID and KID, as i2i evaluate"
               " --inception-weights (\"\": none; \"downloaded\": the one `i2i download inception` cached)"),
        Option("fid", str, "auto", "FID/KID protocol: standard (TF-Inception, comparable with published FIDs),"
               " torchvision, or auto (the weights file's layout; standard for \"downloaded\")",
               choices=("auto", *FID_PROTOCOLS)),
        Option("keep_best", str, "", "DIRECTION.METRIC to keep checkpoints/best by, e.g. AtoB.l1, BtoA.psnr,"
               " AtoB.fid (\"\": none); lower or higher is better as the metric says"),
    )

    def __init__(self, *, every: int = 0, split: str = "test", images: int = 0, batch_size: int = 8,
                 inception_weights: str = "", fid: str = "auto", keep_best: str = "") -> None:
        self.every, self.split, self.images, self.batch_size = every, split, images, batch_size
        self.inception_weights, self.fid = inception_weights, fid
        self.direction, _, self.metric = keep_best.partition(".")
        self.feature: torch.nn.Module | None = None
        self.best: float | None = None  # the watched value of checkpoints/best, and its step
        self.best_step: int | None = None
        self.pending: dict[str, Any] | None = None  # the newest result not yet in a log record
        self.copy_due = False  # a checkpoint of this step is to become checkpoints/best

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """keep_best names a direction and a metric; FID and KID need the Inception weights file."""
        keep, weights, fid = options["keep_best"], options["inception_weights"], options["fid"]
        if weights == DOWNLOADED:
            if not _downloaded(fid).is_file():
                protocol = "standard" if fid == "auto" else fid
                raise I2IError(f"inception_weights = \"{DOWNLOADED}\": no Inception weights of the {protocol} FID"
                               f" protocol in {_downloaded(fid)}; get them with `{download_command(protocol)}` (or"
                               " set callback.validation.inception_weights to a file)")
        elif weights and not Path(weights).expanduser().is_file():
            raise I2IError(f"inception_weights = {weights!r} is not a file: pass the Inception weights (.pth or"
                           f" .safetensors), or \"{DOWNLOADED}\" for those `i2i download inception` fetched")
        if not keep:
            return
        direction, _, metric = keep.partition(".")
        if (direction not in DIRECTIONS and "to_" not in direction) or metric not in LOWER_IS_BETTER:
            raise I2IError(f"keep_best = {keep!r} is not DIRECTION.METRIC: DIRECTION is one of"
                           f" {', '.join(DIRECTIONS)}, to_<domain> or <source>_to_<target>,"
                           f" METRIC one of {', '.join(LOWER_IS_BETTER)} (e.g. AtoB.l1)")
        if metric in ("fid", "kid") and not weights:
            raise I2IError(f"keep_best = {keep!r} needs FID/KID, which need inception_weights = FILE (or"
                           f" \"{DOWNLOADED}\": the weights `i2i download inception` fetched)")

    def on_setup(self, context: TrainingContext) -> None:
        """Refuse, before anything is written, a split the data lacks or a keep_best metric it cannot give."""
        directions, dataset = list(context.method.generators()), context.dataset
        features = bool(self.inception_weights)
        if not dataset.has_split(self.split):
            raise I2IError(f"[callback.validation] split = {self.split!r}: dataset {dataset.name!r} has no such split;"
                           " set callback.validation.split to one it has (e.g. test)")
        check_measurable(dataset, self.split, directions, features, _WHAT)
        if self.metric:
            given = metric_names(directions, dataset.paired, features) if self.direction in directions else []
            if self.metric not in given:
                why = (f"the method translates {', '.join(directions)} only" if self.direction not in directions
                       else f"this run can measure {', '.join(given)}" + (" (l1, psnr and ssim need paired data)"
                                                                         if not dataset.paired else ""))
                raise I2IError(f"[callback.validation] keep_best = {self.direction + '.' + self.metric!r} cannot be"
                               f" measured: {why}")
        if features and context.is_main:
            weights = _downloaded(self.fid) if self.inception_weights == DOWNLOADED else self.inception_weights
            self.feature = load_inception(weights, None if self.fid == "auto" else self.fid,
                                          source="[callback.validation] inception_weights").to(context.device)

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """Validate on every `every`-th step and the last (before that step's log point and checkpoint)."""
        if not context.due(self.every) or not context.is_main:
            return
        result = {"step": context.step, **self.measure(context)}
        self.pending = result
        if self.metric and improves(self.metric, result[self.direction].get(self.metric), self.best):
            self.best, self.best_step, self.copy_due = result[self.direction][self.metric], context.step, True
            context.request_checkpoint()

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """Add the newest result not logged yet, with its own step."""
        if self.pending is not None:
            record["validation"], self.pending = self.pending, None

    def on_checkpoint_save(self, context: TrainingContext, folder: Path) -> None:
        """Copy the checkpoint of an improved step to checkpoints/best."""
        if self.copy_due and self.best_step == context.step:
            context.checkpoints.copy_to_best(folder)
            self.copy_due = False

    def on_checkpoint_load(self, context: TrainingContext, folder: Path) -> None:
        """A kill between writing the best step's checkpoint and copying it: copy it now."""
        if context.is_main and self.best_step == context.step:
            best = context.checkpoints.best()
            try:
                copied = best is not None and context.checkpoints.step_of(best) == self.best_step
            except I2IError:  # a damaged best is replaced too
                copied = False
            if not copied:
                context.checkpoints.copy_to_best(folder)

    def state_dict(self) -> dict[str, Any]:
        """The best value and step so far, and the result not logged yet."""
        return {"best": self.best, "best_step": self.best_step, "pending": self.pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.best, self.best_step, self.pending = state["best"], state["best_step"], state["pending"]

    # -- measuring ---------------------------------------------------------------------------------------------
    def measure(self, context: TrainingContext) -> dict[str, dict[str, float | None]]:
        """`i2i evaluate`'s metrics of the weights the run's outputs use; every network's mode and RNG as they were."""
        generators = context.method.generators()
        device = context.device
        cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
        # the weights the run's outputs use (e.g. the EMA average), in eval mode; forked RNG: the torch streams (a
        # generator's own noise, say) come back as they were; Python's and NumPy's are not drawn from
        with context.evaluation_weights(), torch.random.fork_rng(devices=cuda), torch.no_grad():
            return measure_held_out(generators, context.dataset, self.split, self.batch_size, context.device,
                                    self.feature, images=self.images)


def _downloaded(fid: str) -> Path:
    """The weights `i2i download inception` keeps for option `fid` ("auto": the standard protocol's)."""
    return inception_path("standard" if fid == "auto" else fid)
