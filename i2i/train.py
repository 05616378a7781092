"""The training loop: seeds, data loading, optimizers and LR schedule, logging, samples, checkpoints, progress."""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import threading
import time
import warnings
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from i2i import report
from i2i.checkpoint import (first_mismatch, flatten_optimizer, list_checkpoints, part_metadata, prune_checkpoints,
                            read_state, read_tensors, rng_state, save_checkpoint, set_rng_state, step_name,
                            unflatten_optimizer)
from i2i.devices import resolve_device, usable_cpus
from i2i.distributed import Distributed
from i2i.errors import I2IError, Interrupted
from i2i.loader import EpochSampler, SeededItems, derive_seed
from i2i.parts import Buffer, Dataset, Discriminator, Generator, Loss, Method
from i2i.recipe import Recipe
from i2i.registry import Registry, default_registry


REPORT_INTERVAL_S = 30.0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """The reference's "linear" policy: 1 for `epochs`, then linear decay toward 0 over `decay_epochs`."""
    if decay_epochs == 0:
        return 1.0  # no decay phase (e.g. a run bounded by max_steps alone)
    return 1.0 - max(0, epoch + 1 - epochs) / float(decay_epochs + 1)


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` already holds a run (its recipe or a checkpoint)."""
    return (run_dir / "recipe.toml").exists() or bool(list_checkpoints(run_dir / "checkpoints"))


def check_run_dir(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse to mix a new run into an existing one unless asked to replace it; writes nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise I2IError(f"run folder {run_dir} exists and is not a folder")
    if holds_run(run_dir) and not overwrite:
        raise I2IError(f"{run_dir} already holds a run: pass --out DIR (or --set run.name=NEW) for a new run,"
                       " or --overwrite to replace it")


_IMPLEMENTATIONS = {"auto": {}, "fused": {"fused": True}, "foreach": {"foreach": True},
                    "single": {"foreach": False}}


def make_optimizer(params: list[nn.Parameter], optim: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer the recipe's [optim] table describes (optim.implementation picks its kernels)."""
    implementation = optim.get("implementation", "auto")
    kwargs = _IMPLEMENTATIONS[implementation]
    if optim["optimizer"] == "rmsprop" and implementation == "fused":
        raise I2IError(f"optim.implementation = \"fused\" is not available for RMSprop in torch {torch.__version__}:"
                       " use \"foreach\" or \"auto\"")
    try:
        if optim["optimizer"] == "rmsprop":
            return torch.optim.RMSprop(params, lr=optim["lr"], alpha=optim["beta2"],
                                       weight_decay=optim["weight_decay"], **kwargs)
        return torch.optim.Adam(params, lr=optim["lr"], betas=(optim["beta1"], optim["beta2"]),
                                weight_decay=optim["weight_decay"], **kwargs)
    except (RuntimeError, TypeError, ValueError) as exc:
        if implementation != "fused":
            raise
        device = params[0].device if params else "no parameters"
        raise I2IError(f"optim.implementation = \"fused\" is not supported here ({device}, torch"
                       f" {torch.__version__}: {exc}); use \"foreach\" or \"auto\"") from None


def prepare_run_dir(run_dir: Path, overwrite: bool = False) -> None:
    """Create the run folder, replacing an existing run only when `overwrite` is set."""
    check_run_dir(run_dir, overwrite)
    if holds_run(run_dir):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


class PartBuilder:
    """Builds the parts a method asks for, as the recipe says (the PartFactory a method receives)."""

    def __init__(self, recipe: Recipe, registry: Registry, initial_weights: bool = True) -> None:
        self.recipe = recipe
        self.registry = registry
        # False when a checkpoint will replace the starting weights (--resume): options that only pick those
        # (a pretrained encoder's file or download) then take their defaults, needing neither file nor network
        self.initial_weights = initial_weights
        self.built: dict[int, tuple[str, str, dict[str, Any]]] = {}  # id(net) -> kind, name, options

    def _network(self, kind: str, overrides: dict[str, Any]) -> nn.Module:
        name, options = self.recipe.part(kind)
        options = {**options, **overrides}
        if not self.initial_weights:
            options.update(self.registry.initial_weight_defaults(kind, name))
        options = self.registry.resolve_options(kind, name, options, kind)
        net = self.registry.info(kind, name).cls(**options)
        self.built[id(net)] = (kind, name, options)
        return net

    def generator(self, **overrides: Any) -> Generator:
        """A new generator from [generator]."""
        return self._network("generator", overrides)

    def discriminator(self, **overrides: Any) -> Discriminator:
        """A new discriminator from [discriminator]."""
        return self._network("discriminator", overrides)

    def loss(self, slot: str) -> tuple[Loss, float]:
        """The loss in [loss.<slot>] and its weight."""
        name, weight, options = self.recipe.loss(slot)
        return self.registry.create("loss", name, **options), weight

    def buffer(self) -> Buffer:
        """A new buffer from [buffer]."""
        name, options = self.recipe.part("buffer")
        return self.registry.create("buffer", name, **options)

    def options_of(self, part: Any) -> dict[str, Any]:
        """The resolved options a network built here was given."""
        return dict(self.built[id(part)][2])


class Stepper:
    """Optimizers and precision for one method: what `Method.step` calls to update weights."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], device: torch.device, precision: str,
                 distributed: Distributed | None = None):
        self.optimizers = optimizers
        self.device = device
        self.distributed = distributed or Distributed()
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> AbstractContextManager:
        """Mixed precision for forward computations (a no-op in fp32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def zero_grad(self, group: str) -> None:
        """Clear the gradients of one optimizer."""
        self.optimizers[group].zero_grad(set_to_none=True)

    def backward(self, loss: Tensor) -> None:
        """Backpropagate, scaling the loss when fp16 needs it."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, group: str) -> None:
        """Update the weights of one optimizer (with gradients averaged over the processes under torchrun)."""
        if self.distributed.active:
            self.distributed.average_gradients(
                p for param_group in self.optimizers[group].param_groups for p in param_group["params"])
        if self.scaler:
            self.scaler.step(self.optimizers[group])
        else:
            self.optimizers[group].step()

    def end_of_step(self) -> None:
        """Called once per training step after the method's updates."""
        if self.scaler:
            self.scaler.update()


@dataclass
class Progress:
    """What the loop reports to a progress display after each step."""

    step: int
    total: int
    epoch: int
    losses: dict[str, float] | None  # set on logged steps


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


def _first_items(dataset: torch.utils.data.Dataset, count: int) -> dict[str, Any]:
    return default_collate([dataset[i] for i in range(min(count, len(dataset)))])


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """The batch's tensors on `device`; image batches (4-d) channels-last when asked."""
    def move(v: Tensor) -> Tensor:
        v = v.to(device, non_blocking=True)
        return v.contiguous(memory_format=torch.channels_last) if channels_last and v.dim() == 4 else v
    return {k: move(v) if isinstance(v, Tensor) else v for k, v in batch.items()}


class Trainer:
    """Trains a method on a recipe into a run folder; everything is built and checked before anything is written."""

    def __init__(self, recipe: Recipe, run_dir: Path, registry: Registry | None = None,
                 overwrite: bool = False, resume: bool = False) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.overwrite = overwrite
        self.resume = resume
        if overwrite and resume:
            raise I2IError("--resume continues the run in the folder and --overwrite replaces it: pass only one")
        check_run_dir(self.run_dir, overwrite or resume)
        self.registry = registry or default_registry()
        run, train = recipe["run"], recipe["train"]
        self.distributed = Distributed.from_environment()
        self.device = self.distributed.device(resolve_device(run["device"]))
        if run["precision"] == "fp16" and self.device.type != "cuda":
            raise I2IError(f"[run] precision = \"fp16\" needs a CUDA device (this run uses {self.device});"
                           " use \"bf16\" or \"fp32\"")
        self.distributed.start(self.device, run["distributed_timeout"])
        seed_everything(run["seed"])  # the same on every process, so all build the same initial weights

        data_name, data_options = recipe.dataset()
        self.dataset: Dataset = self.registry.create("dataset", data_name, **data_options)
        self.train_set = self.dataset.load("train", augment=True)
        if len(self.train_set) == 0:
            raise I2IError(f"dataset {data_name!r} has no training images")
        loader = recipe["data"]
        workers = min(loader["workers"], usable_cpus())
        if workers < loader["workers"]:
            warnings.warn(f"data.workers = {loader['workers']} but this machine lets us use {workers} CPUs;"
                          f" loading with {workers} workers")
        self.sampler = EpochSampler(len(self.train_set), run["seed"], rank=self.distributed.rank,
                                    world_size=self.distributed.world_size)
        # The loader gets a generator of its own so it never draws from the global RNG the parts use.
        self.loader = DataLoader(
            SeededItems(self.train_set), batch_size=loader["batch_size"], sampler=self.sampler,
            num_workers=workers, generator=torch.Generator().manual_seed(run["seed"]),
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0, drop_last=False)
        split = "test" if self.dataset.has_split("test") else "train"
        self.samples = (_first_items(self.dataset.load(split, augment=False), train["samples"])
                        if train["samples"] else None)

        method_name, method_options = recipe.part("method")
        self.method: Method = self.registry.create("method", method_name, **method_options)
        if self.method.paired_data and not getattr(self.dataset, "paired", False):
            raise I2IError(f"method {method_name!r} needs paired data, but dataset {data_name!r} is unpaired: use"
                           " data.name = \"aligned\" (A|B side-by-side images), or synthetic data with"
                           " data.paired = true")
        self.builder = PartBuilder(recipe, self.registry,
                                   initial_weights=not (resume and list_checkpoints(self.run_dir / "checkpoints")))
        self.method.build(self.builder)
        self.networks = self.method.networks()
        self.channels_last = run["channels_last"]
        for net in self.networks.values():
            net.to(self.device)
            if self.channels_last:
                to_channels_last(net, self.device)
            if run["compile"]:
                net.compile()  # in place: the state-dict keys (and so the checkpoints) stay the same
        self.distributed.broadcast_networks(self.networks.values())
        self.optimizers = {group: make_optimizer(params, recipe["optim"])
                           for group, params in self.method.optimizer_groups().items()}
        schedule = lambda epoch: lr_factor(epoch, train["epochs"], train["decay_epochs"])  # noqa: E731
        self.schedulers = {g: torch.optim.lr_scheduler.LambdaLR(o, schedule) for g, o in self.optimizers.items()}
        self.stepper = Stepper(self.optimizers, self.device, run["precision"], self.distributed)
        self._seed_rank(0)

        self.global_batch = loader["batch_size"] * self.distributed.world_size
        self.steps_per_epoch = math.ceil(math.ceil(len(self.train_set) / self.distributed.world_size)
                                         / loader["batch_size"])
        self.step = 0
        self.epoch = 0
        self.position = 0  # items of the current epoch's order already trained on, over all processes
        self.total_steps = self._plan_total_steps()
        if self.total_steps == 0:
            raise I2IError("nothing to train: train.epochs + train.decay_epochs is 0 and train.max_steps is 0")
        self.start_time = 0.0
        self._first_bad: dict[str, tuple[Tensor, Tensor]] = {}
        self._last_report = -float("inf")
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self._stop_requested = False

    def _seed_rank(self, step: int) -> None:
        """Give each process other than rank 0 its own random stream (pools, dropout), derived from the seed."""
        if self.distributed.rank > 0:
            seed_everything(derive_seed("rank", self.recipe["run"]["seed"], self.distributed.rank, step))

    def _plan_total_steps(self) -> int:
        """The step at which training ends, from where it stands (so a resumed run may change process count)."""
        train = self.recipe["train"]
        epochs = train["epochs"] + train["decay_epochs"]
        total = 0
        if epochs > self.epoch:
            left = math.ceil(max(0, len(self.train_set) - self.position) / self.global_batch)
            total = self.step + left + (epochs - self.epoch - 1) * self.steps_per_epoch
        if train["max_steps"]:
            total = min(total, train["max_steps"]) if total else train["max_steps"]
        return total

    # -- outputs ---------------------------------------------------------------------------------------
    def _metadata(self) -> dict[str, dict[str, str]]:
        meta = {}
        for name, net in self.networks.items():
            if id(net) in self.builder.built:  # a network the method made itself (e.g. CUT's heads) has no part name
                kind, part, options = self.builder.built[id(net)]
                meta[name] = part_metadata(kind, part, options)
        return meta

    def generator_files(self) -> dict[str, str]:
        """Which network file translates in each direction, e.g. {"AtoB": "G_A", "BtoA": "G_B"}."""
        names = {id(net): name for name, net in self.networks.items()}
        found = {}
        for direction in ("AtoB", "BtoA"):
            try:
                found[direction] = names[id(self.method.generator_for(direction))]
            except (KeyError, NotImplementedError):  # a one-sided method translates one way only
                continue
        return found

    def save_checkpoint(self) -> Path:
        """Write the whole training state as checkpoints/step-NNNNNNNN, then prune old periodic ones."""
        tensors, rngs = rng_state()
        optim = {}
        for group, optimizer in self.optimizers.items():
            flat, optim[group] = flatten_optimizer(f"optim.{group}", optimizer.state_dict())
            tensors.update(flat)
        for name, buffer in self.method.buffers().items():
            tensors.update({f"buffer.{name}.{k}": v for k, v in buffer.state_dict().items()})
        tensors.update({f"log.{name}": value for name, value in self._sums.items()})
        state = {"step": self.step, "epoch": self.epoch, "position": self.position,
                 "processes": self.distributed.world_size, "recipe": self.recipe.tables,
                 "generators": self.generator_files(), "optimizers": optim, "rng": rngs,
                 "schedulers": {g: s.state_dict() for g, s in self.schedulers.items()},
                 "scaler": self.stepper.scaler.state_dict() if self.stepper.scaler else None,
                 "log_count": self._count, "elapsed": time.perf_counter() - self.start_time}
        folder = save_checkpoint(self.run_dir / "checkpoints", self.step, self.networks, self._metadata(),
                                 tensors, state)
        prune_checkpoints(self.run_dir / "checkpoints", self.recipe["train"]["keep_checkpoints"],
                          protect={self.step, self.total_steps})
        return folder

    def load_checkpoint(self, folder: Path) -> None:
        """Restore the whole training state from a checkpoint folder (all read and checked before any is set)."""
        weights = {name: read_tensors(folder / f"{name}.safetensors") for name in self.networks}
        for name, net in self.networks.items():
            mismatch = first_mismatch(net.state_dict(), weights[name])
            if mismatch:
                raise ModelMismatch(f"{name}: {mismatch}", folder, self._recipe_differences(folder))
        tensors, state = read_state(folder)
        try:
            optimizers = {g: unflatten_optimizer(f"optim.{g}", tensors, state["optimizers"][g])
                          for g in self.optimizers}
            buffers = {name: {k[len(f"buffer.{name}."):]: v for k, v in tensors.items()
                              if k.startswith(f"buffer.{name}.")} for name in self.method.buffers()}
            for name, net in self.networks.items():
                net.load_state_dict(weights[name])
            for group, optimizer in self.optimizers.items():
                optimizer.load_state_dict(optimizers[group])
            for group, scheduler in self.schedulers.items():
                scheduler.load_state_dict(state["schedulers"][group])
            for name, buffer in self.method.buffers().items():
                buffer.load_state_dict({k: v.to(self.device) for k, v in buffers[name].items()})
            if self.stepper.scaler and state.get("scaler"):
                self.stepper.scaler.load_state_dict(state["scaler"])
            set_rng_state(tensors, state["rng"])
            self.step, self.epoch = state["step"], state["epoch"]
            # checkpoints before "position" came from single-process runs: position follows from the step
            batch = self.recipe["data"]["batch_size"]
            self.position = state.get("position", (self.step - self.epoch * math.ceil(len(self.train_set) / batch))
                                      * batch)
            self._sums = {k[4:]: v.to(self.device) for k, v in tensors.items() if k.startswith("log.")}
            self._count = state["log_count"]
            self.start_time = time.perf_counter() - state["elapsed"]
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise I2IError(f"{folder} is incomplete or from another version: {type(exc).__name__}: {exc}") from None

    def _recipe_differences(self, folder: Path) -> list[str]:
        """The model-defining recipe keys that differ between this run and the checkpoint's."""
        try:
            saved = json.loads((folder / "training.json").read_text())["recipe"]
        except (OSError, ValueError, KeyError):
            return []
        out = []
        for table in ("method", "generator", "discriminator"):
            mine, theirs = self.recipe.tables.get(table, {}), saved.get(table, {})
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    out.append(f"[{table}] {key} = {mine.get(key)!r} here, {theirs.get(key)!r} in the checkpoint")
        return out

    def restore_newest(self) -> Path | None:
        """Load the newest checkpoint that loads; a broken newer one is named in a warning and skipped."""
        found = list_checkpoints(self.run_dir / "checkpoints")
        if not found:
            warnings.warn(f"--resume: no complete checkpoint in {self.run_dir / 'checkpoints'}; starting from"
                          " step 0")
            return None
        mismatches = []
        for folder in reversed(found):
            try:
                self.load_checkpoint(folder)
                return folder
            except ModelMismatch as exc:
                mismatches.append(exc)
                warnings.warn(f"cannot resume from {folder.name}: {exc}")
            except I2IError as exc:
                warnings.warn(f"cannot resume from {folder.name}: {exc}; trying the previous checkpoint")
        if mismatches:
            raise mismatches[0]
        raise I2IError(f"--resume: none of the {len(found)} checkpoints in {self.run_dir / 'checkpoints'} could be"
                       " loaded (see the warnings above)")

    def write_samples(self) -> None:
        """Translate the fixed held-out samples and save them for the report."""
        if self.samples is None:
            return
        for net in self.networks.values():
            net.eval()
        try:
            visuals = self.method.visuals(_to_device(self.samples, self.device, self.channels_last))
        finally:
            for net in self.networks.values():
                net.train()
        report.save_samples({k: v.float().cpu() for k, v in visuals.items()},
                            self.run_dir / "samples" / f"step-{self.step:08d}.png")

    def _watch(self, losses: dict[str, Tensor]) -> None:
        """Remember, on the device and without a sync, the first step at which each loss was non-finite."""
        for name, value in losses.items():
            first, seen = self._first_bad.get(name, (None, None))
            new = ~torch.isfinite(value)
            if first is None:
                self._first_bad[name] = (torch.where(new, self.step, -1), value.float().clone())
            else:
                new = new & (first < 0)
                self._first_bad[name] = (torch.where(new, self.step, first), torch.where(new, value.float(), seen))

    def _check_finite(self) -> None:
        """Stop with the loss and step that first went non-finite (one sync, at log and checkpoint time)."""
        found = [(int(first), name, float(value)) for name, (first, value) in self._first_bad.items()]
        if self.distributed.active:  # every process stops together, on the first bad loss of any of them
            found = [item for items in self.distributed.gather(found) for item in items]
        bad = sorted(item for item in found if item[0] >= 0)
        if bad:
            step, name, value = bad[0]
            kept = list_checkpoints(self.run_dir / "checkpoints")
            last = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was written"
            raise I2IError(f"loss {name} became {value} at step {step}; training stopped and {last}"
                           " (try a lower optim.lr, or run.precision = \"fp32\")")

    def _log(self, metrics_file) -> dict[str, float]:
        self._check_finite()
        # under torchrun the logged losses are the mean over all processes' steps
        sums = self.distributed.sum(list(self._sums.values()))
        count = self._count * self.distributed.world_size
        losses = {name: (value / count).item() for name, value in zip(self._sums, sums)}
        self._sums, self._count = {}, 0
        if not self.distributed.is_main:
            return losses
        record = {"step": self.step, "epoch": self.epoch,
                  "lr": next(iter(self.optimizers.values())).param_groups[0]["lr"],
                  "elapsed": round(time.perf_counter() - self.start_time, 3), "losses": losses}
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        self.write_samples()
        # the page and its plot take about a second: refreshed at most every REPORT_INTERVAL_S, and at the end
        if time.perf_counter() - self._last_report >= REPORT_INTERVAL_S:
            report.write_report(self.run_dir)
            self._last_report = time.perf_counter()
        return losses

    # -- the loop --------------------------------------------------------------------------------------
    def run(self, on_progress: Callable[[Progress], None] | None = None) -> Path:
        """Train to the end (or continue from the newest checkpoint with resume); returns the run folder."""
        main = self.distributed.is_main
        try:
            self.distributed.barrier("starting")  # every process has checked the run folder before rank 0 writes
            if self.resume and self.restore_newest() is not None:  # every process loads the same checkpoint
                self._seed_rank(self.step)
                self.total_steps = self._plan_total_steps()
                if main:
                    self._forget_after(self.step)
            else:
                if main:
                    prepare_run_dir(self.run_dir, self.overwrite or self.resume)
                self.start_time = time.perf_counter()
            if main:
                self.recipe.save(self.run_dir / "recipe.toml")
            metrics = open(self.run_dir / "metrics.jsonl", "a") if main else nullcontext()
            with metrics as metrics_file, self._stop_on_ctrl_c():
                self._loop(metrics_file, on_progress)
            if main:
                report.write_report(self.run_dir)
            self.distributed.barrier("finishing")
        finally:
            self.distributed.stop()
        return self.run_dir

    def _loop(self, metrics_file, on_progress: Callable[[Progress], None] | None) -> None:
        train = self.recipe["train"]
        main = self.distributed.is_main
        while self.step < self.total_steps:
            self.sampler.set_epoch(self.epoch, start=self.position)
            for batch in self.loader:
                losses = self.method.step(_to_device(batch, self.device, self.channels_last), self.stepper)
                self.stepper.end_of_step()
                self.step += 1
                self.position += self.global_batch
                self._count += 1
                self._watch(losses)
                for name, value in losses.items():
                    self._sums[name] = self._sums[name] + value if name in self._sums else value.float().clone()
                logged = None
                if self.step % train["log_every"] == 0 or self.step == self.total_steps:
                    logged = self._log(metrics_file)
                every = train["checkpoint_every"]
                if self.distributed.active:  # a Ctrl-C reaching any process stops them all at the same step
                    self._stop_requested = self.distributed.any(self._stop_requested)
                if (every and self.step % every == 0) or self.step == self.total_steps or self._stop_requested:
                    self._check_finite()
                    folder = (self.save_checkpoint() if main
                              else self.run_dir / "checkpoints" / step_name(self.step))
                if on_progress:
                    on_progress(Progress(self.step, self.total_steps, self.epoch, logged))
                if self._stop_requested:
                    raise Interrupted(f"stopped at step {self.step}; saved {folder}; continue with --resume")
                if self.step >= self.total_steps:
                    return
            self.epoch += 1
            self.position = 0
            for scheduler in self.schedulers.values():
                scheduler.step()

    def _forget_after(self, step: int) -> None:
        """Drop metrics and samples an interrupted run wrote after the checkpoint it resumes from."""
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.exists():
            kept = [r for r in report.read_metrics(self.run_dir) if r.get("step", 0) <= step]
            metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
        for sample in (self.run_dir / "samples").glob("step-*.*"):
            if sample.stem[5:].isdigit() and int(sample.stem[5:]) > step:
                sample.unlink()

    @contextmanager
    def _stop_on_ctrl_c(self):
        """First Ctrl-C: finish the step, save a checkpoint, stop. A second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            warnings.warn("stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class ModelMismatch(I2IError):
    """A checkpoint whose networks do not fit the recipe's."""

    def __init__(self, mismatch: str, folder: Path, differences: list[str]) -> None:
        hint = f" (the recipe differs: {'; '.join(differences)})" if differences else ""
        super().__init__(f"the recipe's model differs from checkpoint {folder}: {mismatch}{hint}")


def train(recipe: Recipe, run_dir: Path | None = None, overwrite: bool = False, resume: bool = False,
          on_progress: Callable[[Progress], None] | None = None, registry: Registry | None = None) -> Path:
    """Train `recipe` into `run_dir` (default runs/<run.name>) and return the run folder."""
    return Trainer(recipe, run_dir or default_run_dir(recipe), registry, overwrite, resume).run(on_progress)


def default_run_dir(recipe: Recipe) -> Path:
    """runs/<run.name>, relative to the working directory."""
    return Path("runs") / recipe["run"]["name"]
