"""Declared options of a part: what a recipe table may hold, typed and checked before anything is built."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from i2i.errors import I2IError

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", list: "list of strings"}


@dataclass(frozen=True)
class Option:
    """One option a part accepts: name, type, default and a one-line help, with optional bounds or choices."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    #: True when the option only picks a network's starting weights (e.g. a pretrained encoder's file): a
    #: network rebuilt to receive saved weights (i2i translate, evaluate) takes the default instead, so it needs
    #: neither that file nor a download
    init_only: bool = False
    #: a deprecated recipe key this option took over (e.g. "train.checkpoint_every" for a callback's `every`): the
    #: old key keeps working, moved here, with one warning naming this option's key
    replaces: str = ""

    @property
    def type_name(self) -> str:
        """The type as written in recipes and `i2i info`."""
        return _TYPE_NAMES.get(self.type, self.type.__name__)

    def check(self, value: Any, where: str) -> Any:
        """Return `value` converted to this option's type, or raise I2IError naming `where`."""
        converted = _coerce(value, self.type)
        if converted is _BAD:
            raise I2IError(f"{where} must be {article(self.type_name)}, got {toml_value(value)}"
                           f" (e.g. {self.name} = {toml_value(self.default)})")
        value = converted
        if isinstance(value, float) and not math.isfinite(value):
            # nan passes every min/max comparison, and no option means anything at infinity
            raise I2IError(f"{where} = {toml_value(value)} is not a finite number (e.g. {self.name} ="
                           f" {toml_value(self.default)})")
        if self.choices is not None and value not in self.choices:
            close = closest(str(value), [str(c) for c in self.choices])
            hint = f"; did you mean {close!r}?" if close else ""
            raise I2IError(f"{where} = {toml_value(value)} is not one of {', '.join(map(toml_value, self.choices))}{hint}")
        if self.min is not None and value < self.min:
            raise I2IError(f"{where} = {toml_value(value)} is out of range: it must be >= {self.min}")
        if self.max is not None and value > self.max:
            raise I2IError(f"{where} = {toml_value(value)} is out of range: it must be <= {self.max}")
        return value


_BAD = object()


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        return value if isinstance(value, bool) else _BAD
    if isinstance(value, bool):
        return _BAD
    if kind is float and isinstance(value, (int, float)):
        return float(value)
    if kind is int and isinstance(value, int):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is list and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)  # a list option holds strings (e.g. layer names); a copy, so defaults stay unshared
    return _BAD


def article(word: str) -> str:
    """`word` with "a" or "an" before it."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def toml_value(value: Any) -> str:
    """A value as it would appear in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # JSON's string escapes are valid TOML, and keep a newline or control character on one line
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        shown = [toml_value(item) for item in value[:4]]
        return "[" + ", ".join(shown + ["..."] * (len(value) > 4)) + "]"
    return repr(value)


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `word`, or None when nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


@dataclass
class OptionSet:
    """An ordered collection of options with validation of a whole table against it."""

    options: tuple[Option, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self._by_name = {o.name: o for o in self.options}

    def __iter__(self):
        return iter(self.options)

    def names(self) -> list[str]:
        """Option names in declaration order."""
        return list(self._by_name)

    def resolve(self, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Check `values` against the options and return them with every default filled in."""
        resolved = {}
        for key, value in values.items():
            if key not in self._by_name:
                raise I2IError(unknown_key_message(where, key, self.names()))
            resolved[key] = self._by_name[key].check(value, f"[{where}] {key}")
        for option in self.options:
            resolved.setdefault(option.name, option.default)
        return {name: resolved[name] for name in self.names()}


def unknown_key_message(where: str, key: str, known: list[str]) -> str:
    """One line for an unknown key: the table, the key, the closest known key and the full list."""
    close = closest(key, known)
    hint = f"did you mean {close!r}? " if close else ""
    listing = ", ".join(known) if known else "none"
    return f"unknown key {key!r} in [{where}]: {hint}(known keys: {listing})"
