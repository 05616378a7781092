"""Helpers the benchmarks share: device names, syncs, peak memory."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    """Wait for the device to finish queued work (timings need it on a GPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return f"cpu: {model}, {torch.get_num_threads()} threads, {' '.join(extras) or 'no avx512'}"


class Peak:
    """Peak memory over a stretch of work: CUDA allocator peak, or the process's peak RSS on a CPU.

    On a CPU the peak resident set size (VmHWM) is reset through /proc/self/clear_refs (Linux), so the figure
    is the whole process's peak RSS during the stretch (weights, optimizer state and Python included), not
    torch's allocations alone.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.how = "CUDA: torch.cuda.max_memory_allocated during one step (tensors only)"
        else:
            self.how = ("CPU: process peak RSS (VmHWM, reset via /proc/self/clear_refs) during one step; it"
                        " includes the weights, optimizer state, Python and the other step's live tensors")

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass

    def read(self) -> str:
        if self.device.type == "cuda":
            return f"{torch.cuda.max_memory_allocated(self.device) / 2**20:.0f} MiB (CUDA)"
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return f"{int(line.split()[1]) / 1024:.0f} MiB (peak RSS)"
        return "n/a"
