"""Installing plugin packages with pip, as users do, without ever changing the environment that runs the tests.

Every install goes into a folder under pytest's temporary directory: `pip_install` into a plain folder that a
subprocess gets on its PYTHONPATH (or this process on sys.path, through `importable`), `Environment` into a
virtual environment of its own for tests that also uninstall. A test that fails, is interrupted (Ctrl-C) or is
killed therefore leaves nothing installed behind, and test runs side by side do not see each other's packages.
Sources are copied first: pip builds a local folder in place, and its build/ and *.egg-info leftovers would
otherwise land in the repository (and a stale build/lib be installed as if it were the source).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parent / "plugins"
SOURCES_ONLY = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")
INSTALL = ("install", "--quiet", "--no-deps", "--no-build-isolation")


def pip(*args: str, python: Path | str = sys.executable) -> subprocess.CompletedProcess:
    """Run pip for the interpreter `python` (by default the one running the tests); output captured."""
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *map(str, args)],
                          capture_output=True, text=True, check=False)


def copy_sources(package: Path, into: Path) -> Path:
    """A copy of a package's source folder under `into`, without build leftovers."""
    return Path(shutil.copytree(package, into / package.name, ignore=SOURCES_ONLY))


def _sources(package: str | Path) -> Path:
    """A package's source folder: a name under tests/plugins, or a path."""
    return PLUGINS / package if isinstance(package, str) and os.sep not in package else Path(package)


def _install(pip_args: list[str], packages: tuple[str | Path, ...], scratch: Path,
             python: Path | str = sys.executable) -> None:
    """Copy the packages' sources under `scratch` and pip-install the copies; fail the test naming pip's error."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".sources-") as folder:
        copies = [copy_sources(_sources(p), Path(folder) / str(i)) for i, p in enumerate(packages)]
        done = pip(*INSTALL, *pip_args, *copies, python=python)
    if done.returncode != 0:
        pytest.fail(f"pip could not install {', '.join(map(str, packages))}: {done.stderr.strip()}")


def pip_install(target: Path, *packages: str | Path) -> dict[str, str]:
    """Install packages (names of folders under tests/plugins, or source folders) into the folder `target` with
    pip; return the environment variables under which a subprocess sees them."""
    target.mkdir(parents=True, exist_ok=True)
    _install(["--target", str(target)], packages, target.parent)
    return {"PYTHONPATH": str(target)}


@contextlib.contextmanager
def importable(folder: Path, *modules: str) -> Iterator[None]:
    """Packages installed into `folder` importable (and their entry points found) in this process meanwhile;
    after, the folder leaves sys.path and the modules named (with their submodules) are forgotten."""
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.split(".")[0] in modules]:
            del sys.modules[name]
        importlib.invalidate_caches()


class Environment:
    """A virtual environment under `folder` that also sees every package of the one running the tests (i2i,
    torch, pip, setuptools), for tests that install and uninstall for real: pip installs into its own
    site-packages and removes from there, and the environment running the tests never changes."""

    def __init__(self, folder: Path) -> None:
        venv.EnvBuilder(symlinks=os.name != "nt", with_pip=False).create(folder)
        self.folder = folder
        self.python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        asked = subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True)
        self.site = Path(asked.stdout.strip())
        # addsitedir (not a bare path line) so the base's own .pth files run too: the editable install of i2i.
        bases = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
        lines = [f"import site; site.addsitedir({base!r})\n" for base in bases if Path(base).is_dir()]
        (self.site / "_i2i_tests_base.pth").write_text("".join(lines))

    @property
    def env(self) -> dict[str, str]:
        """Environment variables under which a subprocess of the test interpreter sees what is installed here."""
        return {"PYTHONPATH": str(self.site)}

    def install(self, *packages: str | Path) -> None:
        """pip-install packages (names under tests/plugins, or source folders) into this environment."""
        _install([], packages, self.folder, python=self.python)

    def uninstall(self, distribution: str) -> None:
        """pip-uninstall a distribution from this environment."""
        done = pip("uninstall", "--yes", distribution, python=self.python)
        if done.returncode != 0:
            pytest.fail(f"pip could not uninstall {distribution}: {done.stderr.strip()}")

    def has(self, distribution: str) -> bool:
        """Whether this environment's own site-packages holds `distribution` (looked up afresh)."""
        return _installed(distribution, [str(self.site)])


def _installed(distribution: str, path: list[str] | None = None) -> bool:
    importlib.invalidate_caches()
    wanted = distribution.lower().replace("_", "-")
    return any((d.metadata["Name"] or "").lower().replace("_", "-") == wanted
               for d in importlib.metadata.distributions(**({"path": path} if path is not None else {})))


def installed_here(distribution: str) -> bool:
    """Whether the environment running the tests holds `distribution`; a copy that an earlier test run
    installed there from a pytest temporary folder and left behind (killed midway) is uninstalled first."""
    if not _installed(distribution):
        return False
    found = importlib.metadata.distribution(distribution)
    origin = json.loads(found.read_text("direct_url.json") or "{}").get("url", "")
    if "/pytest-of-" in origin:
        done = pip("uninstall", "--yes", distribution)
        if done.returncode != 0:
            pytest.fail(f"could not remove {distribution}, left by an earlier test run: {done.stderr.strip()}")
    return _installed(distribution)
