"""The training step as the loop calls it: eager, or captured (`run.capture`) as a CUDA graph replayed per batch.

A GAN step at small batches is bound by the host launching hundreds of small kernels, not by the GPU computing
them. A captured step is recorded once and replayed with one launch; what makes that possible is checked and
arranged here: the parts are made capture-ready (`Part.prepare_capture`: pools, random draws and adaptive
augmentation on the device), the optimizers are built for capture (`Optimizer.build_for_capture`: fused or
capturable kernels, the learning rate a device tensor), and the first step counts the places where the host reads
a tensor value (`.item()`, `bool(t)`, ...), which a captured step cannot hold, refusing the run naming them. On the
CPU the capture-ready step runs eagerly, so the same code is tested everywhere.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from i2i.contract.parts import Method
from i2i.engine.stepper import Stepper
from i2i.errors import I2IError

#: tensor methods with which the host reads a value: each waits for the device, and a captured step would replay
#: the value read while it was recorded
HOST_READS = frozenset({"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy",
                        "nonzero"})
#: eager steps of a batch shape before its step is recorded: lazily made state (optimizer moments, the pool) and
#: the kernels' autotuning settle first, on a side stream, as CUDA graph capture asks
WARMUP_STEPS = 3
_TORCH_DIR = os.path.dirname(torch.__file__)


class HostReads(TorchFunctionMode):
    """Counts host reads of tensor values while active, by the first line outside torch that made them."""

    def __init__(self) -> None:
        super().__init__()
        self.places: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.places[f"{_caller()} ({name})"] += 1
        return func(*args, **(kwargs or {}))


def _caller() -> str:
    """file:line of the innermost frame outside torch and this module (the part's code that reads the value)."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(_TORCH_DIR)
                                 or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return "torch"
    return f"{_short_path(frame.f_code.co_filename)}:{frame.f_lineno}"


def _short_path(path: str) -> str:
    """A source path relative to the working directory where it lies under it, else as it is."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def check_capture(recipe: Any, world_size: int) -> None:
    """Refuse, in one line naming the key, what a captured step cannot run with (before anything is built)."""
    run = recipe["run"]
    if not run["capture"]:
        return
    if run["precision"] == "fp16":
        raise I2IError("run.capture = true cannot run with run.precision = \"fp16\" (its loss scaler checks"
                       " gradients on the host every step): use \"bf16\" or \"fp32\", or run.capture = false")
    if run["compile"]:
        raise I2IError("run.capture = true and run.compile = true do not go together yet (capture records the"
                       " eager step's kernels): pick one")
    if world_size > 1:
        raise I2IError(f"run.capture = true runs one process, but torchrun started {world_size}: set"
                       " run.capture = false for a distributed run")


def prepare_parts(method: Method, parts: list[Any], device: torch.device) -> None:
    """Make the method and every part it built capture-ready (each once, before the first step)."""
    done: set[int] = set()
    for part in [method, *parts]:
        if id(part) not in done and hasattr(part, "prepare_capture"):
            done.add(id(part))
            part.prepare_capture(device)


class TrainingStep:
    """One training step of the method with its stepper: `step(batch) -> losses` (detached, on the device)."""

    def __init__(self, method: Method, stepper: Stepper, device: torch.device, capture: bool) -> None:
        self.method, self.stepper, self.device, self.capture = method, stepper, device, capture
        self.checked = False
        self.graph: _Graph | None = None
        self.warm: Counter[Any] = Counter()  # eager steps so far, by (batch shapes, frozen parameters)
        self.places: Counter[str] = Counter()  # the host reads the first step made (what a test checks)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        if not self.capture:
            return self._eager(batch)
        if not self.checked:
            return self._checked(batch)
        if self.device.type != "cuda":
            return self._eager(batch)
        return self._graphed(batch)

    def _eager(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The method's step and the stepper's end of step, as written."""
        losses = self.method.step(batch, self.stepper)
        self.stepper.end_of_step()
        return losses

    def _checked(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The first step, eager, counting host reads; a run whose step makes any is refused naming where."""
        self.checked = True
        _learning_rates_to(self.stepper, self.device)  # a restored checkpoint may have left them on the CPU
        with HostReads() as reads:
            losses = self._eager(batch)
        self.places = reads.places
        if reads.places:
            where = ", ".join(f"{place} x{count}" for place, count in reads.places.most_common(4))
            raise I2IError(f"run.capture = true: the training step reads tensor values on the host, which a captured"
                           f" step cannot (the value read while recording would be replayed): {where}; make those"
                           " parts capture-ready (Part.prepare_capture, Optimizer.build_for_capture; see"
                           " CONTRIBUTING.md) or set run.capture = false")
        self.warm[self._key(batch)] += 1
        return losses

    def _key(self, batch: dict[str, Any]) -> Any:
        """What a recorded step is good for: the batch's tensor shapes and dtypes, and the frozen parameters."""
        shapes = tuple((k, tuple(v.shape), v.dtype) for k, v in batch.items() if isinstance(v, Tensor))
        return shapes, self.stepper.frozen

    def _graphed(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Replay the recorded step with this batch; warm up and record it first. One recording is kept: a batch
        of another shape (an epoch's last, smaller one) steps eagerly, and one whose frozen parameters changed
        ([init] freeze_steps) is recorded anew."""
        key = self._key(batch)
        if self.graph is not None and self.graph.key != key and self.graph.key[1] != key[1]:
            self.graph = None  # what trains has changed for good
        if self.graph is None or self.graph.key != key:
            if self.graph is not None or self.warm[key] < WARMUP_STEPS:
                return self._on_side_stream(batch, key)
            self.graph = _Graph.record(self, batch, key)
        return self.graph.replay(batch)

    def _on_side_stream(self, batch: dict[str, Any], key: Any) -> dict[str, Tensor]:
        """An eager step on a side stream (as warm-up before a CUDA graph capture asks)."""
        self.warm[key] += 1
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            losses = self._eager(batch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return losses


class _Graph:
    """A recorded training step: its static inputs, the CUDA graph, and its loss outputs."""

    def __init__(self, key: Any, inputs: dict[str, Any], graph: Any, losses: dict[str, Tensor]) -> None:
        self.key, self.inputs, self.graph, self.losses = key, inputs, graph, losses

    @classmethod
    def record(cls, step: TrainingStep, batch: dict[str, Any], key: Any) -> "_Graph":
        """Record one step (the kernels are not run while recording; `replay` runs them)."""
        inputs = {k: v.clone() if isinstance(v, Tensor) else v for k, v in batch.items()}
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(step.device)
        try:
            with torch.cuda.graph(graph):
                losses = step._eager(inputs)
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise I2IError(f"run.capture = true: the training step could not be recorded as a CUDA graph ({reason});"
                           " set run.capture = false") from None
        return cls(key, inputs, graph, losses)

    def replay(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Run the recorded step on `batch` (copied into the recorded inputs); the losses as new tensors."""
        for name, value in batch.items():
            if isinstance(value, Tensor):
                self.inputs[name].copy_(value, non_blocking=True)
        self.graph.replay()
        return {name: value.clone() for name, value in self.losses.items()}


def _learning_rates_to(stepper: Stepper, device: torch.device) -> None:
    """Every tensor learning rate on the training device (the schedule fills them in place)."""
    for optimizer in stepper.optimizers.values():
        for group in optimizer.param_groups:
            if isinstance(group["lr"], Tensor) and group["lr"].device != device:
                group["lr"] = group["lr"].to(device)
