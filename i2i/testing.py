"""Helpers for a plugin author's own tests: check a part against the contract the core relies on, train briefly.

    from i2i.testing import SMOKE_RECIPE, check_part, run_recipe

    def test_my_generator():
        check_part("generator", "mygen", channels=4)        # defaults, options, shapes, finiteness, gradients

    def test_my_generator_trains(tmp_path):
        run_recipe(SMOKE_RECIPE, "generator.name=mygen", out=tmp_path / "run")

Both look parts up in the installed registry (entry points), so install your package first, e.g.
``pip install -e .``. Failures raise AssertionError with a message saying what is wrong and how to fix it.
"""

from __future__ import annotations

import inspect
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import tomli_w
import torch
from torch import Tensor, nn

from i2i.storage.checkpoint import flatten_state, unflatten_state
from i2i.errors import I2IError
from i2i.contract.parts import (AdversarialLoss, Augment, Buffer, Dataset, Discriminator, Generator, Part,
                       ReconstructionLoss, ScheduleClock, fitting_side)
from i2i.contract.registry import Registry, default_registry
from i2i.storage.rundir import CHECKPOINTS_DIR, METRICS_FILE, RECIPE_FILE, RunFolder

__all__ = ["SMOKE_RECIPE", "check_part", "run_recipe"]

#: A tiny CycleGAN of stock parts on built-in synthetic data; a few steps take seconds on a CPU. Swap in your
#: part with an override such as "generator.name=mygen": the keys the stock part takes and yours does not
#: (e.g. `blocks`) are dropped.
SMOKE_RECIPE: dict[str, Any] = {
    "run": {"name": "smoke", "seed": 0, "device": "cpu"},
    "data": {"name": "synthetic", "count": 4, "load_size": 36, "crop_size": 32, "batch_size": 1, "workers": 0},
    "method": {"name": "cycle"},
    "generator": {"name": "resnet", "blocks": 1, "channels": 4},
    "discriminator": {"name": "patchgan", "layers": 2, "channels": 4},
    "loss": {"adversarial": {"name": "lsgan"}, "cycle": {"name": "l1", "weight": 10.0},
             "identity": {"name": "l1", "weight": 0.5}},
    "buffer": {"name": "image_pool", "size": 4},
    "train": {"epochs": 1, "decay_epochs": 0, "max_steps": 2, "log_every": 1},
    "callback": {"checkpoints": {"every": 0}, "samples": {"images": 1}},
}

_BATCH = 2


