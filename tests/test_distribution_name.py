"""Our distribution is `i2i-toolkit` (the package index's `i2i` is someone else's), and files record the distribution
of each part they hold, so a missing plugin is named with the line that installs it.

The import name, the `i2i` command and the entry-point group stay `i2i`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import RECIPES, ROOT, TINY, error_line, run_module
from packages import Environment, installed_here
from i2i.contract.registry import default_registry
from i2i.errors import I2IError
from i2i.storage.checkpoint import PACKAGE_KEY, PACKAGE_VERSION_KEY, part_metadata

#: folders that are not the repository's own text: environments, caches, build leftovers, runs
SKIPPED_DIRS = {".git", ".venv", ".ci-venv", "build", "dist", "runs", "__pycache__", ".pytest_cache", ".hypothesis",
                "node_modules"}
TEXT_SUFFIXES = {".md", ".rst", ".txt", ".py", ".toml", ".cfg", ".ini", ".yml", ".yaml", ".sh", ".html", ".json", ""}
#: what tells a user to install the unrelated `i2i` distribution (a name like i2i-foo or i2i_stock is not it)
BARE = r"(?<![\w./-])i2i(?![\w-])"
INSTALL_LINES = [
    # its arguments end at a comment, the end of inline code, or the next shell command
    ("pip install", re.compile(r"\bpip3? install\b[^\n#`&;|]*?(?<![\w./-])[\"']?i2i(?![\w.-])")),
    ("an extra of it", re.compile(rf"{BARE}\[[\w{{][^\]\s]*\]")),  # i2i[demo], i2i[{name}]; not a regex's i2i[-_]
    ("a version of it", re.compile(rf"{BARE}\s*(?:[<>=!~]=|[<>])\s*\d")),
]
#: a requirement list (dependencies = [...], requires = [...]) naming it as a requirement string
REQUIREMENTS = re.compile(r"\b(?:dependencies|requires)\s*=\s*\[(.*?)\]", re.DOTALL)
BARE_REQUIREMENT = re.compile(r"[\"']i2i(?![\w.-])")


def repository_text_files(root: Path) -> list[Path]:
    """The repository's text files (sources, docs, recipes, CI, packaging), this test module left out."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix in TEXT_SUFFIXES and path.resolve() != Path(__file__).resolve():
                found.append(path)
    return found


def file_instructions(path: Path) -> list[str]:
    """`file:line: what` for every place in the file `path` that names the bare `i2i` distribution to install."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []  # not text (or unreadable): no instructions in it
    return bare_install_instructions(text, str(path.relative_to(ROOT)))


def bare_install_instructions(text: str, where: str) -> list[str]:
    """`where:line: what` for every place in `text` that names the bare `i2i` distribution to install."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        what = next((what for what, pattern in INSTALL_LINES if pattern.search(line)), None)
        if what is not None:
            found.append(f"{where}:{number}: names the bare i2i distribution ({what}): {line.strip()}")
    for requirements in REQUIREMENTS.finditer(text):
        for hit in BARE_REQUIREMENT.finditer(requirements.group(1)):
            number = text.count("\n", 0, requirements.start(1) + hit.start()) + 1
            line = text.splitlines()[number - 1].strip()
            found.append(f"{where}:{number}: requires the bare i2i distribution: {line}")
    return found


def test_nothing_tells_users_to_install_the_unrelated_i2i_package():
    files = repository_text_files(ROOT)
    assert any(f.name == "README.md" for f in files) and any(f.name == "pyproject.toml" for f in files)
    found = sorted({line for path in files for line in file_instructions(path)})
    assert not found, ("the package index's `i2i` is an unrelated project; ours is i2i-toolkit:\n"
                       + "\n".join(found))


