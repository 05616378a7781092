"""Setting up a run, in named steps: device, data, method and networks, optimizers, schedule, callbacks.

Each step checks what it builds, so everything fails before the run folder is touched. The order the trainer
calls them in is part of the result: the networks draw their initial weights from the seeded global RNG.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from i2i.engine.devices import resolve_device, usable_cpus
from i2i.engine.distributed import Distributed
from i2i.engine.placement import to_channels_last
from i2i.errors import I2IError
from i2i.data.loader import EpochSampler, SeededItems
from i2i.contract.callbacks import Callback
from i2i.contract.options import toml_value
from i2i.contract.parts import (Augment, Buffer, Dataset, Discriminator, Generator, Loss, Method, Part, declared_sizes,
                                fitting_side, takes_side)
from i2i.recipe import Recipe, unknown_group_message
from i2i.contract.registry import Registry
from i2i.data.values import ValueMap


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_device(recipe: Recipe, distributed: Distributed) -> torch.device:
    """The device of this process ([run] device; under torchrun, the local rank's GPU)."""
    run = recipe["run"]
    device = distributed.device(resolve_device(run["device"]))
    if run["precision"] == "fp16" and device.type != "cuda":
        raise I2IError(f"[run] precision = \"fp16\" needs a CUDA device (this run uses {device});"
                       " use \"bf16\" or \"fp32\"")
    return device


@dataclass
class Data:
    """The training data: the dataset part, its training items, the sharded sampler and the loader."""

    dataset: Dataset
    items: torch.utils.data.Dataset
    sampler: EpochSampler
    loader: DataLoader
    global_batch: int  # items per step over all processes
    steps_per_epoch: int


def setup_data(recipe: Recipe, registry: Registry, distributed: Distributed, device: torch.device) -> Data:
    """The [data] dataset, and a loader whose order is seeded and sharded over the processes."""
    name, options = recipe.dataset()
    dataset: Dataset = registry.create("dataset", name, **options)
    items = dataset.load("train", augment=True)
    if len(items) == 0:
        raise I2IError(f"dataset {name!r} has no training images")
    loader, seed = recipe["data"], recipe["run"]["seed"]
    # Capped without a word: the batches do not depend on the number of workers, and the recipes' 4 is a default
    # for GPU machines, not something a user on a smaller one has to act on (it used to warn on every run).
    workers = min(loader["workers"], usable_cpus())
    sampler = EpochSampler(len(items), seed, rank=distributed.rank, world_size=distributed.world_size)
    # The loader gets a generator of its own so it never draws from the global RNG the parts use.
    data_loader = DataLoader(
        SeededItems(items), batch_size=loader["batch_size"], sampler=sampler, num_workers=workers,
        generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, drop_last=False)
    steps = math.ceil(math.ceil(len(items) / distributed.world_size) / loader["batch_size"])
    return Data(dataset, items, sampler, data_loader, loader["batch_size"] * distributed.world_size, steps)


@dataclass(frozen=True)
class BuiltPart:
    """A part the builder made: where from, what, and the options it was given."""

    #: unique per run: the table, or "<table>.<n>" for the n-th further part built from it ("loss.<slot>" for a
    #: loss); the name of the part's state in checkpoints when the method does not name it (see `stateful`)
    key: str
    table: str
    kind: str
    name: str
    options: dict[str, Any]
    part: Any


#: kinds whose parts the method hands to checkpoints itself: networks as weight files (Method.networks), buffers
#: and augments under the method's own names (Method.buffers, Method.augments)
SAVED_BY_METHOD = (Generator, Discriminator, Buffer, Augment)


class PartBuilder:
    """Builds the parts a method asks for, as the recipe says (the PartFactory a method receives)."""

    def __init__(self, recipe: Recipe, registry: Registry, initial_weights: bool = True,
                 channels: dict[str, int] | None = None) -> None:
        self.recipe = recipe
        self.registry = registry
        self.domain_channels = channels or {"A": 3, "B": 3}
        #: the data's pixel value mapping (None: 8-bit RGB), recorded in the generator files
        self.value_map: ValueMap | None = None
        # False when a checkpoint will replace the starting weights (--resume): options that only pick those
        # (a pretrained encoder's file or download) then take their defaults, needing neither file nor network
        self.initial_weights = initial_weights
        self.built: dict[int, tuple[str, str, dict[str, Any]]] = {}  # id(net) -> kind, name, options
        #: every loss built, by slot (a second one of a slot as "<slot>.1", ...), for checkpoints of their buffers
        self.losses: dict[str, Loss] = {}
        #: every part built here, by key (see BuiltPart), in the order built
        self.records: dict[str, BuiltPart] = {}

    def _record(self, table: str, kind: str, name: str, options: dict[str, Any], part: Any) -> str:
        """Remember a part built from [`table`]; its key."""
        key, copies = table, 0
        while key in self.records:
            copies += 1
            key = f"{table}.{copies}"
        self.records[key] = BuiltPart(key, table, kind, name, dict(options), part)
        return key

    def _network(self, kind: str, overrides: dict[str, Any]) -> nn.Module:
        name, options = self.recipe.part(kind)
        declared = {o.name for o in self.registry.info(kind, name).options}
        for key in ("in_channels", "out_channels"):
            # a part without channel options is an RGB network: it takes the data's channels only when they are 3
            if key in overrides and key not in declared:
                if overrides.pop(key) != 3:
                    raise I2IError(f"{kind} {name!r} has no {key} option, so it cannot take the data's"
                                   f" {self._channels_text()} images: use a {kind} with {key}, or RGB data")
        options = {**options, **overrides}
        if not self.initial_weights:
            options = self.registry.without_starting_weights(kind, name, options)
        options = self.registry.resolve_options(kind, name, options, kind)
        net = self.registry.info(kind, name).cls(**options)
        self.built[id(net)] = (kind, name, options)
        self._record(kind, kind, name, options, net)
        return net

    def build(self, table: str, /, **overrides: Any) -> Part:
        """A new part from the recipe's [<table>] table, with `overrides` applied: any kind the method lists in
        `Method.parts` (a plugin's kind, or generator, discriminator, buffer, augment)."""
        method = self.recipe["method"]["name"]
        listed = self.registry.info("method", method).cls.parts
        if table not in listed or table not in self.recipe.tables:
            raise I2IError(f"method {method!r} builds from [{table}], which it does not list in Method.parts"
                           f" ({', '.join(listed)}): add {table!r} there, so recipes are checked for it")
        return self._network(table, overrides)

    def generator(self, **overrides: Any) -> Generator:
        """A new generator from [generator]."""
        return self._network("generator", overrides)

    def discriminator(self, **overrides: Any) -> Discriminator:
        """A new discriminator from [discriminator]."""
        return self._network("discriminator", overrides)

    def loss(self, slot: str) -> tuple[Loss, float]:
        """The loss in [loss.<slot>] and its weight."""
        name, weight, options = self.recipe.loss(slot)
        loss = self.registry.create("loss", name, **options)
        key, copies = slot, 0
        while key in self.losses:
            copies += 1
            key = f"{slot}.{copies}"
        self.losses[key] = loss
        self.records[f"loss.{key}"] = BuiltPart(f"loss.{key}", f"loss.{slot}", "loss", name, dict(options), loss)
        return loss, weight

    def buffer(self) -> Buffer:
        """A new buffer from [buffer]."""
        return self._network("buffer", {})

    def augment(self) -> Augment:
        """A new augment from [augment] ("none", the identity, when the recipe has no such table)."""
        return self._network("augment", {})

    def options_of(self, part: Any) -> dict[str, Any]:
        """The resolved options a part built here was given."""
        return dict(self.built[id(part)][2])

    def stateful(self) -> dict[str, Any]:
        """The parts built here whose state checkpoints hold under their record key (a loss as "loss.<slot>", a
        part of a plugin's kind as its table's name), leaving out the kinds the method hands over itself and parts
        whose state_dict() is empty, so checkpoints of stateless parts stay as they were."""
        return {key: record.part for key, record in self.records.items()
                if not isinstance(record.part, SAVED_BY_METHOD) and _holds_state(record.part)}

    def channels(self, domain: str) -> int:
        """The channels of the data's images of `domain`."""
        return self.domain_channels[domain]

    def domains(self) -> tuple[str, ...]:
        """The data's domains in order."""
        return tuple(self.domain_channels)

    def _channels_text(self) -> str:
        counts = sorted(set(self.domain_channels.values()))
        if len(counts) == 1:
            return f"{counts[0]}-channel"
        return " and ".join(f"{c}-channel ({d})" for d, c in self.domain_channels.items())

    def check_channels(self) -> None:
        """An I2IError naming both when the recipe sets a network's channels to other than the data's."""
        if self.domains() != ("A", "B"):
            return  # an N-domain method sizes its networks itself (e.g. StarGAN's input takes the domain code)
        a, b = self.domain_channels["A"], self.domain_channels["B"]
        given = self.recipe.given
        expected = {("generator", "in_channels"): {a}, ("generator", "out_channels"): {b},
                    ("discriminator", "in_channels"): {a, b, a + b}}
        for (table, key), fits in expected.items():
            value = given.get(table, {}).get(key)
            if value is not None and value not in fits:
                want = " or ".join(map(str, sorted(fits)))
                raise I2IError(f"{table}.{key} = {value}, but the data has {self._channels_text()} images"
                               f" (data.channels = {a}, data.channels_b = {b}): set {table}.{key} = {want}, or"
                               f" remove it so it follows the data")


def _holds_state(part: Any) -> bool:
    """Whether a part saves and restores state, and has some."""
    return (callable(getattr(part, "load_state_dict", None)) and callable(getattr(part, "state_dict", None))
            and bool(part.state_dict()))


def setup_method(recipe: Recipe, registry: Registry, dataset: Dataset, initial_weights: bool
                 ) -> tuple[Method, PartBuilder]:
    """The [method], with the networks, losses and buffers it builds from the recipe."""
    name, options = recipe.part("method")
    method: Method = registry.create("method", name, **options)
    if method.paired_data and not getattr(dataset, "paired", False):
        raise I2IError(f"method {name!r} needs paired data, but dataset {recipe['data']['name']!r} is unpaired: use"
                       " data.name = \"aligned\" (A|B side-by-side images), or synthetic data with"
                       " data.paired = true")
    channels = dataset.domain_channels()
    builder = PartBuilder(recipe, registry, initial_weights, {domain: channels[domain] for domain in dataset.domains()})
    builder.value_map = dataset.value_map()
    builder.check_channels()
    method.build(builder)
    if builder.value_map is not None and any(d.condition is not None for d in method.directions().values()):
        # one file serves every target, so it cannot record one output range: translate would write wrong values
        raise I2IError(f"method {name!r} serves every target domain with one generator, which trains on 8-bit RGB"
                       f" data only for now; dataset {recipe['data']['name']!r} gives other values (data.channels /"
                       " data.values): use 8-bit RGB images, or a method with a generator per direction")
    check_input_sizes(recipe, method, builder)
    return method, builder


def check_input_sizes(recipe: Recipe, method: Method, builder: PartBuilder) -> None:
    """Refuse a data.crop_size that a network of the method does not declare it takes (`size_multiple`,
    `min_size`) in one line naming the key, the network and the smallest size that works, before training."""
    crop = recipe["data"].get("crop_size")
    if not isinstance(crop, int):
        return  # a dataset without crops: the sizes of its images are known only once they are read
    nets = [net for net in method.networks().values() if isinstance(net, (Generator, Discriminator))]
    misfit = next((net for net in nets if not takes_side(net, crop)), None)
    if misfit is None:
        return
    multiple, least = declared_sizes(misfit)
    fits = fitting_side(nets, crop)
    try:
        options = builder.options_of(misfit)
    except KeyError:  # built by the method itself, not from the recipe
        options = {}
    shown = [f"{key} = {toml_value(options[key])}" for key in misfit.size_options if key in options]
    part = f"{misfit.kind} {misfit.name}" + (f" ({', '.join(shown)})" if shown else "")
    multiples = f"multiples of {multiple}" if multiple > 1 else ""
    if crop < least:
        problem = f"is too small for {part}: it takes sides of at least {least}" + (
            f" that are {multiples}" if multiples else "")
    else:
        problem = f"does not fit {part}: it takes sides that are {multiples}" + (
            f" of at least {least}" if least > 1 else "")
    fix = f"--set data.crop_size={fits}"
    load = recipe["data"].get("load_size")
    if isinstance(load, int) and load < fits:
        fix += f" --set data.load_size={fits}"
    other = ", ".join(f"{misfit.kind}.{key}" for key in misfit.size_options if key in options)
    raise I2IError(f"data.crop_size = {crop} {problem}; use {fix}" + (f" (or change {other})" if other else ""))


def setup_networks(method: Method, recipe: Recipe, device: torch.device, distributed: Distributed
                   ) -> dict[str, nn.Module]:
    """The method's networks on the device, in the layout and compiled as [run] says, equal on every process."""
    run = recipe["run"]
    networks = method.networks()
    for net in networks.values():
        net.to(device)
        if run["channels_last"]:
            to_channels_last(net, device)
        if run["compile"]:
            net.compile()  # in place: the state-dict keys (and so the checkpoints) stay the same
    distributed.broadcast_networks(networks.values())
    return networks


def setup_optimizers(recipe: Recipe, registry: Registry, method: Method,
                     device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per parameter group of the method: [optim], with [optim.<group>] over it (built for a captured
    step under run.capture)."""
    groups = method.optimizer_groups()
    declared = type(method).groups
    if declared and sorted(declared) != sorted(groups):
        # the recipe was checked against the declaration, so a method must keep to it
        raise I2IError(f"method {recipe['method']['name']!r} declares optimizer groups {', '.join(declared)} (Method"
                       f".groups) but optimizer_groups() returns {', '.join(groups)}: make them the same")
    unknown = [g for g in recipe.optimizer_groups() if g not in groups]
    if unknown:
        raise I2IError(unknown_group_message(recipe["method"]["name"], unknown[0], list(groups)))
    optimizers = {}
    for group, params in groups.items():
        name, options = recipe.optimizer(group)
        part = registry.create("optimizer", name, **options)
        optimizers[group] = part.build_for_capture(params, device) if recipe["run"]["capture"] else part.build(params)
    return optimizers


def setup_callbacks(recipe: Recipe, registry: Registry) -> dict[str, Callback]:
    """The callbacks the recipe enables (those that run by default included), by name."""
    return {name: registry.create("callback", name, **options) for name, options in recipe.callbacks()}
