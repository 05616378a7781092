"""A new kind of part is one declaration plus its base class: tests/plugins/i2i_regularizers declares the kind
"regularizer" (its base class, returned from i2i_kinds), adds one part of it and a method that builds it from a
`[regularizer]` recipe table, and everything else follows: `i2i list` / `i2i info`, recipe validation, the part
factory, `check_part`, and its state in checkpoints across --resume."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest
import tomli_w
import torch

from conftest import assert_same_final_state, error_line, run_module
from i2i.api import Generator, Method, Part, hookimpl
from i2i.contract.kinds import KINDS
from i2i.contract.registry import Registry
from i2i.errors import I2IError
from i2i.recipe import resolve
from i2i.testing import check_part
from packages import importable, pip_install

PACKAGE = "i2i_regularizers"
RECIPE = {
    "run": {"name": "smooth", "seed": 0, "device": "cpu"},
    "data": {"name": "synthetic", "count": 4, "load_size": 36, "crop_size": 32, "workers": 0},
    "method": {"name": "smooth"},
    "generator": {"name": "resnet", "blocks": 1, "channels": 4},
    "regularizer": {"name": "tv", "weight": 0.5, "warmup": 4},
    "train": {"epochs": 1, "decay_epochs": 0, "max_steps": 4, "log_every": 1},
    "callback": {"checkpoints": {"every": 2}, "samples": {"images": 1}},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The package installed by pip into a folder of its own."""
    folder = tmp_path_factory.mktemp("regularizers")
    pip_install(folder, PACKAGE)
    return folder


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "smooth.toml"
    path.write_text(tomli_w.dumps(RECIPE))
    return path


@pytest.fixture(scope="module")
def whole(site, recipe, tmp_path_factory) -> Path:
    """An uninterrupted 4-step run of the method with its [regularizer] table."""
    run = tmp_path_factory.mktemp("whole") / "run"
    result = run_module("run", recipe, "--out", run, env={"PYTHONPATH": str(site)})
    assert result.code == 0, result.err
    return run


@pytest.fixture
def registry(site, monkeypatch) -> Registry:
    """A registry in this process that sees the core and the installed package."""
    monkeypatch.setenv("I2I_BLOCK_PLUGINS", "")
    with importable(site, PACKAGE):
        registry = Registry()
        registry.load_entry_points()
        yield registry


def test_list_and_info_show_the_new_kind(site, cli):
    env = {"PYTHONPATH": str(site), "COLUMNS": "200"}
    listing = run_module("list", "regularizer", env=env)
    assert listing.code == 0, listing.err
    rows = [line.split()[:3] for line in listing.out.splitlines() if line.startswith(" regularizer")]
    assert rows == [["regularizer", "tv", "i2i-regularizers"]]
    everything = run_module("list", env=env).out
    kinds = {line.split()[0] for line in everything.splitlines()[1:] if line.strip()}
    assert {"regularizer", "generator", "method"} <= kinds and " smooth " in everything
    info = run_module("info", "regularizer", "tv", env=env)
    assert info.code == 0, info.err
    assert "regularizer tv (i2i-regularizers): Total variation" in info.out
    assert "weight" in info.out and "warmup" in info.out
    typo = run_module("list", "regularizr", env=env)
    assert typo.code == 2 and "did you mean 'regularizer'?" in typo.err
    # without the package (this process has not installed it), the kind does not exist
    assert "'regularizer' is not a kind of part" in cli("info", "regularizer", "tv").err


def test_a_method_builds_the_new_kind_from_its_table_and_uses_it(whole):
    saved = (whole / "recipe.toml").read_text()
    assert '[regularizer]\nname = "tv"\nweight = 0.5\nwarmup = 4' in saved
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    tv = [record["losses"]["G_tv"] for record in records]
    assert len(tv) == 4 and all(value > 0 for value in tv)
    state = json.loads((whole / "checkpoints" / "step-00000004" / "training.json").read_text())["state"]
    assert state["regularizer"] == {"calls": 4}  # the part's own state, under its table's name


