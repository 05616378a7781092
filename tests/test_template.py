"""The plugin template (plugins/template) and CONTRIBUTING.md tell authors the same renames, and those are the
template's own names: replaced as told in a copy, none is left. Nothing says entry-point names must be unique among
packages: they are per package (i2i/contract/registry.py `load_entry_points`; tests/test_plugins.py installs two
packages whose entry points share a name, and both load)."""

from __future__ import annotations

import ast
import re
import shutil
import tomllib
from pathlib import Path

from conftest import ROOT

TEMPLATE = ROOT / "plugins" / "template"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
#: a rename as both documents list them: "- `old` → `new` (what it is)"
RENAME = re.compile(r"^- `([^`]+)` → `([^`]+)`", re.MULTILINE)
#: what a copy of the template holds besides its sources (left by an editable install or a test run)
BUILD_LEFTOVERS = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache")


def section(text: str, heading: str) -> str:
    """The markdown section under `heading`, up to the next heading of any level."""
    rest = text[text.index(heading) + len(heading):]
    end = re.search(r"^#{1,6} ", rest, re.MULTILINE)
    return rest[:end.start()] if end else rest


def renames_in(text: str) -> dict[str, str]:
    """The `old` → `new` pairs a text lists."""
    pairs = RENAME.findall(text)
    assert pairs, "no list of renames (- `old` → `new`) found"
    return dict(pairs)


def contributing_renames() -> dict[str, str]:
    return renames_in(section(CONTRIBUTING.read_text(), "### 1. Start from the template"))


def template_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and not any(part.endswith(".egg-info") for part in p.parts))


def template_names(root: Path = TEMPLATE) -> set[str]:
    """The names the template gives its package: the distribution, the import package, and every part's `name`."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    packages = [p for p in (root / "src").iterdir() if p.is_dir() and not p.name.endswith(".egg-info")
                and not p.name.startswith((".", "_"))]
    assert len(packages) == 1, packages
    parts = set()
    for module in packages[0].glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ClassDef):
                parts |= {statement.value.value for statement in node.body if isinstance(statement, ast.Assign)
                          and [getattr(t, "id", None) for t in statement.targets] == ["name"]
                          and isinstance(statement.value, ast.Constant)}
    assert parts, f"no part with a `name` in {packages[0]}"
    return {project["name"], packages[0].name, *parts}


def test_contributing_and_the_template_readme_list_the_template_names_to_rename():
    told = contributing_renames()
    assert set(told) == template_names()  # every name the template uses, and none it does not
    assert renames_in((TEMPLATE / "README.md").read_text()) == told  # the template's README tells the same


def test_replacing_the_names_as_told_leaves_none_of_the_template(tmp_path):
    told = contributing_renames()
    copy = Path(shutil.copytree(TEMPLATE, tmp_path / "mine", ignore=BUILD_LEFTOVERS))
    for file in template_files(copy):
        text = file.read_text()
        for old, new in told.items():
            text = text.replace(old, new)
        file.write_text(text)
    package = next(old for old in told if (copy / "src" / old).is_dir())
    (copy / "src" / package).rename(copy / "src" / told[package])

    # nor a name of the template's under another spelling: its stems without the i2i- prefix (the entry point
    # `myparts` once was one), in any file, prose included
    stems = {re.sub(r"^i2i[-_]", "", old) for old in told}
    left = {(str(f.relative_to(copy)), stem) for f in template_files(copy) for stem in stems if stem in f.read_text()}
    assert not left, f"template names left after the renames CONTRIBUTING.md lists: {sorted(left)}"
    assert template_names(copy) == set(told.values())
    project = tomllib.loads((copy / "pyproject.toml").read_text())["project"]
    for name, value in project["entry-points"]["i2i"].items():  # each still names a module of the package
        module = value.split(":")[0]
        assert (copy / "src" / (module.replace(".", "/") + ".py")).is_file(), (name, value)


def test_nothing_says_entry_point_names_must_be_unique_among_packages():
    texts = {str(f.relative_to(ROOT)): f.read_text() for f in [*template_files(TEMPLATE), CONTRIBUTING,
                                                               ROOT / "README.md"]
             if f.suffix in (".md", ".toml", ".py")}
    claims = []
    for where, text in texts.items():
        # sentences, across the line breaks of prose and of comments
        flat = re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)
        for sentence in re.split(r"(?<=[.;:])\s+", flat):
            if re.search(r"entry[- ]points?", sentence, re.IGNORECASE) and "unique" in sentence.lower():
                claims.append(f"{where}: {sentence}")
    assert not claims, claims
    # and where it is said, it is said as the registry does it: per package
    assert "Entry-point names are local to your package" in CONTRIBUTING.read_text()
    comment = "".join(line for line in (TEMPLATE / "pyproject.toml").read_text().splitlines(True)
                      if line.startswith("#"))
    assert "entry-point names are per package" in re.sub(r"\s*\n#\s*", " ", comment)
