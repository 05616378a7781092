"""The one owner of a run's checkpoints: what each one holds, gathered from the parts that hold it; writing,
restoring, pruning and copying to best; and which weights readers use by default.

A checkpoint (RUN/checkpoints/step-NNNNNNNN, written atomically by the file format in i2i.storage.checkpoint) holds:

- each network of the method as ``<network>.safetensors``, with the part metadata that rebuilds it alone;
- the variants callbacks write (``Callback.checkpoint_variants``, e.g. an EMA average) as
  ``<network>.<variant>.safetensors`` with the network's metadata, listed in training.json under "variants"
  ({variant: {network: file stem}}), and under "weights_variant" the variant the enabled callbacks declared for
  inference (``Callback.weights_variant``; "" for the trained weights);
- the state of every stateful piece under its dotted name (training.json "state", tensors in training.safetensors);
- which distribution (and version) provided each part of the run (training.json "providers"; each network file's
  metadata too), so that a reader lacking a plugin names the package to install.

No piece is listed here. Each source of pieces declares its own through ``stateful()`` — the trainer its loop, log
and schedule; the stepper its optimizers and gradient scaler; the method its buffers and augments (and whatever
else it keeps); the part builder every other part it built that holds state — and each callback is a piece of
its own (``callback.<name>``). This owner adds the random streams (``rng``) and gathers the rest.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from i2i.contract.callbacks import Callback, TrainingContext
from i2i.contract.domains import TWO_DOMAINS, direction_name, route
from i2i.contract.parts import Method
from i2i.contract.registry import PartInfo, Registry, default_registry
from i2i.engine.placement import tensors_to
from i2i.engine.state import LoopState
from i2i.errors import I2IError
from i2i.storage.checkpoint import (STATE_FILE, STEP_DIR, TRAINING_STEM, RandomState, copy_checkpoint, first_mismatch, flatten_state,
                                    network_file, part_metadata, prune_checkpoints, read_part_metadata, read_tensors,
                                    read_training_json,
                                    read_training_tensors, save_checkpoint, unflatten_state, variant_stem)
from i2i.storage.rundir import CHECKPOINTS_DIR, RunFolder

if TYPE_CHECKING:
    from i2i.engine.setup import PartBuilder
    from i2i.recipe import Recipe

#: training.json: the variants written, {variant: {network: file stem}}
VARIANTS = "variants"
#: training.json: the variant the enabled callbacks declared for inference ("" for the trained weights)
WEIGHTS_VARIANT = "weights_variant"
#: training.json: the distribution that provided each part, {kind: {name: {"package": ..., "version": ...}}}
PROVIDERS = "providers"
#: training.json key of a method with a conditioned network: its domains and each direction's network and code
DIRECTIONS = "directions"
#: a variant's name becomes part of file names
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
#: pieces whose state the parts compute with on the training device (an image pool's images); the rest load as saved
_ON_DEVICE = ("buffer.",)


class Stateful(Protocol):
    """A piece of training state: what a checkpoint saves and --resume gives back."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors, JSON values, and dicts, lists and tuples of them."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


class PieceSource(Protocol):
    """Something of the run that holds stateful pieces and declares them, by their dotted checkpoint names."""

    def stateful(self) -> dict[str, Stateful]:
        """The pieces it holds, e.g. {"optim.G": ..., "optim.D": ...}."""


def declared_weights_variant(callbacks: Mapping[str, Callback]) -> str:
    """The variant the enabled callbacks declare for inference ("" when none does); I2IError when two disagree."""
    declared = {name: callback.weights_variant for name, callback in callbacks.items()
                if getattr(callback, "weights_variant", "")}
    if len(set(declared.values())) > 1:
        (first, a), (second, b) = list(declared.items())[:2]
        raise I2IError(f"callbacks {first!r} and {second!r} both declare the weights inference uses (variants {a!r}"
                       f" and {b!r}): enable one of them (e.g. callback.{second}.enabled = false)")
    return next(iter(declared.values()), "")