@pytest.mark.parametrize("line, names_it", [
    ('pip install "i2i[demo]"', True), ("pip install 'i2i[geo]'", True), ("pip install i2i", True),
    ("pip install -U i2i", True), ('dependencies = ["i2i"]', True), ('dependencies = ["torch", "i2i>=0.1"]', True),
    ('pip install "i2i-toolkit[demo]"', False), ("pip install i2i-smallunet", False), ("pip install -e .", False),
    ('dependencies = ["i2i-toolkit"]', False), ("i2i run recipes/cyclegan.toml", False),
    ("from i2i import hookimpl", False), ('ENTRY_POINT_GROUP = "i2i"', False), ("pip install torch  # for i2i", False),
    ('pip install -e ".[test]" && i2i run recipes/quickstart.toml', False), ("needs the optional extra i2i[geo]", True),
    ('requires = [\n    "setuptools",\n    "i2i",\n]', True), ('pip install "i2i[{cls.name}]"', True),
    ('re.sub(r"^i2i[-_]", "", old)', False), ("i2i-toolkit[geo]", False), ("i2i<1", True),
    ("<b>i2i</b> trains", False), ("i2i-toolkit>=0.1", False),
])
def test_the_scan_tells_the_bare_name_from_ours(line, names_it):
    assert bool(bare_install_instructions(f"{line}\n", "probe.toml")) is names_it


def test_the_installed_distribution_is_ours():
    """The entry points of the core, and `i2i --version`, come from the i2i-toolkit distribution."""
    dist = importlib.metadata.distribution("i2i-toolkit")
    assert "resnet" in {ep.name for ep in dist.entry_points if ep.group == "i2i"}
    assert any(ep.name == "i2i" and ep.group == "console_scripts" for ep in dist.entry_points)


# -- checkpoints name the distribution of each part ------------------------------------------------------------------

QUICK = RECIPES / "quickstart.toml"
#: a run of the tiny all-convolutional generator of the test package i2i-example (tests/plugins/i2i_example)
WITH_TINYCONV = [*(arg for i, arg in enumerate(TINY) if "generator.blocks=1" not in TINY[i:i + 2]),  # a ResNet key
                 "--set", "train.max_steps=2", "--set", "generator.name=tinyconv", "--set", "run.name=plug"]
NOT_INSTALLED = ("generator 'tinyconv' comes from the package i2i-example 0.1.0 (not installed): pip install"
                 " i2i-example")


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory) -> tuple[Environment, Path]:
    """An environment with i2i-example pip-installed, and a run trained there with its generator, in runs/plug of
    a working folder (the run's parent's parent)."""
    if installed_here("i2i-example"):
        pytest.skip("i2i-example is installed in the environment running the tests; these tests install and remove"
                    " it themselves")
    environment = Environment(tmp_path_factory.mktemp("env"))
    environment.install("i2i_example")
    run = tmp_path_factory.mktemp("work") / "runs" / "plug"
    result = run_module("run", QUICK, *WITH_TINYCONV, "--out", run, env=environment.env)
    assert result.code == 0, result.err
    return environment, run


def installed(environment: Environment) -> dict[str, str]:
    """The environment's variables, with i2i-example installed there (again, after a test that removed it)."""
    if not environment.has("i2i-example"):
        environment.install("i2i_example")
    return environment.env


def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (16, 16), (200, 40, 90)).save(folder / "a.png")
    return folder


def test_checkpoints_record_the_distribution_of_each_part(plugin_run):
    _, run = plugin_run
    checkpoint = run / "checkpoints" / "step-00000002"
    providers = json.loads((checkpoint / "training.json").read_text())["providers"]
    ours = {"package": "i2i-toolkit", "version": importlib.metadata.version("i2i-toolkit")}
    assert providers["generator"] == {"tinyconv": {"package": "i2i-example", "version": "0.1.0"}}
    assert providers["discriminator"] == {"patchgan": ours} and providers["method"] == {"cycle": ours}
    assert providers["dataset"] == {"synthetic": ours} and providers["loss"]["lsgan"] == ours
    assert set(providers) >= {"optimizer", "schedule", "callback", "buffer"}
    for file, record in [("G_A", providers["generator"]["tinyconv"]), ("G_B", providers["generator"]["tinyconv"]),
                         ("D_A", ours)]:
        with safe_open(checkpoint / f"{file}.safetensors", framework="pt") as f:
            meta = f.metadata()
        assert {"package": meta[PACKAGE_KEY], "version": meta[PACKAGE_VERSION_KEY]} == record, file


