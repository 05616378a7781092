"""Starting weights: a new run's networks from trained weights ([init.<network>] tables), and the layers that stay
frozen, for the whole run or its first steps.

A source (`from`) is one of
- a run folder: its checkpoint `checkpoint` (latest, best, step-N);
- a checkpoint folder (RUN/checkpoints/step-N, or best);
- a `.safetensors` network file (from `i2i convert`, `i2i download model`, or a checkpoint);
- a reference pytorch-CycleGAN-and-pix2pix `.pth`, read as `i2i convert` reads it (`torch.load(weights_only=True)`:
  a pickle that would run code is refused);
- `model:NAME`, a published generator that `i2i download model NAME` put in the cache.

In a checkpoint the network is picked by `direction` (a generator: by default the direction it translates in the new
run), by `network` (a file name, e.g. D_A) or else by its own name, in `weights` (auto: what translate uses).
Everything is read and checked while the run is set up, before the run folder is touched; what each network started
from (the file, its SHA-256, the step it was trained to, what loaded) is recorded in the run folder, and a resumed run
takes its weights from its own checkpoint without reading the source again.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from i2i.contract.options import closest, toml_value
from i2i.contract.parts import Generator, Method
from i2i.engine.checkpoints import RAW, weights_file
from i2i.errors import I2IError
from i2i.storage.cache import cache_dir
from i2i.storage.checkpoint import CHECKSUMS, STATE_FILE, STEP_DIR, read_part_metadata, read_tensors, read_training_json
from i2i.storage.digests import file_sha256
from i2i.storage.rundir import CHECKPOINTS_DIR, RunFolder
from i2i.storage.weights import drop_stale_instance_norm_stats, read_weights

__all__ = ["ALL_LAYERS", "Freezing", "MODEL_PREFIX", "Started", "start_networks"]

#: `from = "model:NAME"`: a generator `i2i download model NAME` fetched into the cache
MODEL_PREFIX = "model:"
#: `freeze = ["*"]`: every parameter of the network
ALL_LAYERS = "*"
_PICKLES = (".pth", ".pt", ".ckpt", ".pkl", ".bin")
#: how many tensor names a message or the console shows before "..."
_SHOWN = 4


@dataclass
class Source:
    """Where one network's starting weights are read from."""

    given: str  # the recipe's `from`
    kind: str  # "run", "checkpoint", "file", "reference" or "model"
    file: Path
    step: int | None  # the training step the weights were saved at (None: a file that does not say)
    weights: str  # "raw", or the variant read (e.g. "ema")
    network: str  # the source's network file stem ("" for a file of its own)
    #: the SHA-256 its checkpoint's training.json records (read_tensors verifies it); "" for a file of its own
    sha256: str = ""

    def describe(self) -> str:
        """One phrase for people, e.g. "runs/pre step 1200 (G_A, EMA weights)"."""
        where = f"{self.given} step {self.step}" if self.step is not None else self.given
        detail = [part for part in (self.network, f"{self.weights.upper()} weights" if self.weights != RAW else "")
                  if part]
        return where + (f" ({', '.join(detail)})" if detail else "")


@dataclass
class Freezing:
    """Which parameters do not train at which step: each frozen set with the step it ends at (None: never)."""

    sets: list[tuple[list[nn.Parameter], int | None]] = field(default_factory=list)

    def at(self, step: int) -> frozenset[int]:
        """The ids of the parameters frozen at (0-based) `step`."""
        return frozenset(id(p) for params, until in self.sets if until is None or step < until for p in params)


@dataclass
class Started:
    """What `start_networks` did: the record for the run folder, the freezing for the stepper, the lines to say."""

    record: dict[str, Any]
    freezing: Freezing
    notes: list[str]