class Checkpoints:
    """A run's checkpoints: writes and restores the whole training state, and is what callbacks reach as
    ``context.checkpoints`` (i2i.contract.callbacks.RunCheckpoints: newest, best, step_of, read_variant, prune,
    copy_to_best)."""

    def __init__(self, folder: RunFolder, recipe: Recipe, method: Method, builder: PartBuilder,
                 device: torch.device, *, loop: LoopState, sources: Sequence[PieceSource],
                 callbacks: Mapping[str, Callback], processes: int = 1,
                 final_step: Callable[[], int] = lambda: 0) -> None:
        self.folder, self.recipe, self.method, self.builder, self.device = folder, recipe, method, builder, device
        self.loop, self.sources, self.callbacks, self.processes = loop, tuple(sources), callbacks, processes
        self.final_step = final_step
        self.random = RandomState()
        #: checked now, so two callbacks claiming inference fail before anything is written
        self.weights_variant = declared_weights_variant(callbacks)

    # -- what callbacks see (RunCheckpoints) ----------------------------------------------------------------------
    def newest(self) -> Path | None:
        """The newest complete step checkpoint, or None."""
        return self.folder.newest_checkpoint()

    def best(self) -> Path | None:
        """The best checkpoint (what copy_to_best made) when it is complete, or None."""
        return self.folder.best_checkpoint()

    def step_of(self, checkpoint: Path) -> int | None:
        """The training step a checkpoint folder holds (its training.json, verified); None when it records none."""
        step = read_training_json(checkpoint).get("step")
        return step if isinstance(step, int) else None

    def read_variant(self, checkpoint: Path, variant: str) -> dict[str, dict[str, Tensor]]:
        """The tensors of each network's `variant` file in a checkpoint folder, {network: {key: tensor}} on the CPU,
        checksums verified; {} when the checkpoint holds no such variant."""
        listed = read_training_json(checkpoint).get(VARIANTS)
        listed = listed.get(variant) if isinstance(listed, dict) else None
        if not isinstance(listed, dict):
            return {}
        return {network: read_tensors(network_file(checkpoint, stem)) for network, stem in listed.items()}

    def prune(self, keep: int) -> list[Path]:
        """Delete all but the `keep` newest step checkpoints (0 keeps all), never the current step's nor the final
        step's; returns the deleted folders."""
        return prune_checkpoints(self.folder.checkpoints_dir, keep, protect={self.loop.step, self.final_step()})

    def copy_to_best(self, checkpoint: Path) -> Path:
        """Make checkpoints/best an atomic copy of `checkpoint`; returns checkpoints/best."""
        return copy_checkpoint(checkpoint, self.folder.best_dir)

    # -- the trainer's side ---------------------------------------------------------------------------------------
    def pieces(self) -> dict[str, Stateful]:
        """Every piece of training state by its dotted name, as the sources declare them now."""
        declared = [source.stateful() for source in self.sources]
        declared.append({"rng": self.random})
        declared.append({f"callback.{name}": callback for name, callback in self.callbacks.items()})
        found: dict[str, Stateful] = {}
        for pieces in declared:
            for name, piece in pieces.items():
                if name in found and found[name] is not piece:
                    raise I2IError(f"two pieces of training state are named {name!r} ({type(found[name]).__name__}"
                                   f" and {type(piece).__name__}): a checkpoint could restore only one")
                found[name] = piece
        return found

    def save(self, context: TrainingContext) -> Path:
        """Write the networks, the callbacks' variants and every piece's state as checkpoints/step-NNNNNNNN (on
        the main process); returns the folder."""
        tensors, trees = {}, {}
        for name, piece in self.pieces().items():
            flat, trees[name] = flatten_state(name, piece.state_dict())
            tensors.update(flat)
        files: dict[str, nn.Module | dict[str, Tensor]] = dict(self.method.networks())
        metadata = self._metadata()
        listed: dict[str, dict[str, str]] = {}
        for variant, networks in self._variants(context).items():
            for network, weights in networks.items():
                stem = variant_stem(network, variant)
                files[stem] = weights
                if network in metadata:
                    metadata[stem] = metadata[network]
                listed.setdefault(variant, {})[network] = stem
        loop = self.loop
        state = {"step": loop.step, "epoch": loop.epoch, "position": loop.position, "processes": self.processes,
                 "recipe": self.recipe.tables, "generators": self.generator_files(), VARIANTS: listed,
                 WEIGHTS_VARIANT: self.weights_variant, PROVIDERS: self._providers(), "state": trees}
        directions = self.method.directions()
        if self.method.domains() != TWO_DOMAINS or any(d.condition is not None for d in directions.values()):
            # a conditioned network serves several directions: readers need its domains and each direction's code
            state[DIRECTIONS] = {"domains": list(self.method.domains()),
                                 "directions": {name: asdict(d) for name, d in directions.items()}}
        return save_checkpoint(self.folder.checkpoints_dir, loop.step, files, metadata, tensors, state)

    def _variants(self, context: TrainingContext) -> dict[str, dict[str, dict[str, Tensor]]]:
        """What the callbacks write beside the networks, {variant: {network: tensors}}, checked."""
        networks = self.method.networks()
        found: dict[str, dict[str, dict[str, Tensor]]] = {}
        for name, callback in self.callbacks.items():
            given = [callback.checkpoint_variants(context)]
            legacy = getattr(callback, "checkpoint_networks", None)  # callbacks written before checkpoint_variants
            if callable(legacy):
                given.append(legacy(context))
            for variants in given:
                for variant, weights in (variants or {}).items():
                    if not isinstance(variant, str) or not _VARIANT_NAME.match(variant):
                        raise I2IError(f"callback {name!r} wrote a weights variant named {variant!r}: a variant name"
                                       " is letters, digits, _ and - (it becomes part of file names)")
                    for network, value in weights.items():
                        if network not in networks:
                            raise I2IError(f"callback {name!r} gave a {variant!r} variant of network {network!r},"
                                           f" which the method does not have ({', '.join(networks)})")
                        if network in found.get(variant, {}):
                            raise I2IError(f"two callbacks write the {variant!r} variant of {network}, callback"
                                           f" {name!r} among them: give one of them another variant name")
                        values = value.state_dict() if isinstance(value, nn.Module) else value
                        if not (isinstance(values, dict) and all(isinstance(t, Tensor) for t in values.values())):
                            raise I2IError(f"callback {name!r} gave the {variant!r} variant of {network} as"
                                           f" {type(value).__name__}: give {{key: tensor}} (or an nn.Module)")
                        found.setdefault(variant, {})[network] = values
        return found

    def load(self, folder: Path) -> None:
        """Restore the networks and every piece from a checkpoint folder (all read and checked before any is set)."""
        networks, pieces = self.method.networks(), self.pieces()
        weights = {name: read_tensors(network_file(folder, name)) for name in networks}
        for name, net in networks.items():
            mismatch = first_mismatch(net.state_dict(), weights[name])
            if mismatch:
                raise ModelMismatch(f"{name}: {mismatch}", folder, self._recipe_differences(folder))
        saved = read_training_json(folder)
        if "state" not in saved:
            raise I2IError(f"{folder} was written by an earlier i2i, whose training state this one cannot continue"
                           " (its generators still translate, evaluate and export)")
        tensors = read_training_tensors(folder)
        try:
            states = {}
            for name in pieces:
                if name in saved["state"]:
                    states[name] = unflatten_state(saved["state"][name], tensors)
                elif name.startswith("callback."):
                    warnings.warn(f"{folder.name} holds no state of {name.replace('.', ' ', 1)}: it starts afresh")
                else:
                    raise KeyError(name)
            for name, net in networks.items():
                net.load_state_dict(weights[name])
            for name, state in states.items():
                pieces[name].load_state_dict(tensors_to(state, self.device) if name.startswith(_ON_DEVICE) else state)
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
            raise I2IError(f"{folder} is incomplete or from another version: {type(exc).__name__}: {exc}") from None

    def restore_newest(self) -> Path | None:
        """Load the newest checkpoint that loads; a broken newer one is named in a warning and skipped."""
        found = self.folder.checkpoints()
        if not found:
            warnings.warn(f"--resume: no complete checkpoint in {self.folder.checkpoints_dir}; starting from"
                          " step 0")
            return None
        mismatches: list[tuple[Path, ModelMismatch]] = []  # the recipe's, not the file's: said once, below
        for folder in reversed(found):
            try:
                self.load(folder)
            except ModelMismatch as exc:
                mismatches.append((folder, exc))
                continue
            except I2IError as exc:
                warnings.warn(f"cannot resume from {folder.name}: {exc}; trying the previous checkpoint")
                continue
            for skipped, exc in mismatches:
                warnings.warn(f"cannot resume from {skipped.name}: {exc}")
            return folder
        if mismatches:
            raise mismatches[0][1]
        raise I2IError(f"--resume: none of the {len(found)} checkpoints in {self.folder.checkpoints_dir} could be"
                       " loaded (see the warnings above)")

    def _recipe_differences(self, folder: Path) -> list[str]:
        """The model-defining recipe keys that differ between this run and the checkpoint's."""
        try:
            saved = read_training_json(folder)["recipe"]
        except (I2IError, KeyError):
            return []
        out = []
        for table in ("method", "generator", "discriminator"):
            mine, theirs = self.recipe.tables.get(table, {}), saved.get(table, {})
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    out.append(f"[{table}] {key} = {mine.get(key)!r} here, {theirs.get(key)!r} in the checkpoint")
        return out

    def _metadata(self) -> dict[str, dict[str, str]]:
        """Each network file's part metadata (and, for a generator of data other than 8-bit RGB, its value map)."""
        meta, directions = {}, self.method.directions()
        conditioned = {d.network for d in directions.values() if d.condition is not None}
        values = self.builder.value_map
        # each generator's value map with its source domain as "A" and its target as "B"
        oriented = {d.network: values.oriented(d.source, d.target) for d in directions.values()
                    if d.source is not None} if values is not None else {}
        for name, net in self.method.networks().items():
            if id(net) in self.builder.built:  # a network the method made itself (e.g. CUT's heads) has no part name
                kind, part, options = self.builder.built[id(net)]
                # a generator file says how its inputs' and outputs' raw values map to [-1, 1], so translate writes
                # results in the data's own range from the file alone (its "A" is the input side)
                value_map = oriented.get(name)
                meta[name] = part_metadata(kind, part, options,
                                           values=value_map.to_json() if value_map is not None else None,
                                           domains=list(self.method.domains()) if name in conditioned else None,
                                           **provider(self.builder.registry.info(kind, part)))
        return meta

    def _providers(self) -> dict[str, dict[str, dict[str, str]]]:
        """The distribution that provided each part of the recipe, {kind: {name: {"package", "version"}}}; parts a
        script registered (no distribution) are left out."""
        registry = self.builder.registry
        found: dict[str, dict[str, dict[str, str]]] = {}
        for kind, name in recipe_parts(self.recipe, registry):
            record = provider(registry.info(kind, name))
            if record:
                found.setdefault(kind, {})[name] = record
        return found

    def generator_files(self) -> dict[str, str]:
        """Which network file translates in each direction, e.g. {"AtoB": "G_A", "BtoA": "G_B"}."""
        return {name: direction.network for name, direction in self.method.directions().items()}


