"""How much memory translating an image whole takes, the budget it is held to, and the tile side that fits it."""

from __future__ import annotations

import os
import weakref

import torch

from i2i.contract.parts import Generator, declared_sizes, fitting_side

__all__ = ["budget_bytes", "budget_words", "bytes_per_pixel", "fitting_tile"]

GIB = 1024 ** 3
_DEFAULT_TILE = 1024  # the side automatic tiling uses when the budget allows: less overlap, fewer seams
# Live tensors in an inference pass: the layer's input and output, a residual or skip kept for later, the
# convolution's workspace; about four copies of the widest activation (measured: the paper's ResNet-9 peaked at
# 15.9 GB for a 4096x4096 image, 950 bytes a pixel; this rule gives 1024).
_LIVE_COPIES = 4


def _free_bytes(device: torch.device) -> int:
    """Memory free on `device` now: the CUDA allocator's view, or the system's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def budget_bytes(device: torch.device, budget_gib: float | None) -> int:
    """The memory budget in bytes: `budget_gib` when given, else half of what is free on `device`."""
    if budget_gib is not None:
        return int(budget_gib * GIB)
    return _free_bytes(device) // 2


def budget_words(budget_gib: float | None, device: torch.device) -> str:
    """How the budget was set, for the message that says an image is tiled."""
    if budget_gib is not None:
        return "--memory-budget"
    return f"half of the {'GPU' if device.type == 'cuda' else ''} memory free now".replace("  ", " ")


_per_pixel: "weakref.WeakKeyDictionary[Generator, float]" = weakref.WeakKeyDictionary()


def bytes_per_pixel(generator: Generator, channels: int) -> float:
    """Bytes a whole-image pass of `generator` holds per input pixel, measured once on a small probe image."""
    if generator in _per_pixel:
        return _per_pixel[generator]
    side = fitting_side([generator], at_least=64)
    widest = [0]

    def note(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            widest[0] = max(widest[0], output[0].numel())

    handles = [m.register_forward_hook(note) for m in generator.modules()]
    param = next(generator.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        with torch.inference_mode():
            generator(torch.zeros(1, channels, side, side, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    per_pixel = _LIVE_COPIES * widest[0] / (side * side) * torch.finfo(dtype).bits / 8
    _per_pixel[generator] = per_pixel
    return per_pixel


def fitting_tile(generator: Generator, per_pixel: float, budget: int, batch_size: int) -> int:
    """The largest tile side up to 1024 whose batch fits in half the budget (the rest holds the image's bands)."""
    multiple, _ = declared_sizes(generator)
    side = _DEFAULT_TILE
    while side > multiple and batch_size * side * side * per_pixel > budget / 2:
        side //= 2
    # Tiles smaller than 64 px would be mostly overlap: the budget is exceeded rather than go below.
    return max(side // multiple * multiple, fitting_side([generator], at_least=min(64, _DEFAULT_TILE)))