def start_networks(recipe: Any, method: Method, options_of: Callable[[nn.Module], dict[str, Any]],
                   load: bool = True) -> Started:
    """Load each network's starting weights (unless not `load`: a resumed run's checkpoint replaces them) and set up
    its freezing, as the recipe's [init] tables say; I2IError naming the key for a source that is missing or does
    not fit (nothing is loaded into the networks then)."""
    networks = method.networks()
    directions = {id(net): direction for direction, net in method.generators().items()}
    for name in recipe.init_networks():
        if name not in networks:
            raise I2IError(_unknown_network(name, recipe["method"]["name"], networks, directions))
    # [init] keys without tables apply to every network; tables name the networks to start or freeze
    named = recipe.init_networks()
    base = recipe.init(None)
    chosen = list(networks) if base["from"] or base["freeze"] else named
    loads: list[tuple[str, nn.Module, dict[str, Tensor], Source, dict[str, Any]]] = []
    record: dict[str, Any] = {}
    freezing, notes = Freezing(), []
    for name in chosen:
        spec, net, where = recipe.init(name), networks[name], f"init.{name}" if name in named else "init"
        entry: dict[str, Any] = {}
        if spec["from"] and load:
            source = find_source(spec, name, net, directions.get(id(net)), where)
            state = read_source(source, net, where)
            check_options(source, net, _recipe_options(options_of, net), name, where, state)
            loaded = fit(net, state, spec["strict"], where, source)
            loads.append((name, net, state, source, loaded))
            entry.update(_source_record(source), strict=spec["strict"], **loaded["counts"])
            if not spec["strict"]:
                entry.update(skipped=loaded["skipped"], random=loaded["random"])
        if spec["freeze"]:
            params = frozen_parameters(net, spec["freeze"], where, name)
            until = spec["freeze_steps"] or None
            freezing.sets.append((list(params.values()), until))
            entry["frozen"] = {"prefixes": list(spec["freeze"]), "parameters": len(params),
                               "values": sum(p.numel() for p in params.values()), "until_step": until}
        if entry:
            record[name] = {"from": spec["from"], **entry}
    # everything was read and checked: only now does any network change
    for name, net, state, source, loaded in loads:
        with torch.no_grad():
            current = net.state_dict()
            for key in loaded["keys"]:
                current[key].copy_(state[key])
        notes.append(_load_note(name, source, loaded))
    for name, entry in record.items():
        if "frozen" in entry:
            frozen = entry["frozen"]
            span = f"for the first {frozen['until_step']} steps" if frozen["until_step"] else "for the whole run"
            notes.append(f"{name}: {frozen['parameters']} parameter tensors ({frozen['values']:,} values) frozen"
                         f" {span} ({', '.join(frozen['prefixes'])})")
    return Started({"networks": record} if record else {}, freezing, notes)


def _recipe_options(options_of: Callable[[nn.Module], dict[str, Any]], net: nn.Module) -> dict[str, Any]:
    """The options the recipe built `net` with ({} for a network the method made itself, e.g. CUT's heads)."""
    try:
        return options_of(net)
    except KeyError:
        return {}


def _unknown_network(name: str, method: str, networks: dict[str, nn.Module], directions: dict[int, str]) -> str:
    """The line for an [init.<name>] of a network the method does not have: its networks, and the closest."""
    listed = []
    for network, net in networks.items():
        kind = getattr(net, "kind", type(net).__name__)
        listed.append(f"{network} ({kind}{', ' + directions[id(net)] if id(net) in directions else ''})")
    close = closest(name, list(networks))
    hint = f"; did you mean [init.{close}]?" if close else ""
    return (f"[init.{name}]: method {method!r} has no network {name!r} (its networks: {', '.join(listed)}){hint}")


# -- finding and reading a source ------------------------------------------------------------------------------

def find_source(spec: dict[str, Any], name: str, net: nn.Module, direction: str | None, where: str) -> Source:
    """The file `spec` points at for network `name` (which translates in `direction` when it is a generator)."""
    given = spec["from"]
    if spec["direction"] and not isinstance(net, Generator):
        raise I2IError(f"{where}.direction picks a generator of the source by the way it translates, and {name} is"
                       f" {getattr(net, 'kind', 'no generator')}: pick the source's network with {where}.network")
    if given.startswith(MODEL_PREFIX):
        _check_one_network(spec, where, "a published model")
        return Source(given, "model", _model_file(given, where), None, RAW, "")
    path = Path(given).expanduser()
    if not path.exists():
        raise I2IError(f"{where}.from = {toml_value(given)} does not exist: give a run folder, a checkpoint folder,"
                       f" a .safetensors or reference .pth file, or {MODEL_PREFIX}NAME")
    if path.is_file():
        _check_one_network(spec, where, "a file")
        kind = "reference" if path.suffix.lower() in _PICKLES else "file"
        return Source(given, kind, path, None, RAW, "")
    if RunFolder.is_run(path):
        kind, folder = "run", _run_checkpoint(path, spec["checkpoint"], where)
    elif (path / STATE_FILE).is_file() or STEP_DIR.match(path.name):
        kind, folder = "checkpoint", path
    else:
        raise I2IError(f"{where}.from = {toml_value(given)} is a folder but neither a run (no {CHECKPOINTS_DIR}/ in"
                       f" it) nor a checkpoint (no {STATE_FILE} in it)")
    picked = spec["direction"] or (direction if not spec["network"] and isinstance(net, Generator) else "")
    try:
        file = weights_file(folder, direction=picked, network="" if picked else spec["network"] or name,
                            weights=spec["weights"])
    except I2IError as exc:
        raise I2IError(f"{where}.from: {exc}") from None
    stem = file.name.removesuffix(".safetensors")
    network, _, variant = stem.partition(".")
    state = read_training_json(folder)
    step, sums = state.get("step"), state.get(CHECKSUMS)
    recorded = sums.get(file.name, "") if isinstance(sums, dict) else ""
    return Source(given, kind, file, step if isinstance(step, int) else None, variant or RAW, network, recorded)