def provider(part: PartInfo) -> dict[str, str]:
    """{"package", "version"} of the installed distribution that provided `part`; {} for a part a script registered."""
    return {"package": part.package, "version": part.version} if part.version else {}


def recipe_parts(recipe: Recipe, registry: Registry) -> list[tuple[str, str]]:
    """(kind, name) of every part a resolved recipe names: method, dataset, components, losses, optimizers,
    schedule and enabled callbacks."""
    from i2i.recipe import OPTIMIZER_KEY

    tables, kinds = recipe.tables, registry.kinds()
    found = [(table, value["name"]) for table, value in tables.items()
             if table in kinds and isinstance(value, dict) and isinstance(value.get("name"), str)]
    found.append(("dataset", recipe.dataset()[0]))
    found += [("loss", slot["name"]) for slot in tables.get("loss", {}).values()]
    found += [("optimizer", name) for name in
              [tables["optim"].get(OPTIMIZER_KEY), *(recipe.optimizer(g)[0] for g in recipe.optimizer_groups())]
              if isinstance(name, str)]
    found += [("callback", name) for name, _ in recipe.callbacks()]
    return list(dict.fromkeys(found))


def check_recorded_parts(run_dir: Path, registry: Registry | None = None) -> None:
    """When the newest checkpoint of the run in `run_dir` records a part that is not installed here, the error
    naming the package it came from and how to install it (nothing when there is no such run or record)."""
    newest = RunFolder(run_dir).newest_checkpoint() if RunFolder.is_run(run_dir) else None
    try:
        recorded = read_training_json(newest).get(PROVIDERS) if newest is not None else None
    except I2IError:  # a damaged checkpoint: the caller's own error says more than this one would
        return
    if not isinstance(recorded, dict):
        return
    registry = registry or default_registry()
    for kind, parts in recorded.items():
        for name, record in (parts if isinstance(parts, dict) else {}).items():
            if isinstance(record, dict) and isinstance(record.get("package"), str):
                try:
                    registry.require(kind, name, record["package"], str(record.get("version", "")))
                except I2IError as exc:
                    raise I2IError(f"cannot resume {run_dir} ({newest.name}): {exc}") from None


