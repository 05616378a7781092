"""Checkpoints: safetensors files in a step folder that appears under its final name only when complete."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from i2i.errors import I2IError

STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_name(step: int) -> str:
    """The folder name of the checkpoint at `step`."""
    return f"step-{step:08d}"


def part_metadata(kind: str, name: str, options: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata that lets a network be rebuilt from its file alone."""
    return {"i2i.kind": kind, "i2i.name": name, "i2i.options": json.dumps(options, sort_keys=True)}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(checkpoints: Path, step: int, networks: dict[str, nn.Module],
                    metadata: dict[str, dict[str, str]], tensors: dict[str, torch.Tensor],
                    state: dict[str, Any]) -> Path:
    """Write networks (one .safetensors each), extra training tensors and a JSON state; atomically."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / step_name(step)
    tmp = checkpoints / f".{step_name(step)}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, net in networks.items():
        weights = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
        save_file(weights, tmp / f"{name}.safetensors", metadata=metadata.get(name))
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, tmp / "training.safetensors")
    (tmp / "training.json").write_text(json.dumps(state, indent=1, sort_keys=True))
    for file in tmp.iterdir():
        _fsync(file)
    _fsync(tmp)
    if final.exists():  # a checkpoint of the same step from an earlier attempt; the new one replaces it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync(checkpoints)
    return final


def list_checkpoints(checkpoints: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a missing, truncated or damaged file is named in the error."""
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as exc:
        raise I2IError(f"cannot read checkpoint file {file}: {exc}") from None


def first_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str | None:
    """The first key (in sorted order) that is missing, unexpected or of another shape, described; else None."""
    for key in sorted(set(expected) | set(found)):
        if key not in found:
            return f"key {key!r} is missing from the checkpoint"
        if key not in expected:
            return f"key {key!r} in the checkpoint does not exist in the network"
        if expected[key].shape != found[key].shape:
            return (f"key {key!r} has shape {tuple(expected[key].shape)} in the network but"
                    f" {tuple(found[key].shape)} in the checkpoint")
    return None


def load_network(file: Path, net: nn.Module) -> None:
    """Load a network's weights from `file`; a damaged or mismatched file is named in the error."""
    weights = read_tensors(file)
    mismatch = first_mismatch(net.state_dict(), weights)
    if mismatch:
        raise I2IError(f"{file} does not fit the network: {mismatch}")
    net.load_state_dict(weights)


def read_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The training tensors and the JSON state of a checkpoint folder."""
    tensors = read_tensors(folder / "training.safetensors")
    try:
        state = json.loads((folder / "training.json").read_text())
    except (OSError, ValueError) as exc:
        raise I2IError(f"cannot read checkpoint file {folder / 'training.json'}: {exc}") from None
    return tensors, state


def prune_checkpoints(checkpoints: Path, keep: int, protect: set[int]) -> list[Path]:
    """Delete all but the `keep` newest checkpoints, never those at the steps in `protect`; 0 keeps all."""
    if keep <= 0:
        return []
    candidates = [p for p in list_checkpoints(checkpoints) if int(p.name[5:]) not in protect]
    doomed = candidates[:-keep]
    for folder in doomed:
        # renamed first so that a crash mid-delete never leaves a half checkpoint under a valid name
        trash = folder.with_name(f".{folder.name}.deleting")
        os.rename(folder, trash)
        shutil.rmtree(trash)
    return doomed


# -- the state of optimizers and random number generators, as tensors plus JSON ---------------------------

def flatten_optimizer(prefix: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict as tensors named `prefix.<param>.<name>` and a JSON-able rest."""
    tensors, scalars = {}, {}
    for param, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{param}.{name}"] = value
            else:
                scalars.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            param, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(param), {})[name] = value
    for param, values in meta["scalars"].items():
        state.setdefault(int(param), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a run draws from (Python, NumPy, torch CPU and CUDA) as tensors plus JSON."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = value
    version, internal, gauss = random.getstate()
    meta = {"python": [version, list(internal), gauss], "numpy": [kind, pos, has_gauss, cached]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(tensors["rng.torch"])
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
