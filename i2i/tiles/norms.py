"""Instance-norm statistics of the whole image for tiled translation.

A generator lists the modules that normalize with statistics of their input (`Generator.tile_norms`). While a
`NormControl` is active each of them consults it: it normalizes with statistics already fixed for it, measures
the whole image's statistics over the pixels each tile owns (then stops the forward pass: the layers after it
would need those statistics), records the statistics of what it is given (the downscaled copy), or, left alone,
takes its input's own as usual.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from i2i.contract.parts import Generator

__all__ = ["NormControl", "Region", "StopForward", "norm_modules"]

Region = tuple[int, int, int, int]  # top, bottom, left, right of a tile's owned pixels, in tile coordinates


class StopForward(Exception):
    """Raised by the norm being measured: the rest of the forward pass is not needed (and cannot run yet)."""


def norm_modules(generator: Generator, wanted: str) -> list[nn.Module] | None:
    """The generator's norms whose statistics tiling replaces, or None (with a warning) when it cannot say."""
    declared = generator.tile_norms()
    if declared is None:
        if wanted != "tile":
            warnings.warn(f"generator {generator.name!r} does not declare its normalization layers"
                          " (Generator.tile_norms): each tile is normalized on its own, so tiles may differ in"
                          " colour", stacklevel=3)
        return None
    # An instance norm that tracks running statistics uses them in eval mode, like batch norm: nothing to replace.
    return [m for m in declared if not (getattr(m, "track_running_stats", False) and not m.training)]


@dataclass
class _Sums:
    total: Tensor
    squares: Tensor
    count: int = 0


@dataclass
class NormControl:
    """What each listed norm does while `active()`: see the module docstring."""

    modules: list[nn.Module]
    fixed: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)
    measuring: int | None = None  # index of the norm whose whole-image statistics are being summed
    recording: bool = False
    stop_when_recorded: bool = False  # end the pass once every norm is recorded: the layers after add nothing
    regions: list[Region] = field(default_factory=list)  # per image of the batch, in input pixels
    input_size: tuple[int, int] = (1, 1)
    _sums: _Sums | None = None

    def __post_init__(self) -> None:
        if not self.fixed:
            self.fixed = [None] * len(self.modules)

    @contextmanager
    def active(self) -> Iterator["NormControl"]:
        """Route the listed norms' forward through this control, restoring them afterwards."""
        saved = []
        for index, module in enumerate(self.modules):
            saved.append((module, module.__dict__.get("forward")))
            module.forward = self._forward(index, module)  # an instance attribute shadows the class's forward
        try:
            yield self
        finally:
            for module, previous in saved:
                if previous is None:
                    del module.forward
                else:
                    module.forward = previous

    def start_measuring(self, index: int) -> None:
        """Sum norm `index`'s input over owned pixels from now on (the earlier norms must be fixed)."""
        self.measuring, self._sums = index, None

    def finish_measuring(self) -> None:
        """Fix the measured norm's statistics: the mean and (biased) variance over every owned pixel."""
        sums, index = self._sums, self.measuring
        if sums is None or index is None or sums.count == 0:
            raise RuntimeError("no pixels were measured")  # a tiling bug, not a user error
        mean = sums.total / sums.count
        var = (sums.squares / sums.count - mean * mean).clamp_(min=0.0)
        self.fixed[index] = (mean.float(), var.float())
        self.measuring, self._sums = None, None

    def _forward(self, index: int, module: nn.Module):  # noqa: ANN202 (a bound forward)
        original = type(module).forward

        def forward(x: Tensor) -> Tensor:
            if self.measuring == index:
                self._measure(x)
                raise StopForward
            stats = self.fixed[index]
            if stats is None and self.recording:
                var, mean = torch.var_mean(x.float(), dim=(-2, -1), correction=0)
                stats = (mean.mean(0), var.mean(0))  # one image: its statistics
                self.fixed[index] = stats
                if self.stop_when_recorded and all(fixed is not None for fixed in self.fixed):
                    raise StopForward
            if stats is None:
                return original(module, x)
            return _normalize(module, x, *stats)

        return forward

    def _measure(self, x: Tensor) -> None:
        """Add the owned pixels of each tile in `x` to the sums, at `x`'s resolution."""
        if self._sums is None:
            zeros = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            self._sums = _Sums(zeros, zeros.clone())
        self._add(self._sums, x)

    def _add(self, sums: _Sums, x: Tensor) -> None:
        h, w = x.shape[-2:]
        sy, sx = h / self.input_size[0], w / self.input_size[1]
        for image, (top, bottom, left, right) in zip(x.double(), self.regions):
            part = image[:, round(top * sy):round(bottom * sy), round(left * sx):round(right * sx)]
            sums.total += part.sum(dim=(1, 2))
            sums.squares += (part * part).sum(dim=(1, 2))
            sums.count += part.shape[1] * part.shape[2]


def _normalize(module: nn.Module, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """Instance norm of `x` with the given per-channel statistics (and the module's affine, if any)."""
    mean, var = mean.to(x.device), var.to(x.device)
    eps = getattr(module, "eps", 1e-5)
    scale = torch.rsqrt(var + eps)
    y = (x.float() - mean[None, :, None, None]) * scale[None, :, None, None]
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    if weight is not None:
        y = y * weight.float()[None, :, None, None] + bias.float()[None, :, None, None]
    return y.to(x.dtype)
