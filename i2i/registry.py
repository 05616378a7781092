"""The plugin manager and the registry of parts: create(kind, name, **options), available(kind), describe."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

import pluggy

from i2i import hookspecs
from i2i.errors import I2IError
from i2i.options import Option, OptionSet, closest
from i2i.parts import KINDS, Part

ENTRY_POINT_GROUP = "i2i"


@dataclass(frozen=True)
class PartInfo:
    """A registered part: its class and where it came from."""

    kind: str
    name: str
    cls: type[Part]
    package: str
    plugin: str

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
        self._packages: dict[str, str] = {}
        self._loaded: set[tuple[str, str, str]] = set()
        self._parts: dict[str, dict[str, PartInfo]] | None = None

    def load_entry_points(self) -> None:
        """Load every plugin in the `i2i` entry-point group; a failing one is recorded and the rest load."""
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            package = ep.dist.name if ep.dist is not None else "?"
            if (package, ep.name, ep.value) in self._loaded:
                continue
            self._loaded.add((package, ep.name, ep.value))
            # Entry-point names are chosen per package, so two packages may both use e.g. "losses".
            name = ep.name if not self.manager.has_plugin(ep.name) else f"{ep.name}@{package}"
            try:
                plugin = ep.load()
                self.register(plugin, name=name, package=package)
            except Exception as exc:  # a broken third-party plugin must not take the others down
                failure = LoadFailure(ep.name, package, f"{type(exc).__name__}: {exc}")
                self.failures.append(failure)
                warnings.warn(str(failure), stacklevel=2)
        self.manager.check_pending()

    def register(self, plugin: ModuleType | object, name: str | None = None, package: str = "") -> None:
        """Register a plugin object (a module with @hookimpl functions) directly, e.g. from a script."""
        name = self.manager.register(plugin, name=name)
        self._packages[name] = package or getattr(plugin, "__name__", str(plugin)).split(".")[0]
        self._parts = None

    def _collect(self) -> dict[str, dict[str, PartInfo]]:
        if self._parts is not None:
            return self._parts
        parts: dict[str, dict[str, PartInfo]] = {kind: {} for kind in KINDS}
        self.conflicts = []  # found afresh with the parts, so a re-collection does not repeat them
        for kind, base in KINDS.items():
            hook_name = base.hook
            hook = getattr(self.manager.hook, hook_name)
            # Called one implementation at a time to know which package each part came from.
            for impl in reversed(hook.get_hookimpls()):
                plugin_name = impl.plugin_name
                package = self._packages.get(plugin_name, plugin_name)
                for cls in impl.function() or []:
                    if not (isinstance(cls, type) and issubclass(cls, Part) and cls.kind == kind and cls.name):
                        self.conflicts.append(
                            f"plugin {plugin_name!r} ({package}) returned {cls!r} from {hook_name}, which is not"
                            f" a {kind} class with a name")
                        continue
                    if cls.name in parts[kind]:
                        first = parts[kind][cls.name]
                        self.conflicts.append(
                            f"{kind} {cls.name!r} from package {package!r} is ignored: package"
                            f" {first.package!r} registered that name first")
                        continue
                    parts[kind][cls.name] = PartInfo(kind, cls.name, cls, package, plugin_name)
        self._parts = parts
        return parts

    def available(self, kind: str, pattern: str = "*") -> list[str]:
        """Names of the parts of `kind` that match the shell-style `pattern`, sorted."""
        _check_kind(kind)
        return sorted(n for n in self._collect()[kind] if fnmatch.fnmatch(n, pattern))

    def info(self, kind: str, name: str) -> PartInfo:
        """The registered part `name` of `kind`; an unknown name lists what exists and the closest match."""
        _check_kind(kind)
        found = self._collect()[kind].get(name)
        if found is None:
            names = self.available(kind)
            close = closest(name, names)
            hint = f"did you mean {close!r}? " if close else ""
            raise I2IError(f"unknown {kind} {name!r}: {hint}(available: {', '.join(names) or 'none'})")
        return found

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
        where = where or kind
        resolved = OptionSet(part.options).resolve(options, where)
        checked = dict(resolved)
        if not initial_weights:
            checked.update(self.initial_weight_defaults(kind, name))
        try:
            part.cls.check_options(checked)
        except I2IError as exc:
            raise I2IError(f"[{where}] {exc}") from None
        return resolved

    def initial_weight_defaults(self, kind: str, name: str) -> dict[str, Any]:
        """The defaults of part `name`'s options that only pick its starting weights (Option.init_only)."""
        return {o.name: o.default for o in self.info(kind, name).options if o.init_only}

    def create(self, kind: str, name: str, /, **options: Any) -> Any:
        """Build part `name` of `kind` with `options` (checked against its declared options)."""
        resolved = self.resolve_options(kind, name, options)
        return self.info(kind, name).cls(**resolved)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        close = closest(kind, list(KINDS))
        hint = f"did you mean {close!r}? " if close else ""
        raise I2IError(f"unknown part kind {kind!r}: {hint}(kinds: {', '.join(KINDS)})")


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of every installed plugin, loaded once per process."""
    registry = Registry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.load_entry_points()
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return registry


def create(kind: str, name: str, /, **options: Any) -> Any:
    """Build an installed part by kind and name, e.g. create("generator", "resnet", blocks=6)."""
    return default_registry().create(kind, name, **options)


def available(kind: str, pattern: str = "*") -> list[str]:
    """Names of the installed parts of `kind` matching `pattern`, e.g. available("generator", "res*")."""
    return default_registry().available(kind, pattern)


def describe(kind: str, name: str) -> dict[str, Any]:
    """Package, description and options of an installed part."""
    return default_registry().describe(kind, name)