def test_an_installed_plugin_that_fails_to_load_is_named_with_its_error(plugin_run, tmp_path):
    environment, run = plugin_run
    # a broken install: the package's metadata is there, its module fails on a missing dependency of its own
    shadow = tmp_path / "shadow" / "i2i_example"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("import a_dependency_that_is_not_installed\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shadow.parent), installed(environment)["PYTHONPATH"]])}
    result = run_module("translate", run, image_folder(tmp_path), "--out", tmp_path / "out", env=env)
    line = error_line(result)
    assert (f"error: cannot rebuild the generator saved in {run / 'checkpoints' / 'step-00000002' / 'G_A.safetensors'}:"
            " generator 'tinyconv' comes from the package i2i-example 0.1.0, which is installed but failed to load:"
            " plugins 'hub', 'losses', 'tinyconv': ModuleNotFoundError: No module named 'a_dependency_that_is_not_installed'"
            ) in line
    blocked = run_module("translate", run, tmp_path / "images", "--out", tmp_path / "out",
                         env={**installed(environment), "I2I_BLOCK_PLUGINS": "i2i-example"})
    assert error_line(blocked).endswith("generator 'tinyconv' comes from the package i2i-example 0.1.0, which"
                                        " I2I_BLOCK_PLUGINS blocks: take 'i2i-example' out of that variable")


def test_a_missing_plugin_is_named_with_the_line_that_installs_it(plugin_run, tmp_path):
    """translate, export and run --resume of a run whose plugin package was uninstalled since."""
    environment, run = plugin_run
    environment.uninstall("i2i-example")
    assert not environment.has("i2i-example")
    translated = run_module("translate", run, image_folder(tmp_path), "--out", tmp_path / "out", env=environment.env)
    line = error_line(translated)
    assert line.endswith(NOT_INSTALLED) and "G_A.safetensors" in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    exported = run_module("export", run, "--format", "torchscript", "--out", tmp_path / "g.pt", env=environment.env)
    assert error_line(exported).endswith(NOT_INSTALLED) and not (tmp_path / "g.pt").exists()
    # --resume from the working folder, the run folder being runs/<run.name>
    resumed = run_module("run", QUICK, *WITH_TINYCONV, "--set", "train.max_steps=4", "--resume",
                         env=environment.env, cwd=run.parent.parent)
    assert error_line(resumed) == f"error: cannot resume {Path('runs') / 'plug'} (step-00000002): {NOT_INSTALLED}"
    assert not (run / "checkpoints" / "step-00000004").exists()


def test_a_file_that_records_no_distribution_keeps_the_unknown_name_message(cli, tmp_path):
    """Generator files written before the distribution was recorded (or by a script's plugin) say what they did."""
    file = tmp_path / "old.safetensors"
    save_file({"w": torch.zeros(1)}, file, metadata=part_metadata("generator", "tinygen", {}))
    result = cli("translate", file, image_folder(tmp_path), "--out", tmp_path / "out")
    line = error_line(result)
    assert "unknown generator 'tinygen': did you mean" in line and "(available: " in line and "package" not in line


def test_an_installed_version_without_the_part_says_which_version_had_it():
    registry = default_registry()
    installed_version = importlib.metadata.version("i2i-toolkit")
    with pytest.raises(I2IError) as caught:
        registry.require("generator", "resnet_2030", "i2i-toolkit", "0.0.1")
    assert str(caught.value).startswith(
        f"generator 'resnet_2030' comes from the package i2i-toolkit 0.0.1, and the installed i2i-toolkit"
        f" {installed_version} has no generator 'resnet_2030' (its generators: ")
    assert str(caught.value).endswith('): pip install "i2i-toolkit==0.0.1"')
    assert registry.require("generator", "resnet", "i2i-toolkit", "0.0.1").package == "i2i-toolkit"
    with pytest.raises(I2IError, match=r"^unknown generator 'resnet_2030': "):  # nothing recorded: info's error
        registry.require("generator", "resnet_2030")
