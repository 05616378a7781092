"""Choosing the torch device and how many CPUs a process may use."""

from __future__ import annotations

import math
import os
from pathlib import Path

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


def usable_cpu_set() -> set[int]:
    """The CPUs this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return set(range(os.cpu_count() or 1))


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """How many CPUs this process may keep busy: its affinity mask, capped by a cgroup CPU quota (a container's
    `--cpus`), rounded up."""
    count = len(usable_cpu_set())
    quota = cgroup_cpu_quota(cgroup)
    return max(1, min(count, math.ceil(quota))) if quota else count


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup CPU quota allows (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us), None
    when there is none."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota != "max":
            return int(quota) / int(period or 100000)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