def test_its_state_survives_resume_bit_for_bit(site, recipe, whole, tmp_path):
    env = {"PYTHONPATH": str(site)}
    run = tmp_path / "resumed"
    first = run_module("run", recipe, "--set", "train.max_steps=2", "--out", run, env=env)
    assert first.code == 0, first.err
    second = run_module("run", recipe, "--out", run, "--resume", env=env)
    assert second.code == 0, second.err
    # the ramp goes on from the restored count, so the penalties logged after resuming are those of the whole run
    assert_same_final_state(whole, run, 4)


def test_a_bad_option_in_the_table_of_the_new_kind_is_refused_naming_the_key(site, recipe, tmp_path):
    run = tmp_path / "run"
    line = error_line(run_module("run", recipe, "--set", "regularizer.wieght=2", "--out", run,
                                 env={"PYTHONPATH": str(site)}))
    assert "[regularizer]" in line and "'wieght'" in line and "did you mean 'weight'" in line, line
    assert not run.exists()


@pytest.mark.parametrize("table, fragments", [
    ({"name": "tv", "warmup": -1}, [r"\[regularizer\] warmup", ">= 0"]),
    ({"name": "tvv"}, ["unknown regularizer 'tvv'", "did you mean 'tv'"]),
    ({"name": "tv", "weight": "heavy"}, [r"\[regularizer\] weight", "float"]),
])
def test_every_value_of_the_table_is_checked_before_anything_is_built(registry, table, fragments):
    with pytest.raises(I2IError) as error:
        resolve({**RECIPE, "regularizer": table}, registry)
    assert all(re.search(fragment, str(error.value)) for fragment in fragments), error.value


def test_a_table_of_the_new_kind_needs_a_method_that_builds_from_it(registry):
    tree = {**RECIPE, "method": {"name": "cycle"}, "discriminator": {"name": "patchgan"},
            "buffer": {"name": "image_pool"}}
    with pytest.raises(I2IError, match=r"\[regularizer\] is not used by method 'cycle'"):
        resolve(tree, registry)
    without = {k: v for k, v in RECIPE.items() if k != "regularizer"}
    with pytest.raises(I2IError, match=r"\[regularizer\] needs a name: .*available regularizers: tv"):
        resolve(without, registry)
    with pytest.raises(I2IError, match="unknown key 'regularizr' at top level.*did you mean 'regularizer'"):
        resolve({**RECIPE, "regularizr": {"name": "tv"}}, registry)


def test_create_and_check_part_take_the_new_kind(registry):
    tv = registry.create("regularizer", "tv", weight=2.0)
    images = torch.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    assert float(tv(images)) > 0 and tv.state_dict() == {"calls": 1}
    part = check_part("regularizer", "tv", registry=registry, weight=0.5, warmup=3)
    assert part.warmup == 3

    class Misread(registry.info("regularizer", "tv").cls):
        """A total variation that reads back a key its state_dict does not write."""

        name = "misread"

        def load_state_dict(self, state):
            self.calls = state["count"]

    class Rounded(registry.info("regularizer", "tv").cls):
        """A total variation that restores its weight as a whole number."""

        name = "rounded"

        def state_dict(self):
            return {"calls": self.calls, "weight": self.weight}

        def load_state_dict(self, state):
            self.calls, self.weight = state["calls"], int(state["weight"])

    registry.register(plugin(i2i_parts=[Misread, Rounded]), name="faulty", package="i2i-faulty-regularizers")
    with pytest.raises(AssertionError, match=r"regularizer 'misread' .*load_state_dict\(\) fails .*'count'"):
        check_part("regularizer", "misread", registry=registry)
    with pytest.raises(AssertionError, match=r"regularizer 'rounded' .*gives another state_dict\(\)"):
        check_part("regularizer", "rounded", registry=registry, weight=0.5)


# -- the registry's rules, on plugins registered in this process ---------------------------------------------------


class Upscaler(Part):
    """Enlarges images by an integer factor."""

    kind = "upscaler"


class Nearest(Upscaler):
    """Nearest-neighbour upscaling."""

    name = "nearest"


class Stray(Part):
    """A part whose kind nobody declares."""

    kind = "stray"
    name = "lost"


class Plain(Generator):
    """A generator registered through i2i_parts."""

    name = "plain"