#: the keys that pick a network inside a run or checkpoint, and their defaults
_PICKING = {"checkpoint": "latest", "weights": "auto", "direction": "", "network": ""}


def _check_one_network(spec: dict[str, Any], where: str, what: str) -> None:
    """Refuse keys that pick among a run's checkpoints and networks for a source that holds one network's weights
    (they would be ignored)."""
    for key, default in _PICKING.items():
        if spec[key] != default:
            raise I2IError(f"{where}.{key} = {toml_value(spec[key])} picks among the checkpoints and networks of a"
                           f" run, and {where}.from = {toml_value(spec['from'])} is {what} holding one network's"
                           f" weights: remove {where}.{key}")


def _run_checkpoint(run: Path, which: str, where: str) -> Path:
    """The checkpoint folder of run `run` that `which` names."""
    try:
        return RunFolder(run).checkpoint(which)
    except I2IError as exc:
        raise I2IError(f"{where}: {exc} ({where}.checkpoint = {toml_value(which)})") from None


def _model_file(given: str, where: str) -> Path:
    """The file a published model `model:NAME` (or model:FAMILY/NAME) was downloaded to."""
    name = given[len(MODEL_PREFIX):].strip("/")
    root = cache_dir("models")
    found = [root / f"{name}.safetensors"] if "/" in name else sorted(root.glob(f"*/{name}.safetensors"))
    found = [file for file in found if file.is_file()]
    if not found:
        raise I2IError(f"{where}.from = {toml_value(given)}: the model is not downloaded (looked in {root}): run"
                       f" `i2i download model {name}` first")
    if len(found) > 1:
        names = ", ".join(f"{MODEL_PREFIX}{file.parent.name}/{name}" for file in found)
        raise I2IError(f"{where}.from = {toml_value(given)} names several downloaded models: use one of {names}")
    return found[0]


def read_source(source: Source, net: nn.Module, where: str) -> dict[str, Tensor]:
    """The tensors of a source, checked: a checkpoint's file against the SHA-256 its training.json records; a
    reference .pth through the safe reader, without the stale norm statistics of old PyTorch versions."""
    try:
        if source.kind == "reference":
            return drop_stale_instance_norm_stats(read_weights(source.file), net)
        if source.file.suffix.lower() != ".safetensors":
            raise I2IError(f"{source.file}: it is neither a .safetensors file nor a PyTorch .pth checkpoint")
        return read_tensors(source.file)
    except I2IError as exc:
        raise I2IError(f"{where}.from: {exc}") from None


def _source_part(source: Source, net: nn.Module, state: dict[str, Tensor]) -> tuple[str, str, dict[str, Any]]:
    """The kind, part name and options the source's network was built with: its file's metadata, or for a
    reference .pth what the network's part reads from the key layout ("", "" and {} when unknown)."""
    if source.kind == "reference":
        options = type(net).options_from_state_dict(state) if hasattr(net, "options_from_state_dict") else None
        return getattr(net, "kind", ""), getattr(net, "name", ""), options or {}
    meta = read_part_metadata(source.file)
    return (meta.kind, meta.name, meta.options) if meta is not None else ("", "", {})


def check_options(source: Source, net: nn.Module, mine: dict[str, Any], name: str, where: str,
                  state: dict[str, Tensor]) -> None:
    """Refuse a source whose channels or widths differ from the network's (`mine`: its options), naming the key to
    change; a part of another kind or name is refused too (it cannot hold the same tensors)."""
    their_kind, part, theirs = _source_part(source, net, state)
    kind = getattr(net, "kind", "")
    if not part:
        return
    if their_kind != kind:
        raise I2IError(f"{where}.from: {source.describe()} holds a {their_kind}, and {name} is a {kind}: pick a"
                       f" {kind} of the source ({where}.network)")
    if part != getattr(net, "name", part):
        raise I2IError(f"{where}.from: {source.describe()} is a {kind} {part!r}, and this run's {name} is"
                       f" {getattr(net, 'name', '')!r}: set {kind}.name = {toml_value(part)} (with its options)")
    for key in sorted(set(mine) & set(theirs)):
        if not _is_width(key) or mine[key] == theirs[key]:
            continue
        if key in ("in_channels", "out_channels"):
            side = "takes" if key == "in_channels" else "makes"
            fix = ("its images must have as many channels: set data.channels / data.channels_b to match (or start"
                   " from another source)")
            raise I2IError(f"{where}.from: {source.describe()} {side} {theirs[key]}-channel images, and this run's"
                           f" {name} {side} {mine[key]}-channel ones ({kind}.{key}): {fix}")
        raise I2IError(f"{where}.from: {source.describe()} has {kind}.{key} = {toml_value(theirs[key])}, and this"
                       f" recipe {toml_value(mine[key])}: use --set {kind}.{key}={toml_value(theirs[key])} (channels"
                       " and widths must match the source)")