class ModelMismatch(I2IError):
    """A checkpoint whose networks do not fit the recipe's."""

    def __init__(self, mismatch: str, folder: Path, differences: list[str]) -> None:
        hint = f" (the recipe differs: {'; '.join(differences)})" if differences else ""
        super().__init__(f"the recipe's model differs from checkpoint {folder}: {mismatch}{hint}")


# -- the readers' side: which weights translate, evaluate, export and demo use ---------------------------------------

def default_variant(state: dict[str, Any], registry: Registry | None = None) -> str:
    """The variant of network weights readers use by default for a checkpoint's training.json ("" for the trained
    weights): the one its callbacks declared ("weights_variant"), or, for a checkpoint written before that was
    recorded, the one an enabled callback of its recipe declares among the variants it holds (asked of the
    registry; a callback not installed here is skipped)."""
    recorded = state.get(WEIGHTS_VARIANT)
    if isinstance(recorded, str):
        return recorded
    variants = state.get(VARIANTS)
    recipe = state.get("recipe")
    tables = recipe.get("callback") if isinstance(recipe, dict) else None
    if not (isinstance(variants, dict) and variants and isinstance(tables, dict)):
        return ""
    registry = registry or default_registry()
    for name, table in tables.items():
        if not (isinstance(table, dict) and table.get("enabled", True)):
            continue
        try:
            declared = getattr(registry.info("callback", name).cls, "weights_variant", "")
        except I2IError:
            continue
        if declared and declared in variants:
            return declared
    return ""


