"""Setting up a run, in named steps: device, data, method and networks, optimizers, schedule, callbacks.

Each step checks what it builds, so everything fails before the run folder is touched. The order the trainer
calls them in is part of the result: the networks draw their initial weights from the seeded global RNG.
"""

from __future__ import annotations

import math
import random
import warnings
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
from i2i.contract.parts import Augment, Buffer, Dataset, Discriminator, Generator, Loss, Method
from i2i.recipe import Recipe
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
    workers = min(loader["workers"], usable_cpus())
    if workers < loader["workers"]:
        warnings.warn(f"data.workers = {loader['workers']} but this machine lets us use {workers} CPUs;"
                      f" loading with {workers} workers")
    sampler = EpochSampler(len(items), seed, rank=distributed.rank, world_size=distributed.world_size)
    # The loader gets a generator of its own so it never draws from the global RNG the parts use.
    data_loader = DataLoader(
        SeededItems(items), batch_size=loader["batch_size"], sampler=sampler, num_workers=workers,
        generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, drop_last=False)
    steps = math.ceil(math.ceil(len(items) / distributed.world_size) / loader["batch_size"])
    return Data(dataset, items, sampler, data_loader, loader["batch_size"] * distributed.world_size, steps)


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
        loss = self.registry.create("loss", name, **options)
        key, copies = slot, 0
        while key in self.losses:
            copies += 1
            key = f"{slot}.{copies}"
        self.losses[key] = loss
        return loss, weight

    def buffer(self) -> Buffer:
        """A new buffer from [buffer]."""
        name, options = self.recipe.part("buffer")
        return self.registry.create("buffer", name, **options)

    def augment(self) -> Augment:
        """A new augment from [augment] ("none", the identity, when the recipe has no such table)."""
        name, options = self.recipe.part("augment")
        return self.registry.create("augment", name, **options)

    def options_of(self, part: Any) -> dict[str, Any]:
        """The resolved options a network built here was given."""
        return dict(self.built[id(part)][2])

    def channels(self, domain: str) -> int:
        """The channels of the data's images of `domain`."""
        return self.domain_channels[domain]

    def _channels_text(self) -> str:
        a, b = self.domain_channels["A"], self.domain_channels["B"]
        return f"{a}-channel" if a == b else f"{a}-channel (A) and {b}-channel (B)"

    def check_channels(self) -> None:
        """An I2IError naming both when the recipe sets a network's channels to other than the data's."""
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


def setup_method(recipe: Recipe, registry: Registry, dataset: Dataset, initial_weights: bool
                 ) -> tuple[Method, PartBuilder]:
    """The [method], with the networks, losses and buffers it builds from the recipe."""
    name, options = recipe.part("method")
    method: Method = registry.create("method", name, **options)
    if method.paired_data and not getattr(dataset, "paired", False):
        raise I2IError(f"method {name!r} needs paired data, but dataset {recipe['data']['name']!r} is unpaired: use"
                       " data.name = \"aligned\" (A|B side-by-side images), or synthetic data with"
                       " data.paired = true")
    builder = PartBuilder(recipe, registry, initial_weights, dataset.domain_channels())
    builder.value_map = dataset.value_map()
    builder.check_channels()
    method.build(builder)
    return method, builder


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


def setup_optimizers(recipe: Recipe, registry: Registry, method: Method) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per parameter group of the method: [optim], with [optim.<group>] over it."""
    groups = method.optimizer_groups()
    unknown = [g for g in recipe.optimizer_groups() if g not in groups]
    if unknown:
        raise I2IError(f"[optim.{unknown[0]}]: method {recipe['method']['name']!r} has no optimizer group"
                       f" {unknown[0]!r} (groups: {', '.join(groups)})")
    optimizers = {}
    for group, params in groups.items():
        name, options = recipe.optimizer(group)
        optimizers[group] = registry.create("optimizer", name, **options).build(params)
    return optimizers


def setup_callbacks(recipe: Recipe, registry: Registry) -> dict[str, Callback]:
    """The callbacks the recipe enables (those that run by default included), by name."""
    return {name: registry.create("callback", name, **options) for name, options in recipe.callbacks()}
