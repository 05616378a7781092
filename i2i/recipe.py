"""Recipes: TOML files that assemble parts, checked against each part's declared options before anything runs."""

from __future__ import annotations

import copy
import fnmatch
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from i2i.errors import I2IError
from i2i.contract.options import Option, OptionSet, article, closest, toml_value, unknown_key_message
from i2i.contract.kinds import KINDS
from i2i.contract.parts import Method
from i2i.contract.registry import Registry, default_registry

RUN = OptionSet((
    Option("name", str, "i2i", "run name; the run folder is runs/<name> unless --out says otherwise"),
    Option("seed", int, 0, "seed of every random number generator"),
    Option("device", str, "auto", "auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps"),
    Option("precision", str, "fp32", "fp32, or mixed precision bf16 (CPU and GPU) / fp16 (GPU)",
           choices=("fp32", "bf16", "fp16")),
    Option("channels_last", bool, False,
           "store weights and image batches channels-last (NHWC); same math, a different float summation order;"
           " pays on GPUs with tensor cores, measured no faster for the ResNet step on a 2-core CPU"
           " (see benchmarks/README.md)"),
    Option("compile", bool, False,
           "compile each network with torch.compile (same weights and checkpoints); the first steps are slow"
           " while it compiles (tens of seconds on a CPU), so it pays only on long runs"),
    Option("capture", bool, False,
           "run each training step as a recorded CUDA graph (one launch per step instead of hundreds; small batches on"
           " a GPU are bound by launching kernels): parts switch to capture-ready forms (pool and random draws on the"
           " device, fused optimizers), which on the CPU run eagerly; fp32 or bf16, one process"),
    Option("threads", int, 0,
           "CPU threads of the run; 0: an equal share of the CPUs it may use (affinity, cgroup quota) with the other"
           " i2i runs on them, following as they start and end; N: exactly N (for runs that must be bit-identical:"
           " some CPU kernels sum in an order that depends on it)", min=0),
    Option("distributed_timeout", float, 600.0,
           "seconds a process of a torchrun run waits for the others before it gives up with an error",
           min=1.0),
))
LOADER = OptionSet((
    Option("batch_size", int, 1, "images per domain per step, per process under torchrun", min=1),
    Option("workers", int, 4, "data loading processes (0 loads on the training thread); capped at the CPUs this"
           " process may use, which changes no batch", min=0),
))
TRAIN = OptionSet((
    Option("epochs", int, 100, "epochs at the initial learning rate", min=0),
    Option("decay_epochs", int, 100, "epochs over which the learning rate decays linearly toward zero", min=0),
    Option("max_steps", int, 0, "stop after this many steps (0: no cap)", min=0),
    Option("log_every", int, 100, "steps between metrics lines, report samples and loss-plot updates", min=1),
))
#: [init] and [init.<network>]: a network's starting weights and which of its layers stay frozen (i2i.engine.starting);
#: [init]'s keys are what every [init.<network>] table inherits
INIT = OptionSet((
    Option("from", str, "", "where the network's starting weights come from: a run folder, a checkpoint folder, a"
           " .safetensors generator file, a reference .pth (read as i2i convert reads it), or model:NAME (a model"
           " `i2i download model NAME` fetched); empty: the random initial weights"),
    Option("checkpoint", str, "latest", "the checkpoint of a run folder: latest, best or step-N"),
    Option("weights", str, "auto", "auto (what translate uses: a generator's EMA weights where the checkpoint has"
           " them, else the trained ones), raw (the trained ones), or a variant's name (e.g. ema)"),
    Option("direction", str, "", "the source's generator to take, by the direction it translates (AtoB, BtoA);"
           " empty: the direction this network translates"),
    Option("network", str, "", "the source's network to take, by its file name in the checkpoint (G_A, D_B, ...);"
           " empty: as `direction` picks, else the same name as this network"),
    Option("strict", bool, True, "every tensor must match the source's in name and shape (false: load what"
           " matches, leave the rest random, and say which)"),
    Option("freeze", list, [], "layers that do not train, by module-name prefix (e.g. [\"model.1\", \"model.4\"]);"
           " [\"*\"] freezes the whole network"),
    Option("freeze_steps", int, 0, "keep `freeze` for the first N steps only (0: for the whole run)", min=0),
))
#: the recipe keys (fnmatch patterns over dotted keys) whose changes a resumed run applies. Any other key must stay as
#: the run's checkpoint recorded it: what --resume restores (weights, the optimizers' moments and hyperparameters,
#: pools, data order, random streams) was made with it, so a new value would not take effect, or only in part. The
#: base learning rates and loss weights are read afresh at every step; the rest are how a session runs.
RESUMABLE_KEYS = ("run.name", "run.device", "run.precision", "run.channels_last", "run.compile", "run.threads",
                  "run.distributed_timeout", "data.root", "data.workers", "train.*", "callback.*", "optim.lr",
                  "optim.*.lr", "loss.*.weight")