def generator_file(checkpoint: Path | str, direction: str = "AtoB", *, raw: bool = False,
                   which: str | None = None) -> Path:
    """The `.safetensors` file of the generator for `direction` that CHECKPOINT points at: in a checkpoint folder
    the variant its callbacks declared for inference (e.g. `G_A.ema.safetensors`) when it holds one, else (or with
    `raw`) the trained weights. In a run folder, `which` picks the checkpoint: "latest" (None), "best" or "step-N"."""
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise I2IError(f"checkpoint {path} does not exist: pass a run folder, a checkpoint folder"
                       f" ({CHECKPOINTS_DIR}/step-NNNNNNNN) or a generator .safetensors file")
    if which not in (None, "latest") and not RunFolder.is_run(path):
        raise I2IError(f"--checkpoint {which} picks a checkpoint of a run folder, and {path} is not one: pass the"
                       " run folder, or leave --checkpoint out")
    if path.is_file():
        return path
    if RunFolder.is_run(path):
        newest = RunFolder(path).checkpoint(which)
        return newest if newest.is_file() else _direction_file(newest, direction, raw)
    if (path / STATE_FILE).is_file() or STEP_DIR.match(path.name):
        return _direction_file(path, direction, raw)
    raise I2IError(f"{path} is neither a run folder (no {CHECKPOINTS_DIR}/ in it) nor a checkpoint folder (no"
                   f" {STATE_FILE} in it): pass a run folder, a checkpoint folder or a generator .safetensors file")


def _direction_file(folder: Path, direction: str, raw: bool = False) -> Path:
    """The generator file a checkpoint folder's training.json names for `direction` (its inference variant unless
    `raw`)."""
    return weights_file(folder, direction=direction, weights="raw" if raw else AUTO)


#: `weights_file`'s choice of the variant readers use by default (the one declared for inference, else the trained)
AUTO = "auto"
RAW = "raw"


