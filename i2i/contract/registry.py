"""The plugin manager and the registry of parts: create(kind, name, **options), available(kind), describe."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import re
import sys
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

import i2i.contract.kinds as core_kinds
import i2i.hookspecs as hookspecs
from i2i.errors import I2IError
from i2i.contract.options import Option, OptionSet, closest
from i2i.contract.parts import Part

if TYPE_CHECKING:
    import click

ENTRY_POINT_GROUP = "i2i"
#: the core's distribution (the package index's "i2i" is an unrelated project)
CORE_PACKAGE = "i2i-toolkit"
#: what the core was called before it had a distribution name of its own: recipes, run folders and I2I_BLOCK_PLUGINS
#: written then say "i2i:resnet", so these still mean the core
CORE_ALIASES = ("i2i",)
BLOCK_VARIABLE = "I2I_BLOCK_PLUGINS"
#: the hook that returns parts of any kind; the per-kind hooks are named by their kind's base class (`Part.hook`)
PARTS_HOOK = "i2i_parts"
KINDS_HOOK = "i2i_kinds"
#: a kind's name is a recipe table's name and a command-line word
KIND_NAME = re.compile(r"[a-z][a-z0-9_]*")
#: recipe tables of the core that are not kinds of part, so no kind may take their names
RESERVED_TABLES = ("data", "optim", "run", "train")


def normalize_package(name: str) -> str:
    """A distribution name as packaging compares them: case-insensitive, runs of - _ . alike ("I2I_Foo" = "i2i-foo");
    the core's old name (CORE_ALIASES) is the core's."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    return CORE_PACKAGE if key in CORE_ALIASES else key


def precedence(package: str) -> tuple[bool, str]:
    """The sort key deciding which package's part a plain name means: the core's stock parts first, then third-party
    packages by distribution name (normalized). Entry-point names and installation order play no part."""
    key = normalize_package(package)
    return key != CORE_PACKAGE, key


@dataclass(frozen=True)
class PartInfo:
    """A registered part: its class and where it came from."""

    kind: str
    name: str
    cls: type[Part]
    package: str
    plugin: str
    #: the version of the installed distribution `package`; "" for a part a script registered (no distribution)
    version: str = ""

    @property
    def description(self) -> str:
        """One line saying what the part is."""
        return self.cls.description()

    @property
    def options(self) -> tuple[Option, ...]:
        """The options the part declares."""
        return tuple(self.cls.options)


@dataclass(frozen=True)
class LoadFailure:
    """A plugin that could not be loaded, and why."""

    plugin: str
    package: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} from package {self.package!r} failed to load: {self.error}"


