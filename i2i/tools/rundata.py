"""A run's data rebuilt from its recipe: the dataset `i2i evaluate` measures on, the inputs compare and export use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from i2i.contract.domains import spread
from i2i.contract.parts import Dataset
from i2i.contract.registry import default_registry
from i2i.errors import I2IError
from i2i.recipe import LOADER
from i2i.storage.rundir import RECIPE_FILE, RunFolder

__all__ = ["held_out_items", "run_dataset"]


def run_dataset(table: dict[str, Any], recipe_file: Path, data: Path | str | None = None, split: str = "test",
                size: int | None = None) -> Dataset:
    """A run's dataset from its recipe's [data] table (`recipe_file` is named in errors), rooted at `data` when
    given (a folder's layout picks the stock dataset when the run's own takes no root, e.g. synthetic data) and
    resized to `size` x `size` when given."""
    registry = default_registry()
    name = table.get("name")
    if not isinstance(name, str):
        raise I2IError(f"{recipe_file} has no [data] name: is it a {RECIPE_FILE} written by `i2i run`?")
    options = {k: v for k, v in table.items() if k != "name" and k not in LOADER.names()}
    if data is not None:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise I2IError(f"--data {root} is not a folder: pass the dataset folder (e.g. with testA/ and testB/,"
                           " or test/ of A|B pairs)")
        if "root" not in {o.name for o in registry.info("dataset", name).options}:
            # e.g. a run on built-in synthetic data, evaluated on real folders: their layout says which kind
            name = _layout(root, split)
            takes = {o.name for o in registry.info("dataset", name).options}
            options = {k: v for k, v in options.items() if k in takes}
        options["root"] = str(root)
    if size is not None:
        options["load_size"] = options["crop_size"] = size
    try:
        return registry.create("dataset", name, **options)
    except I2IError as exc:
        raise I2IError(f"{exc} (dataset from {recipe_file}{', --data ' + str(data) if data is not None else ''})"
                       ) from None


def _layout(root: Path, split: str) -> str:
    """The stock dataset a folder's layout fits: unpaired (trainA/, <split>A/, ...) or aligned (train/, <split>/)."""
    if any((root / f"{s}{d}").is_dir() for s in ("train", split) for d in "AB"):
        return "unpaired"
    if any((root / s).is_dir() for s in ("train", split, "val")):
        return "aligned"
    raise I2IError(f"--data {root} has neither {split}A/ and {split}B/ (unpaired) nor {split}/ (aligned A|B pairs)"
                   " folders")


def held_out_items(run: Path, count: int) -> tuple[dict[str, Tensor], str, str]:
    """The first `count` held-out items of a run's data as A and B batches (its test split, else train), the
    split and the dataset name; for N-domain data, `count` items spread over the split as "image" and "domain"."""
    name, options = RunFolder(run).load_recipe().dataset()
    dataset = default_registry().create("dataset", name, **options)
    split = "test" if dataset.has_split("test") else "train"
    items = dataset.load(split, augment=False)
    count = min(count, len(items))
    if count == 0:
        raise I2IError(f"its {split} split is empty")
    if dataset.domains() != ("A", "B"):
        # N-domain items come domain by domain: take them spread over the split, so several domains show
        picked = [items[i] for i in spread(len(items), count)]
        return ({"image": torch.stack([item["image"] for item in picked]),
                 "domain": torch.tensor([int(item["domain"]) for item in picked])}, split, name)
    batch = [items[i] for i in range(count)]
    return {d: torch.stack([item[d] for item in batch]) for d in "AB"}, split, name