def weights_file(folder: Path, *, direction: str = "", network: str = "", weights: str = AUTO) -> Path:
    """The `.safetensors` file in checkpoint folder `folder` of the generator translating in `direction`, or of
    `network` by name, in `weights`: "auto" (a generator's variant declared for inference, e.g. its EMA average,
    else the trained weights), "raw" (the trained weights) or a variant's name."""
    state_file = folder / STATE_FILE
    if not state_file.exists():
        raise I2IError(f"checkpoint folder {folder} has no {STATE_FILE}: pass a generator file in it, e.g."
                       f" {network_file(folder, 'G_A')}")
    state = RunFolder.read_state(folder)
    stem = network or _direction_stem(folder, state, direction)
    variants = state.get(VARIANTS) if isinstance(state.get(VARIANTS), dict) else {}
    if weights == AUTO:
        files = variants.get(default_variant(state)) if stem in (state.get("generators") or {}).values() else None
    elif weights == RAW:
        files = None
    else:
        files = variants.get(weights)
        if not isinstance(files, dict) or stem not in files:
            held = sorted(name for name, listed in variants.items() if isinstance(listed, dict) and stem in listed)
            raise I2IError(f"checkpoint {folder} holds no {weights!r} weights of {stem}: use"
                           f" {', '.join([AUTO, RAW, *held])}")
    file = network_file(folder, files.get(stem, stem) if isinstance(files, dict) else stem)
    if not file.is_file():
        what = f"the {direction} generator its {STATE_FILE} names" if not network else f"network {network!r}"
        held = sorted(p.name.removesuffix(".safetensors") for p in folder.glob("*.safetensors")
                      if p.stem != TRAINING_STEM and "." not in p.name.removesuffix(".safetensors"))
        raise I2IError(f"checkpoint {folder} lacks {file.name}, {what}" + (
            f" (its networks: {', '.join(held)})" if network and held else ""))
    return file


def offered_directions(checkpoint: Path | str, which: str | None = None) -> dict[str, tuple[str | None, str]]:
    """The directions CHECKPOINT (a run, checkpoint folder or generator file) translates in, each (source domain,
    or None for any, and target domain); {} for a generator file of one unconditioned network (it translates the
    one way it was trained)."""
    path = Path(checkpoint).expanduser()
    if not path.is_file() and RunFolder.is_run(path):
        path = RunFolder(path).checkpoint(which)
    if path.is_file():
        meta = read_part_metadata(path)
        return {direction_name(d): (None, d) for d in meta.domains} if meta is not None else {}
    if not (path / STATE_FILE).is_file():
        return {}  # not a checkpoint: generator_file says what it is, in the reader's own words
    state = RunFolder.read_state(path)
    record = state.get(DIRECTIONS)
    if isinstance(record, dict) and isinstance(record.get("directions"), dict):
        found = {name: (d.get("source"), d.get("target")) for name, d in record["directions"].items()}
        order = list(record.get("domains") or [])  # training.json's keys are sorted: the domains' own order
        return dict(sorted(found.items(), key=lambda item: order.index(item[1][1]) if item[1][1] in order else 0))
    return {name: route(name) or (None, name) for name in state.get("generators") or {}}


def _direction_stem(folder: Path, state: dict[str, Any], direction: str) -> str:
    """The network file stem a checkpoint's training.json names for `direction`."""
    state_file = folder / STATE_FILE
    generators = state.get("generators")
    if not isinstance(generators, dict) or not generators:
        # Checkpoints of older i2i versions did not record which file translates which way.
        raise I2IError(f"{state_file} does not say which generator translates which way (an older i2i wrote"
                       f" it): pass the generator file itself, e.g. {network_file(folder, 'G_A')}")
    if direction not in generators and all(name.startswith("to_") for name in generators):
        targets = ", ".join(sorted(name.removeprefix("to_") for name in generators))
        raise I2IError(f"{folder} translates to any of the domains {targets}: pick one with --to DOMAIN")
    if direction not in generators:
        recipe = state.get("recipe")
        method = recipe.get("method") if isinstance(recipe, dict) else None
        method = method.get("name") if isinstance(method, dict) else None
        # a one-sided method (pix2pix's paired, CUT) trains one generator: say so rather than just "not there"
        why = f" (method {method!r} translates one way only)" if len(generators) == 1 and method else ""
        raise I2IError(f"direction {direction!r} is not available in {folder}{why}: use"
                       f" {'one of ' * (len(generators) > 1)}{', '.join(sorted(generators))}")
    return generators[direction]
