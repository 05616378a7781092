"""Checkpoints: safetensors files in a step folder that appears under its final name only when complete."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

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


def load_network(file: Path, net: nn.Module) -> None:
    """Load a network's weights from `file`; a damaged or mismatched file is named in the error."""
    try:
        weights = load_file(file)
    except (SafetensorError, OSError) as exc:
        raise I2IError(f"cannot read checkpoint file {file}: {exc}") from None
    missing, unexpected = set(net.state_dict()) - set(weights), set(weights) - set(net.state_dict())
    if missing or unexpected:
        key = sorted(missing or unexpected)[0]
        why = "lacks" if missing else "has an unexpected"
        raise I2IError(f"{file} {why} key {key!r}: it was saved from a different network")
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise I2IError(f"{file} does not fit the network: {first}") from None