def plugin(**hooks) -> types.SimpleNamespace:
    """A plugin object holding `hooks` (name -> list returned) as hook implementations."""
    return types.SimpleNamespace(**{name: hookimpl(lambda found=found: found) for name, found in hooks.items()})


def test_the_core_declares_its_kinds_as_plugins_do():
    registry = Registry()
    assert registry.kinds() == KINDS
    assert list(KINDS)[:3] == ["generator", "discriminator", "loss"]


def test_one_hook_registers_parts_of_every_kind():
    registry = Registry()
    registry.register(plugin(i2i_kinds=[Upscaler], i2i_parts=[Nearest, Plain, Stray]), name="up", package="i2i-up")
    assert list(registry.kinds())[-1] == "upscaler"
    assert registry.available("upscaler") == ["nearest"] and registry.available("generator") == ["plain"]
    assert isinstance(registry.create("upscaler", "nearest"), Nearest)
    assert registry.describe("upscaler", "nearest")["package"] == "i2i-up"
    stray = [c for c in registry.conflicts if "Stray" in c]
    assert len(stray) == 1 and "kind 'stray' no installed package declares" in stray[0] and "i2i_kinds" in stray[0]
    with pytest.raises(I2IError, match="unknown part kind 'stray'"):
        registry.available("stray")


def test_a_kind_two_packages_declare_goes_to_the_first_and_the_clash_is_named():
    class Other(Part):
        """Another upscaler base."""

        kind = "upscaler"

    registry = Registry()
    registry.register(plugin(i2i_kinds=[Other]), name="b", package="i2i-b")
    registry.register(plugin(i2i_kinds=[Upscaler], i2i_parts=[Nearest]), name="a", package="i2i-a")
    assert registry.kinds()["upscaler"] is Upscaler  # i2i-a precedes i2i-b, whatever the registration order
    assert "kind 'upscaler' is declared by packages 'i2i-a' and 'i2i-b': i2i-a's is used" in registry.conflicts


@pytest.mark.parametrize("kind, problem", [("data", "cannot be a recipe table"), ("Up-scaler", "lower-case"),
                                           ("generator", "declared by packages 'i2i-toolkit' and 'i2i-x'")])
def test_a_kind_that_cannot_be_a_recipe_table_or_is_taken_is_refused(kind, problem):
    base = type("Base", (Part,), {"kind": kind, "__doc__": "A base."})
    registry = Registry()
    registry.register(plugin(i2i_kinds=[base]), name="x", package="i2i-x")
    assert registry.kinds().get(kind) is KINDS.get(kind)  # the core's kind stays; the others are not added
    assert any(problem in c for c in registry.conflicts), registry.conflicts


def test_the_part_factory_builds_only_tables_the_method_lists(registry):
    class Sneaky(Method):
        """Builds from a table it does not declare."""

        name = "sneaky"
        parts = ("generator",)

        def build(self, parts):
            parts.build("regularizer")

    from i2i.engine.setup import setup_method

    registry.register(plugin(i2i_parts=[Sneaky]), name="sneaky", package="i2i-sneaky")
    tree = {k: v for k, v in RECIPE.items() if k != "regularizer"}
    recipe = resolve({**tree, "method": {"name": "sneaky"}}, registry)
    dataset = registry.create("dataset", "synthetic", count=1)
    with pytest.raises(I2IError, match=r"method 'sneaky' builds from \[regularizer\], which it does not list"):
        setup_method(recipe, registry, dataset, initial_weights=True)


def test_the_builder_records_every_part_with_its_table(registry):
    from i2i.engine.setup import setup_method

    recipe = resolve(RECIPE, registry)
    method, builder = setup_method(recipe, registry, registry.create("dataset", "synthetic", count=1), True)
    assert {key: (r.table, r.kind, r.name) for key, r in builder.records.items()} == {
        "generator": ("generator", "generator", "resnet"),
        "regularizer": ("regularizer", "regularizer", "tv"),
        "loss.identity": ("loss.identity", "loss", "l1")}
    assert builder.records["regularizer"].options == {"weight": 0.5, "warmup": 4}
    assert builder.records["regularizer"].part is method.regularizer
    # what checkpoints hold of them: the stateful part of the new kind; not the network, nor the stateless loss
    assert builder.stateful() == {"regularizer": method.regularizer}