def check_part(kind: str, name: str, /, *, registry: Registry | None = None, size: int = 32,
               **options: Any) -> Part:
    """Check installed part `name` of `kind` against the core's contract and return it built with `options`.

    Every kind: the part is registered under that name by one package only, has a description, declares
    unique options whose defaults pass their own checks and equal the constructor's keyword defaults, and builds
    with its defaults (datasets excepted: they may need a data root) and with `options`. Then, on the part
    built with `options` (pass small widths; image sides are the smallest of at least `size` the part declares
    it takes: a multiple of `size_multiple`, at least `min_size`):

    - generator: output shape = input shape (with out_channels), finite; gradients reach the parameters;
      size_multiple and min_size are whole numbers, and a declared min_size is taken (one image of the
      smallest side declared, in training);
      batch_independent holds; options_from_state_dict, if it recognises the part's own weights, rebuilds it;
      encode(), if feature_channels() is implemented, gives finite maps of the declared channels for every
      layer, in the order asked, with gradients, and default_feature_layers() are among the layers; tile_norms(),
      if not None, lists every instance norm of the net (its own submodules), and normalizing them with the
      statistics tiling records gives the plain forward's output.
    - discriminator: finite scores with the batch dimension first; gradients; batch_independent holds; a
      declared min_size is taken, as for generators;
      features(), if implemented, is a list of finite maps.
    - adversarial loss: finite scalars for both targets and for generator_loss() with a gradient to the
      prediction; penalty(), if any.
    - reconstruction loss: 0 on identical images, >= 0 otherwise, with a gradient to the output.
    - buffer: answers have the query's shape; a copy restored from state_dict() answers the same.
    - augment: keeps the shape of RGB and 6-channel batches, finitely; gradients reach the images; pair() gives
      equal outputs for equal batches; a copy restored from state_dict() augments the same (after observe()).
    - dataset: the first training item holds "A" and "B" images (C, H, W) in [-1, 1].
    - optimizer: declares `lr`; the torch optimizer it builds moves a weight along a gradient, finitely, and its
      state survives a checkpoint (a fresh one restored from it takes the same next step).
    - schedule: finite factors >= 0 over a run of 3 epochs of 4 steps; its state survives a checkpoint.
    - callback: its state survives a checkpoint (tensors, numbers, strings, dicts and lists only).
    - method: the checks every kind gets; train it with `run_recipe`.
    - any other kind (one a plugin declares with i2i_kinds): the checks every kind gets; and when the part has
      state_dict() and load_state_dict(), a fresh copy restored from its state through a checkpoint gives back the
      same state_dict().
    """
    registry = registry or default_registry()
    try:
        info = registry.info(kind, name)
    except I2IError as exc:
        failures = "".join(f"; {failure}" for failure in registry.failures)
        raise AssertionError(f"{exc}. Is the package installed (pip install -e .) and does its pyproject.toml"
                             f" name the module in [project.entry-points.i2i]?{failures}") from None
    cls = info.cls
    label = f"{kind} {name!r} ({cls.__module__}.{cls.__qualname__}, package {info.package})"
    clashes = [c for c in registry.conflicts if c.startswith(f"{kind} {name!r} ")]
    _expect(not clashes, label, "; ".join(clashes) + ": pick another name")
    _expect(bool(cls.description()), label, "has no description: give the class a docstring whose first line"
            " says what it is (i2i list shows it)")
    _check_options(cls, label)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays as it was
        torch.manual_seed(0)
        try:
            if kind != "dataset":  # a dataset's defaults may lack the folder it reads (data.root)
                registry.create(kind, name)
            part = registry.create(kind, name, **options)
        except I2IError as exc:
            raise AssertionError(f"{label}: {exc}") from None
        checks = {"generator": _check_generator, "discriminator": _check_discriminator, "loss": _check_loss,
                  "buffer": _check_buffer, "augment": _check_augment, "dataset": _check_dataset,
                  "optimizer": _check_optimizer, "schedule": _check_schedule, "callback": _check_callback}
        if kind in checks:
            checks[kind](part, label, size, registry.resolve_options(kind, name, options))
        elif kind != "method":
            _check_state_round_trip(part, lambda: registry.create(kind, name, **options), label)
    return part


def run_recipe(recipe: str | Path | Mapping[str, Any], *overrides: str, out: str | Path, steps: int = 2,
               registry: Registry | None = None) -> Path:
    """Train `recipe` (a TOML file or a recipe table such as SMOKE_RECIPE) for `steps` steps into `out`.

    `overrides` are `--set` values ("generator.name=mygen"); they come after the step cap, so they may change
    it. Returns the run folder after checking that it holds the resolved recipe, metrics and a checkpoint.
    """
    from i2i.recipe import load_recipe
    from i2i.engine import train

    out = Path(out)
    registry = registry or default_registry()
    # A few steps, one report sample, no loader processes (starting them costs more than the steps): the point is
    # that the parts fit together, not what they learn.
    settings = [f"train.max_steps={steps}", f"train.log_every={steps}", "callback.samples.images=1", "data.workers=0",
                *overrides]
    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(recipe, Mapping):
            path = Path(scratch) / RECIPE_FILE
            path.write_bytes(tomli_w.dumps(dict(recipe)).encode())
        else:
            path = Path(recipe)
        try:
            run_dir = train(load_recipe(path, settings, registry), out, registry=registry)
        except I2IError as exc:
            where = "the recipe table" if isinstance(recipe, Mapping) else str(path)
            raise AssertionError(f"training {where} with {list(overrides)} failed: "
                                 f"{str(exc).replace(f'{path}: ', '')}") from None
    run = RunFolder(run_dir)
    for needed, found in ((RECIPE_FILE, run.recipe_file.is_file()), (METRICS_FILE, run.metrics_file.is_file()),
                          (f"{CHECKPOINTS_DIR}/step-*", bool(run.checkpoints()))):
        _expect(found, f"run {run_dir}", f"has no {needed} after training")
    return run_dir


