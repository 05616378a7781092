"""Where tensors and networks live: device moves and the channels-last layout."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """The batch's tensors on `device`; image batches (4-d) channels-last when asked."""
    def move(v: Tensor) -> Tensor:
        v = v.to(device, non_blocking=True)
        return v.contiguous(memory_format=torch.channels_last) if channels_last and v.dim() == 4 else v
    return {k: move(v) if isinstance(v, Tensor) else v for k, v in batch.items()}


def tensors_to(state: Any, device: torch.device) -> Any:
    """`state` (tensors in dicts and lists) with every tensor on `device`."""
    if isinstance(state, Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: tensors_to(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(tensors_to(v, device) for v in state)
    return state


class _ContiguousGrad(torch.autograd.Function):
    """Identity (a copy) whose backward hands on the gradient in the default layout."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        return grad.contiguous()


def _contiguous_single_image_grad(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    if isinstance(output, Tensor) and output.dim() == 4 and output.shape[0] == 1 and output.requires_grad:
        return _ContiguousGrad.apply(output)
    return None


def to_channels_last(net: nn.Module, device: torch.device) -> nn.Module:
    """Store `net`'s weights channels-last (in place).

    On a CPU, torch (seen in 2.14) computes wrong instance-norm input gradients when a batch of one image gets
    a channels-last output gradient, so there the gradient reaching an instance norm on a single image is put
    back in the default layout first (a copy; same math).
    """
    net.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        for module in net.modules():
            if isinstance(module, nn.modules.instancenorm._InstanceNorm):
                module.register_forward_hook(_contiguous_single_image_grad)
    return net