#: the [train] keys of today; others a recipe gives there may have moved to a callback's table (Option.replaces)
TRAIN_KEYS = frozenset(TRAIN.names())
FIXED_TABLES = {"run": RUN, "train": TRAIN}
TABLES = ("run", "data", "method", "generator", "discriminator", "loss", "buffer", "augment", "optim", "schedule",
          "callback", "train", "init")
COMPONENTS = ("generator", "discriminator", "buffer", "augment")
#: components a recipe may leave out, and the part they then are
DEFAULT_PARTS = {"augment": "none"}
WEIGHT = Option("weight", float, 1.0, "weight of this loss term (0 disables it)", min=0.0)
ENABLED = Option("enabled", bool, True, "run this callback (false turns off one that runs by default)")
#: the key naming the part in tables whose part key is not `name` ([optim] optimizer = "adam", as before)
OPTIMIZER_KEY = "optimizer"
DEFAULT_OPTIMIZER = "adam"
DEFAULT_SCHEDULE = "linear"


@dataclass
class Recipe:
    """A resolved recipe: every table present, every default written out, every value checked."""

    tables: dict[str, Any]
    source: Path | None = None
    #: what resolving changed that the user should hear about (e.g. keys dropped when --set swapped a part)
    notes: tuple[str, ...] = ()
    #: each [optim.<group>] table's optimizer and full options (inherited from [optim]), found when resolving
    group_optimizers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    #: the tables as the recipe file and --set gave them, before defaults: what the user set explicitly
    given: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, table: str) -> dict[str, Any]:
        return self.tables[table]

    def part(self, table: str) -> tuple[str, dict[str, Any]]:
        """The part name of a component table and its options (without `name`)."""
        options = dict(self.tables[table])
        return options.pop("name"), options

    def dataset(self) -> tuple[str, dict[str, Any]]:
        """The dataset name and its options (the [data] table without the loader keys)."""
        name, options = self.part("data")
        return name, {k: v for k, v in options.items() if k not in LOADER.names()}

    def loss(self, slot: str) -> tuple[str, float, dict[str, Any]]:
        """Name, weight and options of the loss in [loss.<slot>]."""
        options = dict(self.tables["loss"][slot])
        return options.pop("name"), options.pop("weight"), options

    def optimizer(self, group: str) -> tuple[str, dict[str, Any]]:
        """The optimizer of parameter group `group` and its options: [optim] with [optim.<group>] over it."""
        if group in self.group_optimizers:
            name, options = self.group_optimizers[group]
            return name, dict(options)
        options = {k: v for k, v in self.tables["optim"].items() if not isinstance(v, dict)}
        return options.pop(OPTIMIZER_KEY), options

    def optimizer_groups(self) -> list[str]:
        """The groups the recipe sets options for in [optim.<group>] tables."""
        return [k for k, v in self.tables["optim"].items() if isinstance(v, dict)]

    def init_networks(self) -> list[str]:
        """The networks the recipe gives [init.<network>] tables for (starting weights, freezing)."""
        return [k for k, v in self.tables.get("init", {}).items() if isinstance(v, dict)]

    def init(self, network: str | None) -> dict[str, Any]:
        """The starting weights and freezing of `network`: [init] with [init.<network>] over it, every default
        filled in (a network without a table gets [init]'s keys, so `init.from` starts every network; None: those
        keys alone)."""
        given = self.tables.get("init", {})
        base = {k: v for k, v in given.items() if not isinstance(v, dict)}
        return {**INIT.resolve(base, "init"), **(given.get(network, {}) if network is not None else {})}

    def callbacks(self) -> list[tuple[str, dict[str, Any]]]:
        """The enabled callbacks and their options (without `enabled`), in recipe order."""
        out = []
        for name, table in self.tables["callback"].items():
            options = dict(table)
            if options.pop("enabled"):
                out.append((name, options))
        return out

    def to_toml(self) -> str:
        """The recipe as TOML, every default written out."""
        return tomli_w.dumps(self.tables)

    def save(self, path: Path) -> None:
        """Write the resolved recipe to `path`."""
        path.write_text(self.to_toml())


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error becomes one line naming the file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise I2IError(f"recipe file not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise I2IError(f"cannot read recipe {path}: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise I2IError(f"{path}: invalid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `table.key=value` into its key path and value (TOML syntax; bare words are strings)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise I2IError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. --set optim.lr=1e-4")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as unet or a path
    return key.split("."), value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `tree` with each `--set KEY=VALUE` applied."""
    tree = copy.deepcopy(tree)
    for text in overrides:
        path, value = parse_override(text)
        node = tree
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise I2IError(f"--set {text!r}: {'.'.join(path[:depth + 1])} is a value, not a table")
            node = child
        node[path[-1]] = value
    return tree


def load_recipe(path: Path | str, overrides: list[str] = (), registry: Registry | None = None,
                resume: bool = False) -> Recipe:
    """Read, override and resolve a recipe file (for --resume, starting-weight files are not required)."""
    path = Path(path)
    registry = registry or default_registry()
    original = _move_train_keys(read_toml(path), registry, f"{path}: ")
    moved = [_move_override(text, registry) for text in overrides]
    try:
        return _resolve_with(original, moved, registry, path, resume)
    except I2IError as exc:
        culprit = _culprit(original, moved, registry, path, resume, str(exc))
        raise I2IError(f"{path if culprit is None else _set_text(overrides[culprit])}: {exc}") from None


def _set_text(text: str) -> str:
    """A --set as the user typed it, on one line (a value with control characters quoted)."""
    text = text.strip()
    return f"--set {text if text.isprintable() else repr(text)}"


def _resolve_with(original: dict[str, Any], overrides: list[str], registry: Registry, path: Path,
                  resume: bool) -> Recipe:
    """The recipe file's tree with `overrides` applied, resolved, with the notes of what resolving changed."""
    tree = apply_overrides(original, overrides)
    notes = _drop_keys_of_swapped_parts(original, tree, overrides, registry)
    recipe = resolve(tree, registry, source=path, initial_weights=not resume)
    recipe.notes = tuple(notes)
    return recipe


def _culprit(original: dict[str, Any], overrides: list[str], registry: Registry, path: Path, resume: bool,
             message: str) -> int | None:
    """The index of the --set the error `message` is about: the last one without which resolving no longer fails
    that way (None: the recipe file's own value), so the error names what the user typed, not the file."""
    for index in reversed(range(len(overrides))):
        try:
            _resolve_with(original, overrides[:index] + overrides[index + 1:], registry, path, resume)
        except Exception as exc:  # noqa: BLE001 - any other failure is another message too
            if isinstance(exc, I2IError) and str(exc) == message:
                continue
        return index
    return None


@dataclass
class ResumeChanges:
    """What a recipe changes from the one a run's checkpoint recorded, {dotted key: (recorded, new)}."""

    applied: dict[str, tuple[Any, Any]]  # keys in RESUMABLE_KEYS: the resumed run takes the new value
    refused: dict[str, tuple[Any, Any]]  # any other key: the restored state was made with the recorded value

    @staticmethod
    def describe(changes: dict[str, tuple[Any, Any]]) -> str:
        """"key = new (was old), ..." for a message."""
        return ", ".join(f"{key} = {toml_value(new)} (was {'not set' if old is NOT_SET else toml_value(old)})"
                         for key, (old, new) in changes.items())


#: a key the recorded recipe did not have (ResumeChanges)
NOT_SET = object()


def resume_changes(recorded: dict[str, Any], recipe: Recipe, registry: Registry | None = None) -> ResumeChanges:
    """How `recipe` differs from the tables a checkpoint recorded (`recorded`); the options that only pick starting
    weights (which the checkpoint replaces) are set back to the recorded values in `recipe`, so its recipe.toml says
    what the run started from. Keys only one side has (added or moved by another i2i) are no change."""
    registry = registry or default_registry()
    old, new = _leaves(recorded), _leaves(recipe.tables)
    starting = _starting_weight_keys(recipe.tables, registry)
    changes = ResumeChanges({}, {})
    for key, value in new.items():
        if key not in old and key.startswith("init."):
            # starting weights are read when a run starts, never on --resume: added ones would not take effect
            changes.refused[key] = (NOT_SET, value)
            continue
        if key not in old or old[key] == value:
            continue
        if key in starting:
            *tables, option = key.split(".")
            node = recipe.tables
            for table in tables:
                node = node[table]
            node[option] = old[key]
            continue
        side = changes.applied if any(fnmatch.fnmatchcase(key, p) for p in RESUMABLE_KEYS) else changes.refused
        side[key] = (old[key], value)
    return changes


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every value of a nested table by its dotted key."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _starting_weight_keys(tables: dict[str, Any], registry: Registry) -> set[str]:
    """The dotted keys of the options that only pick a part's starting weights (Option.init_only)."""
    keys = set()
    for name in tables:
        found = _table_kind((name,), registry)
        if found is None or not isinstance(tables[name].get(found[2]), str):
            continue
        kind, _, name_key = found
        keys |= {f"{name}.{option}" for option in registry.initial_weight_defaults(kind, tables[name][name_key])}
    return keys


def moved_train_keys(registry: Registry) -> dict[str, tuple[str, str]]:
    """The deprecated [train] keys installed callbacks took over, {old key: (callback, option)}: what each callback
    option declares it `replaces` (e.g. the stock checkpoints callback's `every`, train.checkpoint_every)."""
    moved = {}
    for name in registry.available("callback"):
        for option in registry.info("callback", name).cls.options:
            table, _, key = option.replaces.partition(".")
            if table == "train" and key:
                moved[key] = (name, option.name)
    return moved


def _move_train_keys(tree: dict[str, Any], registry: Registry, where: str = "") -> dict[str, Any]:
    """`tree` with the deprecated [train] keys that callbacks took over moved to their tables (a copy when any
    moves), each with a warning naming the new key; shapes that are not tables are left for `resolve`."""
    train, callbacks = tree.get("train"), tree.get("callback", {})
    if not isinstance(train, dict) or not isinstance(callbacks, dict) or set(train) <= TRAIN_KEYS:
        return tree
    moved = moved_train_keys(registry)
    if not set(train) & set(moved):
        return tree
    tree = {**tree, "train": dict(train), "callback": dict(callbacks)}
    for old, (name, key) in moved.items():
        if old not in train:
            continue
        value = tree["train"].pop(old)
        table = tree["callback"].get(name, {})
        if not isinstance(table, dict):
            continue  # resolve names the bad [callback.<name>]
        if key in table and table[key] != value:
            raise I2IError(f"{where}train.{old} = {toml_value(value)} and callback.{name}.{key} ="
                           f" {toml_value(table[key])} are the same setting: keep callback.{name}.{key} and remove"
                           f" train.{old} (deprecated)")
        tree["callback"][name] = {**table, key: value}
        warnings.warn(f"{where}train.{old} is deprecated: use callback.{name}.{key}", FutureWarning, stacklevel=3)
    return tree


def _move_override(text: str, registry: Registry) -> str:
    """A `--set train.OLD=V` of a deprecated key as the `--set` of its new key (with a warning); others as given."""
    key, sep, raw = text.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or len(path) != 2 or path[0] != "train" or path[1] in TRAIN_KEYS:
        return text
    moved = moved_train_keys(registry)
    if path[1] not in moved:
        return text
    name, option = moved[path[1]]
    new = f"callback.{name}.{option}={raw}"
    warnings.warn(f"--set {text.strip()} is deprecated: use --set {new.strip()}", FutureWarning, stacklevel=3)
    return new


def component_tables(registry: Registry) -> tuple[str, ...]:
    """The tables a method may build parts from (Method.parts): the core's components, then the kinds plugins
    declare, each a table of the part's name and options."""
    return (*COMPONENTS, *(kind for kind in registry.kinds() if kind not in KINDS))


def _table_kind(path: tuple[str, ...], registry: Registry) -> tuple[str, tuple[str, ...], str] | None:
    """The part kind a table path holds, the keys it always accepts besides the part's options, and the key
    that names the part."""
    if path == ("data",):
        return "dataset", ("name", *LOADER.names()), "name"
    if len(path) == 2 and path[0] == "loss":
        return "loss", ("name", "weight"), "name"
    if path in (("method",), ("schedule",), *((c,) for c in component_tables(registry))):
        return path[0], ("name",), "name"
    if path == ("optim",) or (len(path) == 2 and path[0] == "optim"):
        return "optimizer", (OPTIMIZER_KEY,), OPTIMIZER_KEY
    return None


def _drop_keys_of_swapped_parts(original: dict[str, Any], tree: dict[str, Any], overrides: list[str],
                                registry: Registry) -> list[str]:
    """When --set changes a part's name, drop the file's keys the new part does not take (for ablations)."""
    parsed = [tuple(parse_override(text)[0]) for text in overrides]
    notes = []
    for key in dict.fromkeys(parsed):  # a name set twice (--set data.name=x --set data.name=y) is one swap
        if (table := _table_kind(key[:-1], registry)) is None or key[-1] != table[2]:
            continue
        kind, always, name_key = table
        node, file_node = tree, original
        for part in key[:-1]:
            node, file_node = node.get(part, {}), file_node.get(part, {}) if isinstance(file_node, dict) else {}
        name = node.get(name_key)
        if (not isinstance(name, str) or not isinstance(file_node, dict) or file_node.get(name_key) == name
                or (kind == "optimizer" and name_key not in file_node and name == DEFAULT_OPTIMIZER)):
            continue
        takes = {o.name for o in registry.info(kind, name).options} | set(always)
        set_here = {k[len(key) - 1] for k in parsed if k[:len(key) - 1] == key[:-1] and len(k) == len(key)}
        dropped = [k for k in file_node
                   if k not in takes and k not in set_here and not isinstance(file_node[k], dict)]
        for k in dropped:
            del node[k]
        if dropped:
            notes.append(f"[{'.'.join(key[:-1])}] {name_key} = {name!r} (from --set) does not take "
                         f"{', '.join(dropped)} from the recipe file: dropped")
        if kind == "method":
            notes += _drop_tables_of_swapped_method(original, tree, parsed, registry.info("method", name).cls,
                                                    component_tables(registry))
    return notes


def _drop_tables_of_swapped_method(original: dict[str, Any], tree: dict[str, Any], parsed: list[tuple[str, ...]],
                                   method_cls: type[Method], components: tuple[str, ...]) -> list[str]:
    """When --set swaps the method, drop the file's loss slots and component tables the new method does not use
    (so one sweep can compare methods, e.g. cycle and cut); tables the overrides themselves set are kept."""
    set_here = {k[:2] if k[0] == "loss" else k[:1] for k in parsed}
    dropped = [f"[{table}]" for table in components
               if table in original and table not in method_cls.parts and (table,) not in set_here]
    for table in dropped:
        del tree[table[1:-1]]
    losses = tree.get("loss")
    if isinstance(losses, dict) and isinstance(original.get("loss"), dict):
        for slot in [s for s in original["loss"] if s not in method_cls.losses and ("loss", s) not in set_here]:
            losses.pop(slot, None)
            dropped.append(f"[loss.{slot}]")
    if not dropped:
        return []
    return [f"[method] name = {method_cls.name!r} (from --set) does not use {', '.join(dropped)} of the recipe"
            " file: dropped"]


def resolve(tree: dict[str, Any], registry: Registry | None = None, source: Path | None = None,
            initial_weights: bool = True) -> Recipe:
    """Check a recipe tree against the installed parts and fill in every default."""
    registry = registry or default_registry()
    tree = _move_train_keys(tree, registry)
    components = component_tables(registry)
    for key, value in tree.items():
        if key not in TABLES and key not in components:
            raise I2IError(unknown_key_message("recipe", key, [*TABLES, *components[len(COMPONENTS):]]).replace(
                "in [recipe]", "at top level"))
        if not isinstance(value, dict):
            raise I2IError(f"{key} must be a table [{key}], got a value")
    tables: dict[str, Any] = {}
    for name, options in FIXED_TABLES.items():
        tables[name] = options.resolve(tree.get(name, {}), name)

    method_name, method_options = _named(tree, "method", registry)
    method_cls: type[Method] = registry.info("method", method_name).cls
    tables["method"] = {"name": method_name, **registry.resolve_options("method", method_name, method_options,
                                                                         "method")}

    data_name, data_options = _named(tree, "data", registry)
    loader = {k: data_options.pop(k) for k in LOADER.names() if k in data_options}
    tables["data"] = {"name": data_name,
                      **registry.resolve_options("dataset", data_name, data_options, "data"),
                      **LOADER.resolve(loader, "data")}

    unknown = [table for table in method_cls.parts if table not in components]
    if unknown:
        raise I2IError(f"method {method_name!r} builds from [{unknown[0]}], which is not an installed kind of part:"
                       f" install the package that declares it (kinds: {', '.join(registry.kinds())})")
    for table in components:
        if table in method_cls.parts:
            # an optional part: a recipe without its table gets the default (a table without a name is an error)
            given = {table: {"name": DEFAULT_PARTS[table]}} if table in DEFAULT_PARTS and table not in tree else tree
            part_name, part_options = _named(given, table, registry)
            tables[table] = {"name": part_name, **registry.resolve_options(table, part_name, part_options, table,
                                                                           initial_weights)}
        elif table in tree:
            raise I2IError(f"[{table}] is not used by method {method_name!r} (it uses "
                           f"{', '.join(f'[{p}]' for p in method_cls.parts)}); remove the table")
    tables["loss"] = _resolve_losses(tree.get("loss", {}), method_cls, registry)
    tables["optim"], group_optimizers = _resolve_optim(tree.get("optim", {}), method_cls, registry)
    schedule = dict(tree.get("schedule", {}))
    schedule.setdefault("name", DEFAULT_SCHEDULE)
    schedule_name, schedule_options = _named({"schedule": schedule}, "schedule", registry)
    tables["schedule"] = {"name": schedule_name,
                          **registry.resolve_options("schedule", schedule_name, schedule_options, "schedule")}
    tables["callback"] = _resolve_callbacks(tree.get("callback", {}), registry)
    if tree.get("init"):  # left out when not given, so the recipe.toml of a run from random weights is unchanged
        tables["init"] = _resolve_init(tree["init"])
    ordered = {t: tables[t] for t in (*TABLES, *components) if t in tables}
    return Recipe(ordered, source, group_optimizers=group_optimizers, given=copy.deepcopy(tree))


def _inherited(base: dict[str, Any], name: str, registry: Registry) -> dict[str, Any]:
    """The keys of [optim] a group inherits: those its optimizer takes (all, when it keeps [optim]'s)."""
    takes = {o.name for o in registry.info("optimizer", name).options}
    return {k: v for k, v in base.items() if k in takes and k != OPTIMIZER_KEY}


def _resolve_optim(given: dict[str, Any], method_cls: type[Method], registry: Registry
                   ) -> tuple[dict[str, Any], dict[str, tuple[str, dict[str, Any]]]]:
    """[optim] (the optimizer and its options) with [optim.<group>] tables of per-group overrides (e.g. TTUR),
    and each such group's optimizer and full options."""
    base = {k: v for k, v in given.items() if not isinstance(v, dict)}
    groups = {k: v for k, v in given.items() if isinstance(v, dict)}
    name = _part_name(base.pop(OPTIMIZER_KEY, DEFAULT_OPTIMIZER), "optim", OPTIMIZER_KEY, "optimizer", registry)
    resolved: dict[str, Any] = {OPTIMIZER_KEY: name,
                                **registry.resolve_options("optimizer", name, base, "optim")}
    groups_resolved, group_optimizers = {}, {}
    for group, table in groups.items():
        if method_cls.groups and group not in method_cls.groups:
            raise I2IError(unknown_group_message(method_cls.name, group, list(method_cls.groups)))
        where = f"optim.{group}"
        group_name = _part_name(table.get(OPTIMIZER_KEY, name), where, OPTIMIZER_KEY, "optimizer", registry)
        own = {k: v for k, v in table.items() if k != OPTIMIZER_KEY}
        full = registry.resolve_options("optimizer", group_name, {**_inherited(resolved, group_name, registry),
                                                                   **own}, where)
        # written as given (checked), so --set optim.KEY still reaches every group that does not set KEY itself
        groups_resolved[group] = {**({OPTIMIZER_KEY: group_name} if group_name != name else {}),
                                  **{k: full[k] for k in own}}
        group_optimizers[group] = (group_name, full)
    return {**resolved, **groups_resolved}, group_optimizers


def unknown_group_message(method: str, group: str, groups: list[str]) -> str:
    """One line for an [optim.<group>] table naming a group that `method` lacks: its groups, and the closest."""
    close = closest(group, groups)
    hint = f"; did you mean [optim.{close}]?" if close else ""
    return (f"[optim.{group}]: method {method!r} has no optimizer group {group!r} (its groups:"
            f" {', '.join(groups)}){hint}")


def _resolve_init(given: dict[str, Any]) -> dict[str, Any]:
    """[init] and its [init.<network>] tables, checked and written as given (so `--set init.KEY` still reaches every
    network that does not set KEY itself); which networks exist is checked once the method has built them."""
    resolved: dict[str, Any] = {}
    for key, value in given.items():
        if isinstance(value, dict):
            where = f"init.{key}"
            checked = INIT.resolve(value, where)
            resolved[key] = {k: checked[k] for k in value}
        else:
            resolved[key] = INIT.resolve({key: value}, "init")[key]
    return resolved


def _resolve_callbacks(given: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """[callback.<name>] tables: the callbacks that run by default, then those the recipe names, each with
    `enabled` and its options."""
    tables: dict[str, Any] = {}
    for name in registry.available("callback"):
        if registry.info("callback", name).cls.default:
            tables[name] = {}
    for name, table in given.items():
        if not isinstance(table, dict):
            raise I2IError(f"callback.{name} must be a table [callback.{name}], got a value")
        registry.info("callback", name)  # an unknown name fails here with the list and the closest match
        tables[name] = table
    resolved = {}
    for name, table in tables.items():
        options = dict(table)
        enabled = ENABLED.check(options.pop("enabled", True), f"[callback.{name}] enabled")
        where = f"callback.{name}"
        # a callback that is off is not asked to judge its options (e.g. whether its tracker library is installed)
        resolved[name] = {"enabled": enabled,
                          **(registry.resolve_options("callback", name, options, where) if enabled
                             else OptionSet(registry.info("callback", name).options).resolve(options, where))}
    return resolved


def _part_name(name: Any, where: str, key: str, kind: str, registry: Registry) -> str:
    """A part name given in a table, checked: a string naming an installed part of `kind`."""
    if not isinstance(name, str):
        raise I2IError(f"[{where}] {key} must be a string, got {name!r}")
    registry.info(kind, name)  # unknown names fail here with the list and the closest match
    return name


def _named(tree: dict[str, Any], table: str, registry: Registry) -> tuple[str, dict[str, Any]]:
    """The `name` of a component table (required) and its other keys."""
    kind = "dataset" if table == "data" else table
    options = dict(tree.get(table, {}))
    if "name" not in options:
        names = ", ".join(registry.available(kind)) or "none installed"
        raise I2IError(f"[{table}] needs a name: add name = \"...\" (available {kind}s: {names})")
    return _part_name(options.pop("name"), table, "name", kind, registry), options


def _resolve_losses(given: dict[str, Any], method_cls: type[Method], registry: Registry) -> dict[str, Any]:
    slots = method_cls.losses
    resolved = {}
    for slot in given:
        if slot not in slots:
            raise I2IError(unknown_key_message("loss", slot, list(slots)).replace(
                "unknown key", f"method {method_cls.name!r} has no loss slot"))
        if not isinstance(given[slot], dict):
            raise I2IError(f"loss.{slot} must be a table [loss.{slot}], got a value")
    for slot, spec in slots.items():
        options = dict(given.get(slot, {}))
        name = options.pop("name", spec.default)
        where = f"loss.{slot}"
        if not isinstance(name, str):
            raise I2IError(f"[{where}] name must be a string, got {name!r}")
        info = registry.info("loss", name)
        if not issubclass(info.cls, spec.role):
            fitting = [n for n in registry.available("loss") if issubclass(registry.info("loss", n).cls, spec.role)]
            raise I2IError(f"[{where}] name = {name!r} is not {article(spec.role.role)} loss, which this slot needs"
                           f" (available: {', '.join(fitting)})")
        weight = WEIGHT.check(options.pop("weight", spec.weight), f"[{where}] weight")
        known = [o.name for o in info.options]
        for key in options:
            if key not in known:
                raise I2IError(unknown_key_message(where, key, ["name", "weight", *known]))
        resolved[slot] = {"name": name, "weight": weight,
                          **registry.resolve_options("loss", name, options, where)}
    return resolved


__all__ = ["Recipe", "load_recipe", "resolve", "read_toml", "apply_overrides", "parse_override"]