# -- the checks ----------------------------------------------------------------------------------------------


def _expect(condition: bool, label: str, problem: str) -> None:
    if not condition:
        raise AssertionError(f"{label} {problem}")


def _check_options(cls: type[Part], label: str) -> None:
    """Declared options are unique, valid and exactly the constructor's keywords with the same defaults."""
    names = [o.name for o in cls.options]
    _expect(len(names) == len(set(names)), label, f"declares an option twice: {names}")
    for option in cls.options:
        try:
            option.check(option.default, f"option {option.name!r}'s default")
        except I2IError as exc:
            raise AssertionError(f"{label}: {exc}") from None
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in list(params.items())[1:]
             if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    for option in cls.options:
        param = named.get(option.name)
        if param is None:
            _expect(takes_any, label, f"declares option {option.name!r} but __init__ has no such keyword: the"
                    " core passes every declared option as a keyword argument")
        elif param.default is not inspect.Parameter.empty:
            _expect(param.default == option.default, label,
                    f"option {option.name!r}: declared default {option.default!r} differs from __init__'s"
                    f" {param.default!r}; make them equal so code and recipes build the same part")
    for pname, param in named.items():
        _expect(pname in names or param.default is not inspect.Parameter.empty, label,
                f"__init__ requires {pname!r}, which is not a declared option: declare it or give it a default")


def _finite(tensor: Any, label: str, what: str) -> Tensor:
    _expect(isinstance(tensor, Tensor), label, f"{what} is {type(tensor).__name__}, not a tensor")
    _expect(bool(torch.isfinite(tensor).all()), label, f"{what} has NaN or inf values")
    return tensor


def _check_gradients(net: nn.Module, output: Tensor, label: str) -> None:
    params = [p for p in net.parameters() if p.requires_grad]
    _expect(bool(params), label, "has no trainable parameters")
    net.zero_grad(set_to_none=True)
    output.float().mean().backward()
    reached = [p for p in params if p.grad is not None]
    _expect(bool(reached), label, "gets no gradient in any parameter: is the output detached?")
    for p in reached:
        _finite(p.grad, label, "a parameter's gradient")


def _check_batching(net: nn.Module, images: Tensor, output: Tensor, label: str) -> None:
    """A part that says batch_independent must give each sample the output it gets alone (methods batch calls)."""
    if not getattr(net, "batch_independent", True):
        return
    with torch.no_grad():
        alone = torch.cat([net(images[i:i + 1]) for i in range(images.shape[0])], 0)
    _expect(torch.allclose(alone, output.detach(), atol=1e-5, rtol=1e-4), label,
            "says batch_independent = True but a sample's output changes with the rest of the batch (batch norm?):"
            " set batch_independent = False")


def _network_input(net: nn.Module, resolved: dict[str, Any], size: int, batch: int = _BATCH) -> Tensor:
    side = fitting_side([net], size)  # a size the network declares it takes
    return torch.rand(batch, resolved.get("in_channels", 3), side, side) * 2 - 1


