"""Training on several processes with torch.distributed, as torchrun launches them.

`torchrun --nproc_per_node=N -m i2i run RECIPE` starts N copies of `i2i run`; each finds its rank in the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and joins one process group:
NCCL when it trains on a CUDA device, gloo on a CPU. Without those variables a run is a single process and
every collective here is a no-op, so the trainer has one code path.

Gradients are averaged over the processes when a method calls `Stepper.step(group)`, in one all-reduce per
optimizer step (the scheme NVIDIA's StyleGAN2-ADA/StyleGAN3 trainers use). DistributedDataParallel's reducer is
not used: a GAN step runs each network in several graphs (a discriminator scores fakes for the generator's loss
with its own weights frozen, then scores reals and fakes for its own loss), which DDP only supports with
`find_unused_parameters` and with every method plugin calling wrapped modules. Averaging at the optimizer keeps
method plugins unaware of how many processes run them.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from i2i.errors import I2IError, first_line


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE) with >1 process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class Distributed:
    """This process's place among the training processes, and the collectives the trainer needs."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self._control = None  # a gloo group for small host-side decisions, so NCCL runs need no host sync

    @property
    def active(self) -> bool:
        """More than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics, samples and the report."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "Distributed":
        """The place torchrun's environment variables describe (a single process without them)."""
        if not launched():
            return cls()
        try:
            return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                       int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
        except (KeyError, ValueError):
            raise I2IError("WORLD_SIZE is set but RANK is missing or not a number: start several processes with"
                           " torchrun (torchrun --nproc_per_node=N -m i2i run RECIPE)") from None

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU (cuda:LOCAL_RANK) when the run uses CUDA."""
        if self.active and device.type == "cuda" and device.index is None:
            if self.local_rank >= torch.cuda.device_count():
                raise I2IError(f"rank {self.rank} wants GPU {self.local_rank} but this node has"
                               f" {torch.cuda.device_count()}: start at most that many processes per node")
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device, timeout_s: float) -> None:
        """Join the process group (NCCL for CUDA, gloo otherwise); a no-op for a single process."""
        if not self.active or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=timeout_s)
        with self._collective("joining the process group"):
            dist.init_process_group(backend, timeout=timeout, rank=self.rank, world_size=self.world_size)
            self._control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None

    def stop(self) -> None:
        """Leave the process group."""
        if self.active and dist.is_initialized():
            dist.destroy_process_group()

    @contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        """Turn a peer's failure (a closed connection, a timeout) into one line naming this rank."""
        try:
            yield
        except I2IError:
            raise
        except (RuntimeError, ValueError, OSError) as exc:  # DistBackendError and DistNetworkError are RuntimeErrors
            # gloo and NCCL lead with a source location and end in advice that does not apply here
            detail = re.sub(r"^\[[^\]]*\]\s*", "", first_line(exc)).split(". ")[0]
            raise I2IError(f"process {self.rank} of {self.world_size} lost the others while {what} ({detail});"
                           " another process probably failed first (see its message); the last checkpoint is"
                           " kept: continue with --resume") from None

    # -- collectives (all no-ops for a single process) -----------------------------------------------------
    def barrier(self, what: str) -> None:
        """Wait until every process got here."""
        if self.active:
            with self._collective(what):
                dist.barrier(group=self._control)

    def broadcast_networks(self, networks: Iterable[nn.Module]) -> None:
        """Give every rank rank 0's parameters and buffers (weights, batch-norm statistics)."""
        if not self.active:
            return
        with self._collective("sharing the weights"), torch.no_grad():
            for net in networks:
                for tensor in [*net.parameters(), *net.buffers()]:
                    dist.broadcast(tensor.data, src=0)

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace each gradient by its mean over the processes (one all-reduce of them all, flattened)."""
        if not self.active:
            return
        params = [p for p in parameters if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        for param, total in zip(params, self.sum(grads, "averaging gradients")):
            mean = total / self.world_size
            if param.grad is None:
                param.grad = mean
            else:
                param.grad.copy_(mean)

    def sum(self, tensors: list[Tensor], what: str = "summing the logged losses") -> list[Tensor]:
        """The elementwise sums of `tensors` over the processes (one dtype, same shapes on every rank)."""
        if not self.active or not tensors:
            return tensors
        flat = torch.cat([t.reshape(-1) for t in tensors])  # one call: latency, not bandwidth, bounds small nets
        with self._collective(what):
            dist.all_reduce(flat)
        return [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    def any(self, flag: bool) -> bool:
        """Whether any process passed True (e.g. a Ctrl-C one of them received); a host-side call."""
        if not self.active:
            return flag
        value = torch.tensor([1 if flag else 0])
        with self._collective("agreeing to stop"):
            dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self._control)
        return bool(value.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (small picklable values made by i2i itself), in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        with self._collective("gathering state"):
            dist.all_gather_object(out, obj, group=self._control)
        return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes, differentiable: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: Tensor) -> Tensor:
    """`x` summed over the training processes, with gradients flowing back to every process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllReduceSum.apply(x)
