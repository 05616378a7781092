"""How pixel values of any depth map to the [-1, 1] networks work in, and back: the one owner of that mapping.

A `ValueMap` holds, per domain, the raw value that becomes -1 and the one that becomes +1; values outside are
clipped. It comes from the data options `values` and `low`/`high`:
- "depth": the file's own range: 0..255 for 8-bit, 0..65535 for 16-bit, -32768..32767 for int16, 0..1 for float.
- "window": a fixed window [low, high] in the data's units (e.g. a CT window in Hounsfield-like units).
- "percentile": the low-th and high-th percentiles of each domain's training images, computed once when the run
  starts and saved with every generator file, so `i2i translate` maps new images exactly as training did.
Translated outputs go back through the inverse of the target domain's mapping, into the input file's dtype.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from i2i.errors import I2IError

__all__ = ["VALUE_MODES", "DomainRange", "ValueMap", "depth_range"]

#: data.values: "auto" is the 8-bit RGB pipeline for 3-channel data and "depth" otherwise
VALUE_MODES = ("auto", "depth", "window", "percentile")
_DEPTHS = {np.dtype(np.uint8): (0.0, 255.0), np.dtype(np.uint16): (0.0, 65535.0),
           np.dtype(np.int16): (-32768.0, 32767.0), np.dtype(np.int32): (-2147483648.0, 2147483647.0),
           np.dtype(np.float32): (0.0, 1.0)}


def depth_range(dtype: np.dtype) -> tuple[float, float]:
    """The raw values that map to -1 and +1 under "depth" for arrays of `dtype`."""
    try:
        return _DEPTHS[np.dtype(dtype)]
    except KeyError:
        raise I2IError(f"no value range is known for {np.dtype(dtype)} pixels: use data.values = \"window\" with"
                       " data.low and data.high") from None


@dataclass(frozen=True)
class DomainRange:
    """The raw values of one domain that map to -1 (low) and +1 (high); None under "depth" (the file's dtype).
    `dtype`: the domain's pixel dtype as its training files hold it (e.g. "uint16"), what its translations are
    written in; "" when unknown."""

    low: float | None = None
    high: float | None = None
    dtype: str = ""

    def bounds(self, dtype: np.dtype) -> tuple[float, float]:
        """(low, high) for arrays of `dtype`."""
        return depth_range(dtype) if self.low is None or self.high is None else (self.low, self.high)


@dataclass(frozen=True)
class ValueMap:
    """The mapping of each domain's raw values to [-1, 1]."""

    mode: str = "depth"
    domains: dict[str, DomainRange] = field(default_factory=lambda: {"A": DomainRange(), "B": DomainRange()})

    def to_network(self, array: np.ndarray, domain: str) -> Tensor:
        """An (H, W, C) array of raw values as a (C, H, W) float32 tensor in [-1, 1]."""
        low, high = self.domains[domain].bounds(array.dtype)
        values = (np.asarray(array, dtype=np.float64) - low) / (high - low)
        unit = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
        return torch.from_numpy((unit * 2.0 - 1.0).astype(np.float32).transpose(2, 0, 1).copy())

    def from_network(self, tensor: Tensor, domain: str, dtype: np.dtype) -> np.ndarray:
        """A (C, H, W) tensor in [-1, 1] as an (H, W, C) array of raw values of `domain`, in `dtype` (integer
        dtypes rounded to the nearest step)."""
        low, high = self.domains[domain].bounds(dtype)
        unit = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) / 2).double().numpy().transpose(1, 2, 0)
        values = low + unit * (high - low)
        dtype = np.dtype(dtype)
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return np.clip(np.rint(values), info.min, info.max).astype(dtype)
        return values.astype(dtype)

    def to_json(self) -> str:
        """The mapping as JSON (what generator files and the run record)."""
        return json.dumps({"mode": self.mode, "domains": {d: asdict(r) for d, r in self.domains.items()}})

    @classmethod
    def from_json(cls, text: str) -> "ValueMap":
        """The mapping `to_json` wrote."""
        data: dict[str, Any] = json.loads(text)
        return cls(data["mode"], {d: DomainRange(**r) for d, r in data["domains"].items()})

    def with_dtypes(self, dtypes: dict[str, np.dtype]) -> "ValueMap":
        """The same mapping, recording each domain's pixel dtype."""
        return ValueMap(self.mode, {d: replace(r, dtype=np.dtype(dtypes[d]).name if d in dtypes else r.dtype)
                                    for d, r in self.domains.items()})

    def output_dtype(self, domain: str, fallback: np.dtype) -> np.dtype:
        """The dtype translations into `domain` are written in: the domain's recorded one, else `fallback`."""
        recorded = self.domains[domain].dtype
        return np.dtype(recorded) if recorded else np.dtype(fallback)

    def swapped(self) -> "ValueMap":
        """The same mapping with domains A and B exchanged (for the generator that translates B to A)."""
        return self.oriented("B", "A")

    def oriented(self, source: str, target: str) -> "ValueMap":
        """The mapping of a generator from domain `source` to `target`: theirs as its input ("A") and output ("B")."""
        return ValueMap(self.mode, {"A": self.domains[source], "B": self.domains[target]})


def percentiles(arrays: list[np.ndarray], low: float, high: float) -> DomainRange:
    """The low-th and high-th percentiles (0..100) of every value of `arrays` (one domain's training images)."""
    if not arrays:
        raise I2IError("data.values = \"percentile\" needs training images to compute the percentiles from")
    values = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])
    lo, hi = np.percentile(values, [low, high])
    if not hi > lo:
        raise I2IError(f"data.values = \"percentile\": the {low}th and {high}th percentiles of the training images"
                       f" are both {lo:g} (constant images?): use data.values = \"window\" with data.low/data.high")
    return DomainRange(float(lo), float(hi))