def _check_declared_sizes(net: nn.Module, label: str, resolved: dict[str, Any]) -> None:
    """The sizes a network declares are whole numbers, and one that declares a minimum side takes it: one image of
    the smallest side it declares, in training (what the engine lets through before training starts)."""
    for attribute in ("size_multiple", "min_size"):
        value = getattr(net, attribute, 1)
        _expect(isinstance(value, int) and value >= 1, label, f"declares {attribute} = {value!r}: a whole number of"
                " pixels, 1 or more")
    if net.min_size == 1:
        return
    images = _network_input(net, resolved, 1, batch=1)
    side = images.shape[-1]
    try:
        with torch.no_grad():
            output = net(images)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises for an input too small
        raise AssertionError(f"{label} declares it takes {side} px images (size_multiple = {net.size_multiple},"
                             f" min_size = {net.min_size}) but fails on one in training: {type(exc).__name__}:"
                             f" {str(exc).splitlines()[0] if str(exc) else ''}; raise min_size") from None
    _finite(output, label, f"output for a {side} px image (its declared minimum)")
    if isinstance(net, Generator):
        _expect(tuple(output.shape[-2:]) == (side, side), label, f"maps a {side} px image (its declared minimum) to"
                f" {tuple(output.shape[-2:])}: raise min_size or size_multiple")


def _train_deterministically(net: nn.Module) -> None:
    # Train mode (the norms behave as in training) with dropout off, so the batching check compares like with like.
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()


def _check_generator(net: Any, label: str, size: int, resolved: dict[str, Any]) -> None:
    _expect(isinstance(net, Generator) and isinstance(net, nn.Module), label, "is not a Generator nn.Module")
    _train_deterministically(net)
    _check_declared_sizes(net, label, resolved)
    images = _network_input(net, resolved, size)
    output = _finite(net(images), label, "output")
    expected = (_BATCH, resolved.get("out_channels", images.shape[1]), *images.shape[2:])
    _expect(tuple(output.shape) == expected, label,
            f"maps input {tuple(images.shape)} to {tuple(output.shape)}, expected {expected}: a generator keeps"
            " the image size (set size_multiple if sides must divide by something)")
    _check_batching(net, images, output, label)
    _check_gradients(net, output, label)
    if type(net).feature_channels is not Generator.feature_channels:
        _check_encoder_features(net, images, label)
    _check_tile_norms(net, images, label)
    found = type(net).options_from_state_dict(net.state_dict())
    if found is not None:
        # A part that recognises state dicts must at least recognise its own, rebuilding the same network.
        try:
            type(net)(**found).load_state_dict(net.state_dict())
        except (RuntimeError, TypeError) as exc:
            raise AssertionError(f"{label}: options_from_state_dict gave {found}, which does not load the"
                                 f" part's own weights: {exc}") from None


def _check_tile_norms(net: Generator, images: Tensor, label: str) -> None:
    """tile_norms() lists the net's own instance norms, all of them, and tiling's statistics reproduce them."""
    from i2i.tiles.norms import NormControl

    declared = net.tile_norms()
    if declared is None:
        return
    own = {id(m) for m in net.modules()}
    _expect(all(id(m) in own and isinstance(m, nn.InstanceNorm2d) for m in declared), label,
            "tile_norms() must list nn.InstanceNorm2d modules of the generator itself")
    listed = {id(m) for m in declared}
    missed = [name for name, m in net.named_modules() if isinstance(m, nn.modules.instancenorm._InstanceNorm)
              and id(m) not in listed and not m.track_running_stats]
    _expect(not missed, label, f"tile_norms() leaves out the instance norms {', '.join(missed)}: tiles would be"
                               " normalized on their own there")
    training = net.training
    net.eval()
    with torch.no_grad():
        plain = net(images[:1])
        control = NormControl(list(declared), recording=True)
        with control.active():
            recorded = net(images[:1])
    net.train(training)
    _expect(torch.allclose(plain, recorded, atol=1e-4), label,
            "normalizing tile_norms() with the statistics tiling records changes the output: are they all plain"
            " instance norms over height and width?")