class Registry:
    """All parts from all loaded plugins, by kind and name."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("i2i")
        self.manager.add_hookspecs(hookspecs)
        self.failures: list[LoadFailure] = []
        self.conflicts: list[str] = []
        self.blocked: dict[str, str] = {}  # installed packages that I2I_BLOCK_PLUGINS kept out, normalized -> name
        self._packages: dict[str, str] = {}
        self._versions: dict[str, str] = {}  # normalized distribution name -> version, of those loaded
        self._loaded: set[tuple[str, str, str]] = set()
        self._parts: dict[str, dict[str, PartInfo]] | None = None
        self._kinds: dict[str, type[Part]] = {}
        self._qualified: dict[str, dict[tuple[str, str], PartInfo]] = {}  # kind -> (normalized package, name)
        self._clashes: dict[tuple[str, str], str] = {}  # (kind, name) -> the clash message
        self._warned: set[tuple[str, str]] = set()
        # the core's kinds are declared through the hook plugins use, so they are found the same way
        self.register(core_kinds, name="i2i.kinds", package=CORE_PACKAGE)

    def load_entry_points(self, core: bool = True) -> None:
        """Load every plugin in the `i2i` entry-point group; a failing one is recorded and the rest load.

        Packages named in I2I_BLOCK_PLUGINS (comma-separated distribution names) are not imported at all; the core
        package cannot be blocked (its stock parts are needed) and is ignored there with a warning. With `core`
        false, the core's own plugins are skipped too (for plugin commands, which only third parties add).
        """
        named = {normalize_package(n.strip()): n.strip() for n in os.environ.get(BLOCK_VARIABLE, "").split(",")
                 if n.strip()}
        if CORE_PACKAGE in named:
            warnings.warn(f"{BLOCK_VARIABLE} names {named.pop(CORE_PACKAGE)!r}, which is ignored: the core package"
                          f" cannot be blocked ({CORE_PACKAGE}: its stock parts are needed); use 'package:name' to"
                          " pick another package's part", stacklevel=2)
        blocked = set(named)
        entry_points = [(ep.dist.name if ep.dist is not None else "?", ep)
                        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
        for package, ep in sorted(entry_points, key=lambda pair: (precedence(pair[0]), pair[1].name)):
            key = normalize_package(package)
            if key in blocked:
                self.blocked[key] = package
                continue
            if (package, ep.name, ep.value) in self._loaded or (key == CORE_PACKAGE and not core):
                continue
            self._loaded.add((package, ep.name, ep.value))
            # Entry-point names are chosen per package, so two packages may both use e.g. "losses".
            name = ep.name if not self.manager.has_plugin(ep.name) else f"{ep.name}@{package}"
            try:
                plugin = ep.load()
                self.register(plugin, name=name, package=package)
                if ep.dist is not None:
                    self._versions[key] = ep.dist.version
            except Exception as exc:  # a broken third-party plugin must not take the others down
                failure = LoadFailure(ep.name, package, f"{type(exc).__name__}: {exc}")
                self.failures.append(failure)
                warnings.warn(str(failure), stacklevel=2)
        for name in sorted(blocked - set(self.blocked)):
            warnings.warn(f"{BLOCK_VARIABLE} names {name!r}, which is not an installed i2i plugin package",
                          stacklevel=2)
        self.manager.check_pending()

    def register(self, plugin: ModuleType | object, name: str | None = None, package: str = "") -> None:
        """Register a plugin object (a module with @hookimpl functions) directly, e.g. from a script."""
        name = self.manager.register(plugin, name=name)
        self._packages[name] = package or getattr(plugin, "__name__", str(plugin)).split(".")[0]
        self._parts = None

    def _implementations(self, hook_name: str) -> list[tuple[str, Any]]:
        """(package, hook implementation) pairs of a hook, in precedence order (then by plugin name)."""
        found = [(self._packages.get(impl.plugin_name, impl.plugin_name), impl)
                 for impl in getattr(self.manager.hook, hook_name).get_hookimpls()]
        return sorted(found, key=lambda pair: (precedence(pair[0]), pair[1].plugin_name))

    def kinds(self) -> dict[str, type[Part]]:
        """Every kind of part, by name: the core's, then those plugins declare (hook i2i_kinds), in that order."""
        self._collect()
        return dict(self._kinds)

    def _collect_kinds(self) -> dict[str, type[Part]]:
        """The base classes the i2i_kinds hooks return, checked, by kind; a bad or clashing one is a conflict."""
        kinds: dict[str, type[Part]] = {}
        declared_by: dict[str, str] = {}
        for package, impl in self._implementations(KINDS_HOOK):
            for base in impl.function() or []:
                where = f"plugin {impl.plugin_name!r} ({package}) returned {base!r} from {KINDS_HOOK}"
                kind = base.__dict__.get("kind") if isinstance(base, type) else None
                if not (isinstance(base, type) and issubclass(base, Part) and isinstance(kind, str)):
                    self.conflicts.append(f"{where}, which is not a subclass of i2i.api.Part that sets `kind`")
                elif not KIND_NAME.fullmatch(kind) or kind in RESERVED_TABLES:
                    self.conflicts.append(f"{where}, whose kind {kind!r} cannot be a recipe table: use lower-case"
                                          f" letters, digits and _, and none of {', '.join(RESERVED_TABLES)}")
                elif kind in kinds and kinds[kind] is not base:
                    self.conflicts.append(f"kind {kind!r} is declared by packages {declared_by[kind]!r} and"
                                          f" {package!r}: {declared_by[kind]}'s is used")
                elif kind not in kinds:
                    kinds[kind], declared_by[kind] = base, package
        return kinds

    def _kind_hooks(self) -> dict[str, str]:
        """The per-kind hooks (hookspecs.py) and the kind each returns: those the kinds' base classes name."""
        hooks: dict[str, str] = {}
        for kind, base in self._kinds.items():
            hook = base.__dict__.get("hook")
            if hook and hook != PARTS_HOOK and hasattr(self.manager.hook, hook):
                hooks.setdefault(hook, kind)  # the core's kinds come first, so no plugin base takes their hook
        return hooks

    def _part_classes(self) -> Iterator[tuple[str, str, str, Any]]:
        """(package, plugin, hook, returned class) from every part hook, the packages in precedence order."""
        found = [(package, impl.plugin_name, hook, cls)
                 for hook in [*self._kind_hooks(), PARTS_HOOK] for package, impl in self._implementations(hook)
                 for cls in impl.function() or []]
        # stable: within a package, the order of the hooks and plugins above is kept
        yield from sorted(found, key=lambda entry: precedence(entry[0]))

    def _kind_of(self, cls: Any, hook: str) -> tuple[str, str]:
        """The kind a class returned from `hook` registers as and "", or "" and what is wrong with it."""
        hook_kinds = self._kind_hooks()
        if hook in hook_kinds:
            kind = hook_kinds[hook]
            if isinstance(cls, type) and issubclass(cls, Part) and cls.kind == kind and cls.name:
                return kind, ""
            return "", f"which is not a {kind} class with a name"
        if not (isinstance(cls, type) and issubclass(cls, Part)):
            return "", "which is not a part class (a subclass of a kind's base class)"
        if cls.kind not in self._kinds:
            return "", (f"whose kind {cls.kind!r} no installed package declares (a plugin declares a kind by"
                        f" returning its base class from {KINDS_HOOK}; kinds: {', '.join(self._kinds)})")
        if not issubclass(cls, self._kinds[cls.kind]):
            return "", (f"which sets kind {cls.kind!r} but does not subclass that kind's base class"
                        f" {self._kinds[cls.kind].__qualname__}")
        return (cls.kind, "") if cls.name else ("", "which has no name")

    def _collect(self) -> dict[str, dict[str, PartInfo]]:
        if self._parts is not None:
            return self._parts
        self.conflicts = []  # found afresh with the parts, so a re-collection does not repeat them
        self._kinds = self._collect_kinds()
        parts: dict[str, dict[str, PartInfo]] = {kind: {} for kind in self._kinds}
        self._qualified = {kind: {} for kind in self._kinds}
        self._clashes = {}
        registrants: dict[tuple[str, str], list[PartInfo]] = {}
        for package, plugin_name, hook_name, cls in self._part_classes():
            kind, problem = self._kind_of(cls, hook_name)
            if problem:
                self.conflicts.append(f"plugin {plugin_name!r} ({package}) returned {cls!r} from {hook_name},"
                                      f" {problem}")
                continue
            key = (normalize_package(package), cls.name)
            if key in self._qualified[kind]:
                if self._qualified[kind][key].cls is not cls:
                    self.conflicts.append(
                        f"{kind} {cls.name!r} is registered twice by package {package!r} (plugins"
                        f" {self._qualified[kind][key].plugin!r} and {plugin_name!r}): the first is used")
                continue
            self._qualified[kind][key] = PartInfo(kind, cls.name, cls, package, plugin_name,
                                                  self._versions.get(key[0], ""))
            registrants.setdefault((kind, cls.name), []).append(self._qualified[kind][key])
        for (kind, name), infos in sorted(registrants.items()):
            parts[kind][name] = infos[0]  # the packages are in precedence order
            if len(infos) > 1:
                self._clashes[kind, name] = _clash_message(kind, name, [i.package for i in infos])
                self.conflicts.append(self._clashes[kind, name])
        self._parts = parts
        return parts

    def available(self, kind: str, pattern: str = "*") -> list[str]:
        """Names of the parts of `kind` that match the shell-style `pattern`, sorted."""
        self._check_kind(kind)
        return sorted(n for n in self._collect()[kind] if fnmatch.fnmatch(n, pattern))

    def info(self, kind: str, name: str) -> PartInfo:
        """The registered part `name` of `kind`, or `package:name` for that package's; an unknown name lists what
        exists and the closest match."""
        self._check_kind(kind)
        if ":" in name:
            return self._qualified_info(kind, name)
        found = self._collect()[kind].get(name)
        if found is None:
            names = self.available(kind)
            blocked = "".join(f"; package {p!r} is blocked by {BLOCK_VARIABLE}" for p in sorted(self.blocked.values()))
            raise I2IError(f"unknown {kind} {name!r}: {_did_you_mean(name, names)}(available:"
                           f" {', '.join(names) or 'none'}){blocked}")
        return found

    def _qualified_info(self, kind: str, name: str) -> PartInfo:
        """The part a qualified name `package:name` means (the package as `i2i list` shows it, - and _ alike)."""
        package, _, plain = name.partition(":")
        key = normalize_package(package)
        self._collect()
        qualified = self._qualified[kind]
        if key in self.blocked:
            raise I2IError(f"{kind} {name!r}: package {self.blocked[key]!r} is blocked by {BLOCK_VARIABLE}"
                           " (take it out of that variable to use its parts)")
        packages = {normalize_package(p): p for p in self._packages.values()}
        if key not in packages:
            names = sorted(packages.values())
            raise I2IError(f"unknown package {package!r} in {kind} {name!r}: {_did_you_mean(package, names)}"
                           f"(plugin packages: {', '.join(names) or 'none'})")
        found = qualified.get((key, plain))
        if found is None:
            names = sorted(n for p, n in qualified if p == key)
            raise I2IError(f"package {packages[key]!r} has no {kind} {plain!r}: {_did_you_mean(plain, names)}"
                           f"(its {kind}s: {', '.join(names) or 'none'})")
        return found

    def require(self, kind: str, name: str, package: str = "", version: str = "") -> PartInfo:
        """The part `name` of `kind` that a file records as provided by the distribution `package` (`version`), as
        `info` finds it; when it is not here, the error names that distribution and the line that installs it (or
        why the installed one does not provide it). Without a recorded `package`, `info`'s error."""
        try:
            return self.info(kind, name)
        except I2IError:
            if not package:
                raise
        raise I2IError(self._missing(kind, name, package, version)) from None

    def _missing(self, kind: str, name: str, package: str, version: str) -> str:
        """Why part `name`, which the distribution `package` (`version`) provided, is not here, and the fix."""
        what = f"{kind} {name!r} comes from the package {package}{f' {version}' if version else ''}"
        key = normalize_package(package)
        if key in self.blocked:
            return f"{what}, which {BLOCK_VARIABLE} blocks: take {self.blocked[key]!r} out of that variable"
        failed: dict[str, list[str]] = {}  # error -> its plugins: a missing dependency fails them all alike
        for failure in self.failures:
            if normalize_package(failure.package) == key:
                failed.setdefault(failure.error, []).append(repr(failure.plugin))
        if failed:
            return f"{what}, which is installed but failed to load: " + "; ".join(
                f"plugin{'s' * (len(plugins) > 1)} {', '.join(plugins)}: {error}" for error, plugins in failed.items())
        installed = self._versions.get(key) or _installed_version(package)
        if installed is None:
            return f"{what} (not installed): pip install {package}"
        names = sorted(n for p, n in self._qualified.get(kind, {}) if p == key)
        pin = f'"{package}=={version}"' if version else f"--upgrade {package}"
        plain = name.partition(":")[2] or name
        return (f"{what}, and the installed {package} {installed} has no {kind} {plain!r} (its {kind}s:"
                f" {', '.join(names) or 'none'}): pip install {pin}")

    def describe(self, kind: str, name: str) -> dict[str, Any]:
        """A plain description of a part: name, package, description and options."""
        part = self.info(kind, name)
        return {
            "kind": kind,
            "name": name,
            "package": part.package,
            "description": part.description,
            "options": [
                {"name": o.name, "type": o.type_name, "default": o.default, "help": o.help,
                 "choices": list(o.choices) if o.choices else None, "min": o.min, "max": o.max}
                for o in part.options
            ],
        }

    def resolve_options(self, kind: str, name: str, options: dict[str, Any], where: str = "",
                        initial_weights: bool = True) -> dict[str, Any]:
        """Check `options` against what part `name` declares (and its own check_options); fill in its defaults.

        With `initial_weights` false (a run resuming from a checkpoint), options that only pick the starting
        weights are kept but not checked by the part, as no file or download will be read for them.
        """
        part = self.info(kind, name)
        if (kind, name) in self._clashes and (kind, name) not in self._warned:  # said once per name
            self._warned.add((kind, name))
            warnings.warn(self._clashes[kind, name], stacklevel=2)
        where = where or kind
        resolved = OptionSet(part.options).resolve(options, where)
        checked = resolved if initial_weights else self.without_starting_weights(kind, name, resolved)
        try:
            part.cls.check_options(checked)
        except I2IError as exc:
            raise I2IError(f"[{where}] {exc}") from None
        return resolved

    def initial_weight_defaults(self, kind: str, name: str) -> dict[str, Any]:
        """The defaults of part `name`'s options that only pick its starting weights (Option.init_only)."""
        return {o.name: o.default for o in self.info(kind, name).options if o.init_only}

    def without_starting_weights(self, kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """`options` of part `name` with those that only pick its starting weights (Option.init_only) back at their
        defaults: for a part whose weights a checkpoint replaces (--resume, translate), so that it needs neither
        the file nor the download they name."""
        return {**options, **self.initial_weight_defaults(kind, name)}

    def create(self, kind: str, name: str, /, **options: Any) -> Any:
        """Build part `name` of `kind` with `options` (checked against its declared options)."""
        resolved = self.resolve_options(kind, name, options)
        return self.info(kind, name).cls(**resolved)

    def _check_kind(self, kind: str) -> None:
        kinds = list(self.kinds())
        if kind not in kinds:
            raise I2IError(f"unknown part kind {kind!r}: {_did_you_mean(kind, kinds)}(kinds: {', '.join(kinds)})")

    def commands(self, taken: Collection[str] = ()) -> dict[str, tuple[str, click.Command]]:
        """The click commands plugins add (hook i2i_commands), by name, each with its package.

        A name in `taken` (the core's commands) or added by a package of higher precedence is left out, with a
        warning naming both packages.
        """
        import click

        added: dict[str, tuple[str, click.Command]] = {}
        for package, impl in self._implementations("i2i_commands"):
            for command in impl.function() or []:
                if not (isinstance(command, click.Command) and command.name):
                    warnings.warn(f"plugin {impl.plugin_name!r} ({package}) returned {command!r} from i2i_commands,"
                                  " which is not a click command with a name", stacklevel=2)
                elif command.name in taken or command.name in added:
                    first = added[command.name][0] if command.name in added else CORE_PACKAGE
                    warnings.warn(f"command {command.name!r} of package {package!r} is not added: package"
                                  f" {first!r} has a command of that name", stacklevel=2)
                else:
                    added[command.name] = (package, command)
        return added

    def executors(self, taken: Collection[str] = ()) -> dict[str, type]:
        """The sweep executors plugins add (hook i2i_executors), by name; a name in `taken` (the core's) or added
        by a package of higher precedence is left out, with a warning naming both packages."""
        added: dict[str, tuple[str, type]] = {}
        for package, impl in self._implementations("i2i_executors"):
            for cls in impl.function() or []:
                name = getattr(cls, "name", "")
                if not (isinstance(cls, type) and isinstance(name, str) and name and hasattr(cls, "run")):
                    warnings.warn(f"plugin {impl.plugin_name!r} ({package}) returned {cls!r} from i2i_executors,"
                                  " which is not an executor class with a name", stacklevel=2)
                elif name in taken or name in added:
                    first = added[name][0] if name in added else CORE_PACKAGE
                    warnings.warn(f"executor {name!r} of package {package!r} is not added: package {first!r} has"
                                  " an executor of that name", stacklevel=2)
                else:
                    added[name] = (package, cls)
        return {name: cls for name, (_, cls) in added.items()}


def _clash_message(kind: str, name: str, packages: list[str]) -> str:
    """What a clash of part names is reported as: both (all) packages, who wins, how to pick the others."""
    listed = ", ".join(repr(p) for p in packages[:-1]) + f" and {packages[-1]!r}"
    others = " or ".join(f"'{p}:{name}'" for p in packages[1:])
    return (f"{kind} {name!r} is registered by packages {listed}: {name!r} means {packages[0]}'s; write {others}"
            f" for the other{'s' if len(packages) > 2 else ''}")


def _installed_version(distribution: str) -> str | None:
    """The version of an installed distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _did_you_mean(word: str, names: list[str]) -> str:
    close = closest(word, names)
    return f"did you mean {close!r}? " if close else ""


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Warnings raised inside, printed as one line each when it ends."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of every installed plugin, loaded once per process (I2I_BLOCK_PLUGINS is read then)."""
    registry = Registry()
    with _warnings_to_stderr():
        registry.load_entry_points()
    return registry


def plugin_commands(taken: Collection[str] = ()) -> dict[str, tuple[str, click.Command]]:
    """The commands installed third-party packages add, by name, with their package (see Registry.commands).

    The core's plugins are not loaded for this: the core's commands live in i2i.cli, and importing the stock
    parts would slow `i2i --help` down.
    """
    registry = Registry()
    with _warnings_to_stderr():
        registry.load_entry_points(core=False)
        return registry.commands(taken)


def create(kind: str, name: str, /, **options: Any) -> Any:
    """Build an installed part by kind and name, e.g. create("generator", "resnet", blocks=6)."""
    return default_registry().create(kind, name, **options)


def available(kind: str, pattern: str = "*") -> list[str]:
    """Names of the installed parts of `kind` matching `pattern`, e.g. available("generator", "res*")."""
    return default_registry().available(kind, pattern)


def describe(kind: str, name: str) -> dict[str, Any]:
    """Package, description and options of an installed part."""
    return default_registry().describe(kind, name)


def kinds() -> dict[str, type[Part]]:
    """Every installed kind of part by name, the core's first, e.g. {"generator": Generator, ...}."""
    return default_registry().kinds()