def _is_width(option: str) -> bool:
    """Whether an option sets channels or widths (what no non-strict load can bridge)."""
    return "channels" in option or "width" in option


# -- fitting the tensors -----------------------------------------------------------------------------------------

def fit(net: nn.Module, state: dict[str, Tensor], strict: bool, where: str, source: Source) -> dict[str, Any]:
    """Which of `state`'s tensors load into `net`: all of them (strict, else I2IError naming the tensors and their
    shapes), or those that match in name and shape, with what was skipped and what stays random."""
    mine = net.state_dict()
    shapes = {key: tuple(value.shape) for key, value in mine.items()}
    matching = [key for key in mine if key in state and tuple(state[key].shape) == shapes[key]]
    differ = [key for key in mine if key in state and tuple(state[key].shape) != shapes[key]]
    missing = [key for key in mine if key not in state]
    extra = [key for key in state if key not in mine]
    if strict and (differ or missing or extra):
        problems = [f"{key} is {shapes[key]} here but {tuple(state[key].shape)} in the source" for key in differ]
        problems += [f"{key} is not in the source" for key in missing]
        problems += [f"{key} of the source is not in this network" for key in extra]
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise I2IError(f"{where}.from: {source.describe()} does not fit: {'; '.join(problems[:_SHOWN])}{more}; give"
                       f" the source's options to this network, or set {where}.strict = false to load the tensors"
                       " that match")
    if not matching:
        raise I2IError(f"{where}.from: no tensor of {source.describe()} matches this network in name and shape"
                       f" (first of the source: {next(iter(state), 'none')}; of this network:"
                       f" {next(iter(mine), 'none')}): it is another kind of network")
    skipped = [f"{key}: {tuple(state[key].shape)} in the source, {shapes[key]} here" for key in differ]
    skipped += [f"{key}: not in this network" for key in extra]
    return {"keys": matching, "skipped": skipped, "random": missing,
            "counts": {"loaded": len(matching), "tensors": len(mine)}}


def _load_note(name: str, source: Source, loaded: dict[str, Any]) -> str:
    """What was loaded into `name`, in one line."""
    counts = loaded["counts"]
    line = f"{name}: starting weights from {source.describe()}"
    if loaded["skipped"] or loaded["random"]:
        line += (f": {counts['loaded']} of {counts['tensors']} tensors loaded, {len(loaded['skipped'])} of the"
                 f" source's skipped, {len(loaded['random'])} left random")
        shown = loaded["random"][:_SHOWN]
        if shown:
            line += f" ({', '.join(shown)}{', ...' if len(loaded['random']) > _SHOWN else ''})"
    return line


def _source_record(source: Source) -> dict[str, Any]:
    """What the run folder records of a source: the file read, its SHA-256, the step it came from."""
    return {"source": source.kind, "file": str(source.file.resolve()),
            "sha256": source.sha256 or file_sha256(source.file),
            "step": source.step, "weights": source.weights, "network": source.network}


# -- freezing ------------------------------------------------------------------------------------------------------

def frozen_parameters(net: nn.Module, prefixes: list[str], where: str, name: str) -> dict[str, nn.Parameter]:
    """The parameters of `net` whose names start with one of the module-name `prefixes` ("*": all); I2IError
    naming a prefix that matches none, with the network's top-level layers."""
    params = dict(net.named_parameters())
    chosen: dict[str, nn.Parameter] = {}
    for prefix in prefixes:
        found = {key: p for key, p in params.items()
                 if prefix == ALL_LAYERS or key == prefix or key.startswith(prefix.rstrip(".") + ".")
                 or fnmatch.fnmatchcase(key, prefix)}
        if not found:
            layers = list(dict.fromkeys(key.rsplit(".", 1)[0] for key in params))
            close = closest(prefix, layers)
            hint = f"did you mean {close!r}? " if close else ""
            shown = ", ".join(layers[:8]) + (", ..." if len(layers) > 8 else "")
            raise I2IError(f"{where}.freeze: no parameter of {name} is in layer {prefix!r}: {hint}(its layers:"
                           f" {shown}; \"{ALL_LAYERS}\" freezes all of it)")
        chosen.update(found)
    return chosen

