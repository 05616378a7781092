"""How much memory translating an image whole takes, the budget it is held to, and the tile side that fits it."""

from __future__ import annotations

import ctypes
import os
import sys
import weakref
from dataclasses import dataclass

import torch

from i2i.contract.parts import Generator, declared_sizes, fitting_side

__all__ = ["band_bytes", "budget_bytes", "budget_words", "Footprint", "fitting_tile", "footprint", "release_freed_memory"]

GIB = 1024 ** 3
# The side automatic tiling uses when the budget allows. Not larger: at 2048 px the paper's ResNet-9 took 1.28x the
# whole image's time in 512 px tiles and 1.48x in 1024 px ones, though those give it fewer pixels (overlap 64; AMD
# EPYC Zen 3, benchmarks/README.md), and a 1024 px tile of it holds 1 GiB of activations against 256 MiB.
_DEFAULT_TILE = 512
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


@dataclass(frozen=True)
class Footprint:
    """What a generator's pass costs: bytes held per input pixel of a whole-image pass, and its output channels."""

    per_pixel: float
    out_channels: int


_footprints: "weakref.WeakKeyDictionary[Generator, Footprint]" = weakref.WeakKeyDictionary()


def footprint(generator: Generator, channels: int) -> Footprint:
    """The generator's Footprint, measured once on a small probe image of `channels` channels."""
    if generator in _footprints:
        return _footprints[generator]
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
            out = generator(torch.zeros(1, channels, side, side, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    found = Footprint(_LIVE_COPIES * widest[0] / (side * side) * torch.finfo(dtype).bits / 8, out.shape[1])
    _footprints[generator] = found
    return found


def band_bytes(tile: int, width: int, out_channels: int) -> int:
    """Bytes of the output band a tiled translation blends into: a tile's height across the padded width, float32,
    held twice while the finished rows are handed on and the next ones accumulate."""
    return 2 * 4 * out_channels * tile * width


def fitting_tile(generator: Generator, cost: Footprint, budget: int, batch_size: int, width: int) -> int:
    """The largest tile side up to 512 whose batch and output band (`width` px wide) fit in the budget."""
    multiple, _ = declared_sizes(generator)
    side = _DEFAULT_TILE
    while side > multiple and (batch_size * side * side * cost.per_pixel + band_bytes(side, width, cost.out_channels)
                               > budget):
        side //= 2
    # Tiles smaller than 64 px would be mostly overlap: the budget is exceeded rather than go below.
    return max(side // multiple * multiple, fitting_side([generator], at_least=min(64, _DEFAULT_TILE)))


def release_freed_memory() -> None:
    """Hand memory freed by the process back to the system (glibc's malloc_trim; nothing elsewhere).

    Tiles allocate and free activations of many sizes; glibc keeps what is freed in its heaps, fragmented, so the
    resident memory of a large tiled translation climbed to half again its live tensors (measured: 20000x2048 px
    through the quick start's generator in 1024 px tiles, 2157 MiB peak; trimmed after each tile, 1510 MiB, for
    0.4 s of 60). A fixed mmap threshold returns it too, but was 33% slower: every tensor is then fresh pages.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim():  # noqa: ANN202 (a ctypes function or None)
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None


_malloc_trim = _find_malloc_trim()
