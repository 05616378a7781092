"""Choosing the torch device and how many CPUs a process may use."""

from __future__ import annotations

import os

import torch

from i2i.errors import I2IError


def resolve_device(name: str, setting: str = "[run] device") -> torch.device:
    """The torch device for `name` ("auto" picks CUDA, then MPS, then CPU); `setting` names it in errors."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise I2IError(f"{setting} = {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise I2IError(f"{setting} = {name!r} but no CUDA device is available; use \"auto\" or \"cpu\"")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise I2IError(f"{setting} = {name!r} but only {torch.cuda.device_count()} CUDA devices exist")
    return device


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1