def _check_encoder_features(net: Generator, images: Tensor, label: str) -> None:
    """feature_channels, default_feature_layers and encode agree (what contrastive methods such as cut rely on)."""
    channels = net.feature_channels()
    _expect(isinstance(channels, dict) and bool(channels), label, "feature_channels() must return a non-empty dict"
            " {layer: channels}")
    defaults = tuple(net.default_feature_layers())
    _expect(bool(defaults) and all(layer in channels for layer in defaults), label,
            f"default_feature_layers() gives {defaults}, which must be a non-empty choice of feature_channels()'s"
            f" layers {sorted(channels)}")
    layers = sorted(channels, reverse=True)  # deepest first: encode must follow the order it is asked in
    maps = net.encode(images, layers)
    _expect(isinstance(maps, list) and len(maps) == len(layers), label,
            f"encode(images, {layers}) must return a list of {len(layers)} maps")
    for layer, found in zip(layers, maps):
        _finite(found, label, f"encode's map of layer {layer}")
        _expect(found.dim() == 4 and tuple(found.shape[:2]) == (images.shape[0], channels[layer]), label,
                f"encode's map of layer {layer} has shape {tuple(found.shape)}, expected ({images.shape[0]},"
                f" {channels[layer]}, H, W) as feature_channels() declares")
    _check_gradients(net, maps[0], label)


def _check_discriminator(net: Any, label: str, size: int, resolved: dict[str, Any]) -> None:
    _expect(isinstance(net, Discriminator) and isinstance(net, nn.Module), label,
            "is not a Discriminator nn.Module")
    _train_deterministically(net)
    _check_declared_sizes(net, label, resolved)
    images = _network_input(net, resolved, size)
    output = _finite(net(images), label, "output")
    _expect(output.dim() >= 1 and output.shape[0] == _BATCH, label,
            f"returns shape {tuple(output.shape)} for a batch of {_BATCH}: scores need the batch dimension first")
    _check_batching(net, images, output, label)
    _check_gradients(net, output, label)
    if type(net).features is not Discriminator.features:
        features = net.features(images)
        _expect(isinstance(features, list) and bool(features), label, "features() must return a non-empty list")
        for feature in features:
            _finite(feature, label, "a feature map")
            _expect(feature.shape[0] == _BATCH, label, "returns a feature map without the batch dimension first")


def _check_loss(loss: Any, label: str, size: int, resolved: dict[str, Any]) -> None:
    _expect(isinstance(loss, (AdversarialLoss, ReconstructionLoss)), label,
            "must subclass AdversarialLoss or ReconstructionLoss")
    if isinstance(loss, AdversarialLoss):
        for target in (True, False):
            prediction = torch.randn(_BATCH, 1, 4, 4, requires_grad=True)
            value = _scalar(loss(prediction, target), label, f"loss(prediction, {target})")
            value.backward()
            _expect(prediction.grad is not None and bool(prediction.grad.abs().sum() > 0), label,
                    f"loss(prediction, {target}) gives the prediction no gradient")
        prediction = torch.randn(_BATCH, 1, 4, 4, requires_grad=True)
        value = _scalar(loss.generator_loss(prediction), label, "generator_loss(prediction)")
        value.backward()
        _expect(prediction.grad is not None and bool(prediction.grad.abs().sum() > 0), label,
                "generator_loss(prediction) gives the prediction no gradient")
        net = nn.Conv2d(3, 1, 3, padding=1)
        real, fake = torch.rand(_BATCH, 3, 8, 8) * 2 - 1, torch.rand(_BATCH, 3, 8, 8) * 2 - 1
        penalty = loss.penalty(net, real, fake)
        if penalty is not None:
            _scalar(penalty, label, "penalty(D, real, fake)").backward()
            _expect(net.weight.grad is not None, label, "penalty(D, real, fake) gives D no gradient")
        return
    output = torch.rand(_BATCH, 3, 8, 8, requires_grad=True)
    same = _scalar(loss(output, output.detach().clone()), label, "loss(x, x)").item()
    _expect(abs(same) < 1e-6, label, f"is {same} between identical images; it must be 0")
    value = _scalar(loss(output, torch.rand(_BATCH, 3, 8, 8)), label, "loss(output, target)")
    _expect(value.item() >= 0, label, f"is negative ({value.item()}) on different images")
    value.backward()
    _expect(output.grad is not None and bool(output.grad.abs().sum() > 0), label,
            "gives the output no gradient")


