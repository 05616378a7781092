"""Packages that give a part the same name, and commands plugins add: real packages installed by pip.

Which package a plain name means is decided by distribution names (the core first), never by entry-point names
or the order of installation. The clash packages' entry-point names run against their distribution names:
i2i-clash-a's is zz_clash, i2i-clash-b's aa_clash, i2i-clash-c's mm_clash; so the pair (a, b) has the first
distribution with the last entry-point name and the pair (b, c) the first distribution with the first name.
Each package is installed into a folder of its own, so a test sees the packages it puts on PYTHONPATH.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import RECIPES, TINY, error_line, run_module
from i2i.errors import I2IError
from i2i.contract.registry import Registry
from test_plugins import pip_install

PACKAGES = ("i2i_clash_a", "i2i_clash_b", "i2i_clash_c", "i2i_hello", "i2i_broken")
CLASH_AB = ("generator 'clashnet' is registered by packages 'i2i-clash-a' and 'i2i-clash-b': 'clashnet' means"
            " i2i-clash-a's; write 'i2i-clash-b:clashnet' for the other")


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    """Each test package installed into its own folder (once for the module, the pip runs side by side)."""
    folders = {package: tmp_path_factory.mktemp(package) for package in PACKAGES}
    with ThreadPoolExecutor(len(folders)) as pool:
        list(pool.map(pip_install, folders.values(), folders))
    return folders


def env_with(sites: dict[str, Path], *packages: str, block: str = "") -> dict[str, str]:
    """The environment of a process that has `packages` installed (in that order on the path) and blocks `block`."""
    return {"PYTHONPATH": os.pathsep.join(str(sites[p]) for p in packages), "I2I_BLOCK_PLUGINS": block,
            "COLUMNS": "200"}


def registry_with(sites: dict[str, Path], monkeypatch, *packages: str, block: str = "") -> Registry:
    """A fresh registry in this process that sees the core and `packages`, with I2I_BLOCK_PLUGINS = `block`."""
    for package in reversed(packages):
        monkeypatch.syspath_prepend(str(sites[package]))
    monkeypatch.setenv("I2I_BLOCK_PLUGINS", block)
    registry = Registry()
    registry.load_entry_points()
    return registry


@pytest.mark.parametrize("packages, first", [
    (("i2i_clash_a", "i2i_clash_b"), "i2i-clash-a"),  # the first distribution has the last entry-point name
    (("i2i_clash_c", "i2i_clash_b"), "i2i-clash-b"),  # ... the first entry-point name, and is installed after
])
def test_the_first_distribution_wins_whatever_the_entry_point_names(sites, packages, first):
    info = run_module("info", "generator", "clashnet", env=env_with(sites, *packages))
    assert info.code == 0, info.err
    assert f"generator clashnet ({first}): A small conv generator, as packaged by {first}." in info.out


def test_list_names_both_packages_and_the_qualified_name_picks_the_other(sites):
    env = env_with(sites, "i2i_clash_b", "i2i_clash_a")
    listing = run_module("list", "generator", env=env)
    assert listing.code == 0, listing.err
    assert f"warning: {CLASH_AB}" in listing.err
    rows = [line.split() for line in listing.out.splitlines() if "clashnet" in line]
    assert [row[1:3] for row in rows] == [["clashnet", "i2i-clash-a"]]
    info = run_module("info", "generator", "I2I_Clash_B:clashnet", env=env)
    assert info.code == 0, info.err
    assert "(i2i-clash-b): A small conv generator, as packaged by i2i-clash-b." in info.out


def test_the_rule_holds_in_either_path_order_and_for_three_packages(sites, monkeypatch):
    for order in [("i2i_clash_a", "i2i_clash_b", "i2i_clash_c"), ("i2i_clash_c", "i2i_clash_b", "i2i_clash_a")]:
        with monkeypatch.context() as patch:
            registry = registry_with(sites, patch, *order)
            assert registry.info("generator", "clashnet").package == "i2i-clash-a"
            assert registry.info("generator", "resnet").package == "i2i-toolkit"
            assert registry.available("generator").count("clashnet") == 1
            assert registry.conflicts == [
                "generator 'clashnet' is registered by packages 'i2i-clash-a', 'i2i-clash-b' and 'i2i-clash-c':"
                " 'clashnet' means i2i-clash-a's; write 'i2i-clash-b:clashnet' or 'i2i-clash-c:clashnet' for the"
                " others"]


def test_qualified_names_take_the_package_as_listed_or_normalized(sites, monkeypatch):
    registry = registry_with(sites, monkeypatch, "i2i_clash_a", "i2i_clash_b")
    for name in ["i2i-clash-b:clashnet", "I2I_Clash_B:clashnet", "i2i_clash.b:clashnet"]:
        assert registry.info("generator", name).package == "i2i-clash-b"
        assert registry.describe("generator", name)["package"] == "i2i-clash-b"
    # the core as `i2i list` shows it, and by its old name (recipes and run folders written before say "i2i:")
    assert registry.info("generator", "i2i-toolkit:resnet").package == "i2i-toolkit"
    assert registry.info("generator", "i2i:resnet").package == "i2i-toolkit"
    assert type(registry.create("generator", "i2i-clash-b:clashnet", channels=4, blocks=1)).__module__ == "i2i_clash_b"
    with pytest.raises(I2IError, match=r"^unknown package 'i2i-clsh-b' in generator 'i2i-clsh-b:clashnet': did you"
                                       r" mean 'i2i-clash-b'\? \(plugin packages: i2i-clash-a, i2i-clash-b,"
                                       r" i2i-toolkit\)$"):
        registry.info("generator", "i2i-clsh-b:clashnet")
    with pytest.raises(I2IError, match=r"^package 'i2i-clash-b' has no generator 'unet_128': \(its generators:"
                                       r" clashnet\)$"):
        registry.info("generator", "i2i-clash-b:unet_128")


def test_a_clashing_name_warns_once_when_used_and_a_qualified_one_does_not(sites, monkeypatch):
    registry = registry_with(sites, monkeypatch, "i2i_clash_a", "i2i_clash_b")
    with pytest.warns(UserWarning) as caught:
        registry.resolve_options("generator", "clashnet", {})
        registry.resolve_options("generator", "clashnet", {})
        registry.resolve_options("generator", "i2i-clash-b:clashnet", {})
    assert [str(w.message) for w in caught] == [CLASH_AB]


def test_a_recipe_naming_a_qualified_part_trains(sites, tmp_path):
    recipe = (RECIPES / "quickstart.toml").read_text().replace('name = "resnet"', 'name = "i2i-clash-b:clashnet"')
    (tmp_path / "clash.toml").write_text(recipe)
    # with a plugin command installed too: a core command does not load plugin commands
    env = env_with(sites, "i2i_clash_a", "i2i_clash_b", "i2i_hello")
    result = run_module("run", tmp_path / "clash.toml", *TINY, "--set", "train.max_steps=2", "--out",
                        tmp_path / "run", env=env)
    assert result.code == 0, result.err
    assert "clashnet" not in result.err and "command" not in result.err  # qualified: no clash warning
    assert 'name = "i2i-clash-b:clashnet"' in (tmp_path / "run" / "recipe.toml").read_text()
    assert (tmp_path / "run" / "checkpoints" / "step-00000002" / "G_A.safetensors").exists()


def test_a_blocked_package_is_not_loaded_and_the_other_wins(sites, monkeypatch):
    with pytest.warns(UserWarning, match="I2I_BLOCK_PLUGINS names 'i2i', which is ignored: the core package cannot"
                                         " be blocked"):
        registry = registry_with(sites, monkeypatch, "i2i_clash_a", "i2i_clash_b", "i2i_broken",
                                 block="I2I_Clash_A, i2i-broken,i2i")
    assert registry.failures == []  # i2i-broken, which fails to import, was not imported
    assert registry.info("generator", "clashnet").package == "i2i-clash-b" and registry.conflicts == []
    assert registry.info("generator", "resnet").package == "i2i-toolkit"
    with pytest.raises(I2IError, match=r"^generator 'i2i-clash-a:clashnet': package 'i2i-clash-a' is blocked by"
                                       r" I2I_BLOCK_PLUGINS"):
        registry.info("generator", "i2i-clash-a:clashnet")
    with pytest.raises(I2IError, match=r"^unknown generator 'brokennet': .*\(available: .*\); package 'i2i-broken' is"
                                       r" blocked by I2I_BLOCK_PLUGINS; package 'i2i-clash-a' is blocked by"
                                       r" I2I_BLOCK_PLUGINS$"):
        registry.info("generator", "brokennet")


def test_the_block_variable_reaches_the_command_line(sites):
    env = env_with(sites, "i2i_clash_a", block="i2i-clash-a")
    line = error_line(run_module("info", "generator", "clashnet", env=env))
    assert line.startswith("error: unknown generator 'clashnet': ")
    assert line.endswith("; package 'i2i-clash-a' is blocked by I2I_BLOCK_PLUGINS")


def test_a_plugin_adds_a_command(sites):
    hello = run_module("hello", "--name", "Ada", env=env_with(sites, "i2i_hello"))
    assert hello.code == 0, hello.err
    assert hello.out == "hello from i2i-hello, Ada\n"


def test_help_lists_plugin_commands_and_warns_of_taken_names(sites):
    listing = run_module("--help", env=env_with(sites, "i2i_hello", "i2i_clash_c"))
    assert listing.code == 0, listing.err
    commands = {line.split()[0]: line.split()[1:] for line in listing.out.split("Commands:")[1].splitlines()
                if line.strip()}
    assert commands["hello"] == ["Greet", "from", "i2i-clash-c."] and commands["list"][:2] == ["List", "installed"]
    assert "run" in commands and "info" in commands
    # i2i-clash-c also adds `hello` and comes first; i2i-hello's `list` is the core's name
    warnings = [line for line in listing.err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: command 'hello' of package 'i2i-hello' is not added: package 'i2i-clash-c' has a command of that"
        " name",
        "warning: command 'list' of package 'i2i-hello' is not added: package 'i2i-toolkit' has a command of that"
        " name"]
