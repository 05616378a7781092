"""Recipe fuzzing: whatever keys, types, nesting and values a recipe or --set holds, checking it either resolves
or raises I2IError with a one-line message; never another exception."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import RECIPES, error_line
from i2i.errors import I2IError
from i2i.recipe import TABLES, load_recipe, resolve
from i2i.contract.registry import default_registry

# Bounded so the module takes seconds; derandomized so a failure reproduces on every run and machine.
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

PARTS = ("dataset", "method", "generator", "discriminator", "loss", "buffer", "augment")
REGISTRY = default_registry()
# Names the validation knows, so that fuzzed recipes reach past "unknown key" into the option checks.
KNOWN_KEYS = sorted({o.name for kind in PARTS for name in REGISTRY.available(kind)
                     for o in REGISTRY.info(kind, name).options}
                    | {"name", "weight", "seed", "device", "precision", "lr", "beta1", "epochs", "max_steps",
                       "batch_size", "workers", "adversarial", "cycle", "identity", "checkpoint_every"})
PART_NAMES = sorted({name for kind in PARTS for name in REGISTRY.available(kind)})
BASE = tomllib.loads((RECIPES / "quickstart.toml").read_text())

keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.sampled_from(TABLES), st.text(min_size=1, max_size=12))
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(10**30), max_value=10**30),  # past TOML's 64 bits, which tomllib still reads
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(PART_NAMES),
    st.sampled_from(["fp16", "bf16", "cuda:99", "mps", "auto", "", "AtoB", "🦓", "a\nb"]),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 1, 1)),
    st.dates(),
    st.times(),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(keys, inner, max_size=3)), max_leaves=8)
tables = st.dictionaries(st.one_of(st.sampled_from(TABLES), keys), st.one_of(st.dictionaries(keys, values,
                                                                                              max_size=5), values),
                         max_size=6)


@st.composite
def mutated(draw) -> dict[str, Any]:
    """The quick-start recipe with random keys set (at any depth), replaced or deleted."""
    tree = tomllib.loads(tomli_w.dumps(BASE))  # a deep copy
    for _ in range(draw(st.integers(1, 4))):
        node = tree
        for _depth in range(draw(st.integers(0, 2))):
            children = [k for k, v in node.items() if isinstance(v, dict)]
            if not children:
                break
            node = node[draw(st.sampled_from(sorted(children)))]
        if node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
        else:
            key = draw(keys)
        if draw(st.integers(0, 4)) == 0:
            node.pop(key, None)
        else:
            node[key] = draw(values)
    return tree


def _leaves(tree: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    return [leaf for key, value in tree.items()
            for leaf in (_leaves(value, (*path, key)) if isinstance(value, dict) else [(*path, key)])]


# Every key of the resolved quick-start recipe, defaults included: each option's own checks get attacked.
LEAVES = sorted(_leaves(resolve(BASE).tables))
nasty = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), -1, 0, -1.5, 1e308, 2**63 - 1,
                                   -(2**63), "", "nan", True, [], {}, [1], dt.date(2020, 1, 1)]), scalars)


@st.composite
def leaf_mutated(draw) -> dict[str, Any]:
    """The resolved quick-start recipe with one to three of its options set to hostile values."""
    tree = tomllib.loads(resolve(BASE).to_toml())
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):  # mostly one: a second error could hide the first
        *path, key = draw(st.sampled_from(LEAVES))
        node = tree
        for part in path:
            node = node[part]
        node[key] = draw(nasty)
    return tree


def check(load: Any) -> None:
    """`load()` resolves a recipe, or raises I2IError with a message on one line; a resolved recipe is one
    that `i2i run` can write out and read back unchanged (runs/NAME/recipe.toml)."""
    try:
        recipe = load()
    except I2IError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, repr(message)
        return
    again = resolve(tomllib.loads(recipe.to_toml()))
    assert again.tables == recipe.tables


def write(folder: Path, text: str) -> Path:
    path = folder / "recipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check_tree(folder: Path, tree: dict[str, Any]) -> None:
    """`check` on `tree` written as a recipe file."""
    try:
        text = tomli_w.dumps(tree)
    except (TypeError, ValueError):  # a value TOML cannot hold (tomli_w refuses it): not a recipe file
        return
    check(lambda: load_recipe(write(folder, text)))


@FUZZ
@given(tree=st.one_of(tables, mutated()))
def test_random_recipe_files(folder, tree):
    check_tree(folder, tree)


@FUZZ
@given(tree=leaf_mutated())
def test_hostile_option_values(folder, tree):
    check_tree(folder, tree)


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text_as_a_recipe_file(folder, text):
    check(lambda: load_recipe(write(folder, text)))


override_keys = st.lists(st.one_of(st.sampled_from(TABLES), st.sampled_from(KNOWN_KEYS), st.sampled_from(
    ["adversarial", "cycle", "", " ", "x"]), st.text(max_size=6)), min_size=1, max_size=4).map(".".join)
override_values = st.one_of(st.sampled_from(["1", "-1", "1e999", "nan", "inf", "true", "\"x\"", "[1, 2]", "{a = 1}",
                                             "unet", "", "=", "'", "[", "1979-05-27T07:32:00Z", "0x10"]),
                            st.sampled_from(PART_NAMES), st.text(max_size=10))
overrides = st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", override_keys, override_values),
                               st.text(max_size=15)), max_size=4)


@FUZZ
@given(sets=overrides)
def test_random_set_overrides(sets):
    check(lambda: load_recipe(RECIPES / "quickstart.toml", sets))


def quickstart_with(table: str, key: str, value: Any) -> str:
    """The quick-start recipe's TOML with [table] key = value."""
    tree = tomllib.loads((RECIPES / "quickstart.toml").read_text())
    node = tree
    for part in table.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    return tomli_w.dumps(tree)


@pytest.mark.parametrize("text, expected", [
    (quickstart_with("generator", "channels", float("nan")), "[generator] channels must be an int"),
    (quickstart_with("optim", "beta1", float("nan")), "[optim] beta1 = nan"),
    (quickstart_with("optim", "lr", float("inf")), "[optim] lr = inf"),
    (quickstart_with("loss.cycle", "weight", float("-inf")), "[loss.cycle] weight"),
    (quickstart_with("train", "log_every", dt.date(1979, 5, 27)), "[train] log_every must be an int"),
    (quickstart_with("data", "name", ["synthetic"]), "[data] name must be a string"),
    (quickstart_with("generator", "deep", {"deeper": {"x": 1}}), "unknown key 'deep' in [generator]"),
    (quickstart_with("loss", "cycle", 3), "loss.cycle must be a table"),
    ("[[run]]\nname = \"x\"\n", "run must be a table"),
    ("\x00\x01binary", "invalid TOML"),
])
def test_bad_recipes_through_the_cli_get_one_line(cli, tmp_path, text, expected):
    # tiny settings, so that a recipe the checks wrongly let through fails fast in training instead
    tiny = ["--set", "train.max_steps=1", "--set", "data.count=2", "--set", "data.load_size=32",
            "--set", "data.crop_size=32", "--set", "data.workers=0", "--set", "train.samples=0"]
    line = error_line(cli("run", write(tmp_path, text), *tiny, "--out", tmp_path / "run"))
    assert expected in line, line
    assert not (tmp_path / "run").exists(), "nothing is written before the recipe checks out"