def _scalar(value: Any, label: str, what: str) -> Tensor:
    _finite(value, label, what)
    _expect(value.dim() == 0, label, f"{what} has shape {tuple(value.shape)}; a loss returns a scalar")
    return value


def _check_buffer(buffer: Any, label: str, size: int, resolved: dict[str, Any]) -> None:
    _expect(isinstance(buffer, Buffer), label, "is not a Buffer")
    for _ in range(3):
        images = torch.rand(_BATCH, 3, 8, 8)
        answer = _finite(buffer.query(images), label, "query()'s answer")
        _expect(answer.shape == images.shape, label,
                f"answers a query of {tuple(images.shape)} with {tuple(answer.shape)}; shapes must match")
    state = buffer.state_dict()
    _expect(isinstance(state, dict) and all(isinstance(v, Tensor) for v in state.values()), label,
            "state_dict() must map names to tensors")
    # A copy restored from the saved state must answer exactly as the original does: that is what resume needs.
    restored = type(buffer)(**resolved)
    restored.load_state_dict({k: v.clone() for k, v in state.items()})
    queries = [torch.rand(_BATCH, 3, 8, 8) for _ in range(3)]
    rng = torch.get_rng_state()
    original = [buffer.query(q) for q in queries]
    torch.set_rng_state(rng)
    copied = [restored.query(q) for q in queries]
    _expect(all(torch.equal(a, b) for a, b in zip(original, copied)), label,
            "answers differently after load_state_dict(state_dict()): save everything query() depends on, and"
            " draw random numbers from torch's global RNG")


def _check_augment(augment: Any, label: str, size: int, resolved: dict[str, Any]) -> None:
    _expect(isinstance(augment, Augment), label, "is not an Augment")
    for channels in (3, 6):  # an RGB image, and pix2pix's input|output pair
        images = (torch.rand(_BATCH, channels, size, size) * 2 - 1).requires_grad_(True)
        out = _finite(augment(images), label, f"its output on {channels}-channel images")
        _expect(out.shape == images.shape, label, f"turns a batch of {tuple(images.shape)} into {tuple(out.shape)}")
        out.sum().backward()
        _expect(images.grad is not None, label, "gives the images no gradient; G learns through the augment")
        same = images.detach()
        first, second = augment.pair(same, same.clone())
        _expect(torch.equal(first, second), label, "pair(x, x) gives two different batches: apply one draw to both")
    augment.observe(torch.randn(_BATCH, 1, 4, 4), 0.0)
    restored = type(augment)(**resolved)
    restored.load_state_dict(_through_a_checkpoint(augment.state_dict(), label))
    images, scores = torch.rand(_BATCH, 3, size, size) * 2 - 1, torch.randn(_BATCH, 1, 4, 4)
    rng = torch.get_rng_state()
    augment.observe(scores, 0.0)
    original = augment(images)
    torch.set_rng_state(rng)
    restored.observe(scores, 0.0)
    _expect(torch.equal(original, restored(images)), label, "augments differently after"
            " load_state_dict(state_dict()): save everything draw() depends on, and draw random numbers from"
            " torch's global RNG")


def _check_dataset(dataset: Any, label: str, size: int, resolved: dict[str, Any]) -> None:
    _expect(isinstance(dataset, Dataset), label, "is not a Dataset")
    items = dataset.load("train", augment=True)
    if len(items) == 0:
        return  # e.g. a folder dataset built with its default (empty) root: nothing more to look at
    item = items[0]
    for key in ("A", "B"):
        image = _finite(item.get(key) if isinstance(item, dict) else None, label, f"item[{key!r}]")
        _expect(image.dim() == 3 and float(image.min()) >= -1 and float(image.max()) <= 1, label,
                f"item[{key!r}] must be a (C, H, W) tensor in [-1, 1], got shape {tuple(image.shape)}")


