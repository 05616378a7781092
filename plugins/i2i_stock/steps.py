"""Helpers the stock methods share for computing a training step."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    """Turn gradients of `nets` on or off (off while the generator updates, as the reference does)."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def call(net: nn.Module, *batches: Tensor, batched: bool) -> list[Tensor]:
    """net(b) for each batch; one call on the concatenation when `batched` (exact for per-sample norms)."""
    if not batched or len(batches) == 1:
        return [net(b) for b in batches]
    out = net(torch.cat(batches, 0))
    return list(out.split([b.shape[0] for b in batches], 0))
