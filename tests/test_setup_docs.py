"""The README's setup is what a newcomer runs: the first command installs the runtime only (no test extra) and runs
the quick start, the second installs the test extra and runs the tests, and .ci/run runs exactly that."""

from __future__ import annotations

import re
import tomllib

from conftest import ROOT

# what the test extra brings and the runtime must not need: a first install stays lean
_TEST_ONLY = ("gradio", "mlflow", "wandb", "tensorboard", "selenium", "onnx", "hypothesis", "pytest", "rasterio")


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def test_the_first_command_installs_the_runtime_and_runs_the_quick_start():
    setup = (ROOT / "README.md").read_text().split("## Setup", 1)[1].split("\n## ", 1)[0]
    first, tests = _bash_blocks(setup)[:2]
    assert "pip install -e . " in first and "[test]" not in first, first
    assert "i2i run recipes/quickstart.toml" in first, first
    assert 'pip install -e ".[test]"' in tests and "python -m pytest -q" in tests, tests


def test_ci_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'pip install (--quiet )?-e "\.\[test\]"', ci), ci
    assert ci.rstrip().splitlines()[-1] == "python -m pytest -q"


def test_the_runtime_needs_nothing_only_the_tests_use():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in project["dependencies"]]
    assert not [name for name in runtime if name.startswith(_TEST_ONLY)], runtime
    assert "test" in project["optional-dependencies"]
