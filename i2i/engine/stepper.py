"""The Stepper a method updates weights through: optimizers, mixed precision, gradient averaging."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from i2i.engine.distributed import Distributed


class Stepper:
    """Optimizers and precision for one method: what `Method.step` calls to update weights."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], device: torch.device, precision: str,
                 distributed: Distributed | None = None):
        self.optimizers = optimizers
        self.device = device
        self.distributed = distributed or Distributed()
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        #: ids of the parameters that do not train this step ([init.<network>] freeze): their gradients are dropped
        #: before the update, so the optimizer neither moves them nor keeps state for them
        self.frozen: frozenset[int] = frozenset()
        #: the step is recorded as a CUDA graph (run.capture): autocast then keeps no cache of cast weights
        self.capture = False

    def stateful(self) -> dict[str, Any]:
        """Its pieces of training state by checkpoint name: each optimizer as "optim.<group>", and the gradient
        scaler as "scaler" under fp16."""
        pieces: dict[str, Any] = {f"optim.{group}": optimizer for group, optimizer in self.optimizers.items()}
        if self.scaler:
            pieces["scaler"] = self.scaler
        return pieces

    def autocast(self) -> AbstractContextManager:
        """Mixed precision for forward computations (a no-op in fp32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=not self.capture)

    def zero_grad(self, group: str) -> None:
        """Clear the gradients of one optimizer."""
        self.optimizers[group].zero_grad(set_to_none=True)

    def backward(self, loss: Tensor) -> None:
        """Backpropagate, scaling the loss when fp16 needs it."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, group: str) -> None:
        """Update the weights of one optimizer (with gradients averaged over the processes under torchrun)."""
        if self.frozen or self.distributed.active:  # else nothing here needs the parameters listed
            params = [p for param_group in self.optimizers[group].param_groups for p in param_group["params"]]
            if self.frozen:
                # the method may have turned gradients on for them (e.g. a discriminator after the generator step)
                for p in params:
                    if id(p) in self.frozen:
                        p.grad = None
                params = [p for p in params if id(p) not in self.frozen]
            if self.distributed.active:
                self.distributed.average_gradients(params)
        if self.scaler:
            self.scaler.step(self.optimizers[group])
        else:
            self.optimizers[group].step()

    def end_of_step(self) -> None:
        """Called once per training step after the method's updates."""
        if self.scaler:
            self.scaler.update()