def _through_a_checkpoint(state: Any, label: str) -> Any:
    """`state` as --resume gets it back: flattened to tensors and JSON, written as text, read and rebuilt."""
    import json

    try:
        tensors, tree = flatten_state("part", state)
        copies = {name: tensor.clone() for name, tensor in tensors.items()}  # a file shares no memory either
        return unflatten_state(json.loads(json.dumps(tree)), copies)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{label}: state_dict() cannot be saved in a checkpoint: {exc}") from None


def _check_optimizer(part: Any, label: str, size: int, options: dict[str, Any]) -> None:
    _expect("lr" in options, label, "declares no `lr` option, which the schedule multiplies")

    def one_step(optimizer: torch.optim.Optimizer, weight: nn.Parameter) -> None:
        optimizer.zero_grad()
        (weight * torch.arange(1.0, 5.0)).sum().backward()
        optimizer.step()

    weight = nn.Parameter(torch.ones(4))
    optimizer = part.build([weight])
    _expect(isinstance(optimizer, torch.optim.Optimizer), label, "build() must return a torch.optim.Optimizer")
    one_step(optimizer, weight)
    _finite(weight.detach(), label, "the weight after one step")
    if options["lr"] > 0:
        _expect(not torch.equal(weight.detach(), torch.ones(4)), label, "one step with a gradient left the weight"
                " unchanged")
    copy = nn.Parameter(weight.detach().clone())
    restored = part.build([copy])
    restored.load_state_dict(_through_a_checkpoint(optimizer.state_dict(), label))
    one_step(optimizer, weight)
    one_step(restored, copy)
    _expect(torch.equal(weight.detach(), copy.detach()), label, "an optimizer restored from its state_dict() takes"
            " another step than the original: save all of its state")


def _check_schedule(part: Any, label: str, size: int, options: dict[str, Any]) -> None:
    for step in range(12):
        clock = ScheduleClock(step=step, epoch=step // 4, steps_per_epoch=4, total_steps=12, epochs=2,
                              decay_epochs=1)
        factor = part.factor(clock)
        _expect(isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0, label,
                f"factor() at step {step} is {factor!r}: it must be a finite number >= 0")
    part.load_state_dict(_through_a_checkpoint(part.state_dict(), label))


def _check_state_round_trip(part: Any, build: Callable[[], Any], label: str) -> None:
    """A part with state: a fresh one (from `build`) restored from its state through a checkpoint has that state."""
    saves, loads = (callable(getattr(part, f, None)) for f in ("state_dict", "load_state_dict"))
    if not (saves or loads):
        return
    _expect(saves and loads, label, "has only one of state_dict() and load_state_dict(): checkpoints need both")
    import json

    state = part.state_dict()
    restored = build()
    try:
        restored.load_state_dict(_through_a_checkpoint(state, label))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise AssertionError(f"{label}: load_state_dict() fails on what state_dict() saved: {exc}") from None
    tensors, tree = flatten_state("part", state)
    again, tree_again = flatten_state("part", restored.state_dict())
    same = (json.dumps(tree, sort_keys=True) == json.dumps(tree_again, sort_keys=True)
            and tensors.keys() == again.keys()
            and all(t.dtype == again[k].dtype and torch.equal(t.cpu(), again[k].cpu()) for k, t in tensors.items()))
    _expect(same, label, "restored from its state_dict() through a checkpoint gives another state_dict(): restore"
            " in load_state_dict() everything state_dict() saves")


def _check_callback(part: Any, label: str, size: int, options: dict[str, Any]) -> None:
    part.load_state_dict(_through_a_checkpoint(part.state_dict(), label))
