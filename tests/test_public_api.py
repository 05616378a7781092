"""The public API for plugin authors (i2i.api): complete, documented, and the only i2i any plugin uses, the stock
ones included: whatever they do, a third-party package can do too."""

from __future__ import annotations

import ast
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import i2i
import i2i.api
from conftest import ROOT

#: what a third-party package may import of i2i
ALLOWED = {"i2i", "i2i.api", "i2i.testing"}
#: the packages written as a third party writes them
PLUGINS = [ROOT / "plugins" / "i2i_stock", ROOT / "plugins" / "i2i_extras", ROOT / "plugins" / "template",
           ROOT / "tests" / "plugins"]
CORE_MODULES = {m.name for m in pkgutil.iter_modules(i2i.__path__)}


def sources(folder: Path) -> Iterator[Path]:
    """The Python files of a package folder, without build leftovers."""
    for path in sorted(folder.rglob("*.py")):
        if not {"build", "__pycache__"} & set(path.relative_to(folder).parts) and ".egg-info" not in str(path):
            yield path


def i2i_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every i2i or i2i_stock module `path` imports or reaches as an attribute of `i2i`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "i2i":  # `from i2i import parts` imports a submodule
                found += [(node.lineno, f"i2i.{a.name}") for a in node.names if a.name in CORE_MODULES]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "i2i"
              and node.attr in CORE_MODULES):
            found.append((node.lineno, f"i2i.{node.attr}"))
    return [(line, m) for line, m in found if m.split(".")[0] in ("i2i", "i2i_stock")]


@pytest.mark.parametrize("folder", PLUGINS, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_the_public_api(folder: Path):
    files = list(sources(folder))
    assert files, f"no Python files under {folder}"
    # a package's own modules are its business (i2i_stock.steps for the stock methods)
    own = "i2i_stock" if folder.name == "i2i_stock" else None
    bad = [f"{path.relative_to(ROOT)}:{line} imports {module}" for path in files
           for line, module in i2i_imports(path) if module not in ALLOWED and module.split(".")[0] != own]
    assert not bad, "plugins may import only i2i, i2i.api and i2i.testing:\n" + "\n".join(bad)


def test_the_core_imports_no_stock_module():
    bad = [f"{path.relative_to(ROOT)}:{line} imports {module}" for path in sources(ROOT / "i2i")
           for line, module in i2i_imports(path) if module.split(".")[0] == "i2i_stock"]
    assert not bad, "\n".join(bad)


def test_every_exported_name_resolves_and_is_documented():
    names = i2i.api.__all__
    assert len(names) == len(set(names))
    missing = [n for n in names if not hasattr(i2i.api, n)]
    assert not missing, f"i2i.api.__all__ names what it lacks: {missing}"
    undocumented = [n for n in names if f"``{n}``" not in i2i.api.__doc__ and f"``{n}(" not in i2i.api.__doc__]
    assert not undocumented, f"i2i.api's docstring does not say what these are for: {undocumented}"
