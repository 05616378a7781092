"""`i2i evaluate`: metrics of a trained run's checkpoint on held-out images, saved as the run's metrics.json.

Paired data (item i's A and B correspond): L1, PSNR and SSIM of each direction's translations against the
true counterparts. Both generators present: the cycle-reconstruction L1. Inception weights given or downloaded:
FID and KID between translated images and the real images of the target domain. The jobs live beside this
command: i2i.tools.metrics (the scores and their conventions), i2i.tools.inception (the FID protocols),
i2i.tools.heldout (scoring generators on a split), i2i.tools.rundata (the run's dataset from its recipe).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from torch import nn

from i2i.engine.devices import resolve_device, usable_cpus
from i2i.errors import I2IError, out_of_memory
from i2i.storage.atomic import atomic_file
from i2i.storage.cache import inception_path
from i2i.storage.checkpoint import STATE_FILE, STEP_DIR
from i2i.storage.rundir import RECIPE_FILE, RunFolder
from i2i.tiles.plan import Tiling
from i2i.tools.heldout import DIRECTIONS, check_measurable, measure_held_out
from i2i.tools.inception import FID_PROTOCOLS, download_command, fid_protocol_note, load_inception
from i2i.tools.generators import generator_file, load_generator
from i2i.tools.rundata import run_dataset

__all__ = ["evaluate"]


def evaluate(run: Path | str, data: Path | str | None = None, split: str = "test",
             inception_weights: Path | str | None = None, batch_size: int = 8, device: str = "auto",
             size: int | None = None, *, feature: nn.Module | None = None,
             on_progress: Callable[[int, int], None] | None = None, which: str | None = None,
             raw: bool = False, fid: str | None = None, tile: int | None = None) -> dict[str, Any]:
    """Metrics of RUN's checkpoint `which` (default the newest; "best", "step-N") on the held-out `split`, written
    atomically to run/metrics.json.

    The dataset is the run's recipe [data] table with root = `data` when given (a run trained on synthetic data
    reads an aligned or unpaired folder, judged by its layout), loaded without augmentation: resized to
    load_size and centre-cropped to crop_size as in training, or resized to `size` x `size` when given.
    FID and KID use the protocol `fid` ("standard" or "torchvision"; None: what `inception_weights` is laid out
    for, else standard) with the weights `inception_weights`, else with the file `i2i download inception` put in
    the cache for that protocol; neither: no FID/KID. `feature`, any module mapping [0, 1] images to (N, d)
    features, replaces Inception. The weights variant the checkpoint's callbacks declared for inference (e.g. EMA
    averages of the generators) is measured when it has one, unless `raw`. Images over the memory budget, or
    larger than `tile` px (0: never), are translated in tiles as `i2i translate` does them. Returns what
    metrics.json holds; its data.skipped lists the warnings of input files that were skipped, if any.
    """
    run = Path(run).expanduser()
    if batch_size < 1:
        raise I2IError(f"--batch-size {batch_size} must be at least 1")
    if size is not None and size < 1:
        raise I2IError(f"--size {size} must be at least 1")
    if fid is not None and fid not in FID_PROTOCOLS:
        raise I2IError(f"--fid {fid!r} is not one of {', '.join(FID_PROTOCOLS)}")
    folder = RunFolder(run)
    recipe_file = folder.recipe_file
    if not run.is_dir() or not recipe_file.is_file():
        raise I2IError(f"{run} is not a run folder (no {RECIPE_FILE} in it): pass the folder `i2i run` trained"
                       " into, e.g. runs/NAME")
    checkpoint = folder.checkpoint(which)  # a run without a complete checkpoint fails here with the fix
    target = resolve_device(device, "--device")
    features_used = None if feature is None else type(feature).__name__
    table = folder.read_recipe().get("data", {})
    rgb = _rgb_data(table)
    if not rgb and (inception_weights is not None or feature is not None):
        # Inception takes RGB photos: grayscale or multispectral data has no meaningful FID
        raise I2IError(f"FID and KID take RGB images, but this run's data is not 3-channel (data.channels ="
                       f" {table.get('channels')}, data.channels_b = {table.get('channels_b')}): evaluate without"
                       " --inception-weights (L1, PSNR and SSIM are measured on the data's own value range)")
    fix = "pass --inception-weights for FID and KID, or evaluate on paired data"
    if feature is None:
        given = inception_weights is not None
        weights = Path(inception_weights).expanduser() if given else inception_path(fid or "standard")
        if rgb and (given or weights.is_file()):  # downloaded weights serve RGB runs only
            source = "--inception-weights" if given else "the downloaded Inception weights"
            feature = load_inception(weights, fid, source=source)  # before anything slow: a bad file fails at once
            features_used = fid_protocol_note(feature.protocol, weights)
        else:
            fix = (f"no Inception weights for FID and KID in {weights}: get them with"
                   f" `{download_command(fid or 'standard')}` (or pass --inception-weights FILE), or evaluate on"
                   " paired data")
    if feature is not None:
        feature = feature.to(target).eval()
    directions = _directions(checkpoint)
    with _recording_skips() as recorded:
        dataset = run_dataset(table, recipe_file, data, split, size)
        check_measurable(dataset, split, directions, feature is not None, fix)  # before the generators load
        generators = {d: load_generator(checkpoint, d, target, raw=raw) for d in directions}
        paired = bool(dataset.paired)
        workers = min(int(table.get("workers", 0) or 0), max(0, usable_cpus() - 1))
        side = size or getattr(dataset, "crop_size", None)
        doing = (f"evaluating {run} on its {split} split (batches of {batch_size} images"
                 + (f" of {side}x{side} px" if side else "") + f") on {target}")
        with out_of_memory(doing, _memory_fixes(batch_size, tile)):
            # images over the memory budget (whole-slide, satellite scenes) are translated in tiles, as translate does
            metrics = measure_held_out(generators, dataset, split, batch_size, target, feature, workers,
                                       on_progress=on_progress, tiling=Tiling(tile=tile).check())
        skipped = recorded()
    report = {
        "run": str(run),
        "checkpoint": checkpoint.name,
        "step": _step(checkpoint),
        "data": {"dataset": dataset.name, "root": str(getattr(dataset, "root", "")) or None, "split": split,
                 "paired": paired, "load_size": getattr(dataset, "load_size", None),
                 "crop_size": getattr(dataset, "crop_size", None)},
        "features": features_used,
        "generators": {d: generator_file(checkpoint, d, raw=raw).name for d in directions},  # e.g. G_A.ema.safetensors
        "metrics": metrics,
    }
    if skipped:
        report["data"]["skipped"] = skipped
    values = dataset.value_map()
    if values is not None:
        # the scores are on the [0, 1] scale of this mapping: with it, L1 converts to the data's units (times high -
        # low) and PSNR/SSIM are already the data-unit values for that data range
        report["data"]["values"] = json.loads(values.to_json())
    with atomic_file(folder.evaluation_file, "w") as f:
        json.dump(report, f, indent=2, allow_nan=False)
        f.write("\n")
    return report


# The core's warnings for an input file it skipped (i2i.data.images: listing, opening, decoding a file).
_SKIP_WARNING = re.compile(r"^(skipping |cannot list )|; using the next image of .* instead$", re.DOTALL)


@contextmanager
def _recording_skips() -> Iterator[Callable[[], list[str]]]:
    """Inside, the warnings that say an input file was skipped are recorded (and shown as before); yields a function
    returning them. DataLoader workers forked inside record theirs into the same file, so none is missed."""
    previous = warnings.showwarning
    with tempfile.TemporaryFile("a+b") as log:  # appends: each worker's line lands whole
        def show(message, category, filename, lineno, file=None, line=None) -> None:  # warnings.showwarning's API
            text = str(message)
            if _SKIP_WARNING.search(text):
                os.write(log.fileno(), (" ".join(text.split()) + "\n").encode("utf-8", "replace"))
            previous(message, category, filename, lineno, file, line)

        def recorded() -> list[str]:
            log.seek(0)
            # a file that several workers tried is named by each of them: once is enough
            return list(dict.fromkeys(log.read().decode("utf-8").splitlines()))

        warnings.showwarning = show
        try:
            yield recorded
        finally:
            warnings.showwarning = previous


def _memory_fixes(batch_size: int, tile: int | None) -> str:
    """What shrinks the memory evaluating needs: smaller batches, images, tiles, another device."""
    batches = f"a smaller --batch-size than {batch_size}; " if batch_size > 1 else ""
    tiles = f"smaller tiles than --tile {tile}" if tile else "tiles (--tile 512)"
    return f"use {batches}smaller images (--size N); {tiles}; or a device with more memory (--device)"


def _rgb_data(table: dict[str, Any]) -> bool:
    """Whether a run's [data] table describes 3-channel images in both domains (the default)."""
    a = table.get("channels", 3)
    b = table.get("channels_b", 0) or a
    return a == 3 and b == 3


def _step(checkpoint: Path) -> int:
    """The step of a checkpoint folder: its training.json's, else its step-N name (checkpoints/best has none)."""
    step = RunFolder.read_state(checkpoint).get("step")
    return step if isinstance(step, int) else int(STEP_DIR.match(checkpoint.name).group(1))


def _directions(checkpoint: Path) -> list[str]:
    """The directions a checkpoint folder has generators for, as its training.json records them."""
    generators = RunFolder.read_state(checkpoint).get("generators")
    found = [d for d in DIRECTIONS if isinstance(generators, dict) and d in generators]
    if not found and isinstance(generators, dict):  # a method of N domains: "to_<target>", "<source>_to_<target>"
        found = list(generators)
    if not found:
        raise I2IError(f"{checkpoint / STATE_FILE} names no generator (an older i2i wrote it): evaluate"
                       " needs a checkpoint of this version; retrain or resume the run")
    return found

