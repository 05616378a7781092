"""Checkpoint integrity and untrusted files: checksums catch what the file formats cannot, nothing unpickles."""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

from conftest import RECIPES, ROOT, TINY, assert_same_final_state, error_line

QUICK = RECIPES / "quickstart.toml"
EVERY_STEP = [*TINY, "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=0"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(one_thread, tmp_path_factory) -> Path:
    """A tiny run of 4 steps with a checkpoint after each."""
    from i2i.cli import main

    run = tmp_path_factory.mktemp("integrity") / "run"
    main(["run", str(QUICK), *EVERY_STEP, "--out", str(run)])
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run that a test may damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in" / "a.png"
    path.parent.mkdir()
    Image.new("RGB", (32, 32), (120, 60, 30)).save(path)
    return path


def flip_last_byte(file: Path) -> None:
    """Change one bit of the last tensor's data: the file still parses, only a checksum can tell."""
    data = bytearray(file.read_bytes())
    data[-1] ^= 0x01
    file.write_bytes(bytes(data))


def step(run: Path, number: int) -> Path:
    return run / "checkpoints" / f"step-{number:08d}"


def edit_state(folder: Path, change) -> None:
    """Rewrite a checkpoint's training.json with `change(state)` applied, as a person with an editor would."""
    state = json.loads((folder / "training.json").read_text())
    change(state)
    (folder / "training.json").write_text(json.dumps(state, indent=1, sort_keys=True))


def test_a_flipped_bit_is_named_by_every_reader_and_resume_falls_back(cli, trained, run, image, tmp_path):
    damaged = step(run, 4) / "G_A.safetensors"
    flip_last_byte(damaged)
    load_file(damaged)  # safetensors itself notices nothing

    for args in (["translate", run, image, "--out", tmp_path / "out"], ["evaluate", run]):
        line = error_line(cli(*args))
        assert f"cannot read checkpoint file {damaged}: its SHA-256 differs" in line, line

    result = cli("run", QUICK, *EVERY_STEP, "--out", run, "--resume")
    assert result.code == 0, result.err
    assert f"cannot resume from step-00000004: cannot read checkpoint file {damaged}: its SHA-256" in result.err
    assert "trying the previous checkpoint" in result.err
    assert_same_final_state(trained, run, 4)  # step 4 trained again from step 3: as the undamaged run had it


def test_damage_to_each_file_of_a_checkpoint_is_named(cli, run):
    flip_last_byte(step(run, 4) / "D_B.safetensors")
    flip_last_byte(step(run, 3) / "training.safetensors")
    edit_state(step(run, 2), lambda state: state.update(epoch=state["epoch"] + 1))  # valid JSON still
    edit_state(step(run, 1), lambda state: state["sha256"].update({"G_A.safetensors": "0" * 64}))
    line = error_line(cli("run", QUICK, *EVERY_STEP, "--out", run, "--resume"))
    assert "none of the 4 checkpoints" in line, line
    warnings = [w for w in cli("run", QUICK, *EVERY_STEP, "--out", run, "--resume").err.splitlines()
                if w.startswith("warning: cannot resume from")]
    assert len(warnings) == 4, warnings
    for number, file, why in ((4, "D_B.safetensors", "its SHA-256 differs"),
                              (3, "training.safetensors", "its SHA-256 differs"),
                              (2, "training.json", "its content differs from its recorded SHA-256"),
                              (1, "training.json", "its content differs from its recorded SHA-256")):
        assert any(f"cannot read checkpoint file {step(run, number) / file}: {why}" in w for w in warnings), (
            number, warnings)


def test_a_tampered_training_json_is_named_by_compare(cli, run, tmp_path):
    edit_state(step(run, 4), lambda state: state.update(edited=True))  # valid JSON still
    result = cli("compare", run, "--samples", "1", "--out", tmp_path / "compare")
    assert result.code == 0, result.err  # the table and curves still show; only its translations go
    assert (f"note: run: cannot read checkpoint file {step(run, 4) / 'training.json'}: its content differs from its"
            " recorded SHA-256") in result.err, result.err


def test_checkpoints_without_checksums_still_load(cli, run, image, tmp_path):
    """Checkpoints written before checksums existed: verified when present, loaded as before when absent."""
    for number in range(1, 5):
        edit_state(step(run, number), lambda state: state.pop("sha256"))
    assert cli("translate", run, image, "--out", tmp_path / "out").code == 0
    assert (tmp_path / "out" / "a.png").is_file()
    result = cli("run", QUICK, *EVERY_STEP, "--set", "train.max_steps=5", "--out", run, "--resume")
    assert result.code == 0 and "cannot resume" not in result.err, result.err
    assert "sha256" in json.loads((step(run, 5) / "training.json").read_text())


class Exploit:
    """Unpickling this object would run a shell command: what a malicious .pth does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_no_file_from_outside_can_run_code(cli, run, image, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model.1.weight": Exploit(marker)}, protocol=2)
    for name in ("evil.pth", "evil.safetensors", "evil.ckpt"):
        (tmp_path / name).write_bytes(payload)
    attempts = {
        "translate .pth": ["translate", tmp_path / "evil.pth", image, "--out", tmp_path / "o1"],
        "translate renamed pickle": ["translate", tmp_path / "evil.safetensors", image, "--out", tmp_path / "o2"],
        "convert": ["convert", tmp_path / "evil.ckpt", "--out", tmp_path / "c.safetensors"],
        "inception weights": ["evaluate", run, "--inception-weights", tmp_path / "evil.pth"],
    }
    for what, args in attempts.items():
        assert "evil." in error_line(cli(*args)), what

    # a pickle in place of a network inside every checkpoint, with the checksums and without them
    for number in range(1, 5):
        (step(run, number) / "G_A.safetensors").write_bytes(payload)
    assert "none of the 4 checkpoints" in error_line(cli("run", QUICK, *EVERY_STEP, "--out", run, "--resume"))
    edit_state(step(run, 4), lambda state: state.pop("sha256"))
    assert "G_A.safetensors" in error_line(cli("translate", run, image, "--out", tmp_path / "o3"))
    assert not marker.exists(), "a pickle's code ran"


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """(dotted name, call) for every call of a dotted name in `tree`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                found.append((".".join([func.id, *reversed(parts)]), node))
    return found


# Calls that would be unsafe on files from outside, where the code reads only a file it has just written itself.
TRUSTED = {("i2i/tools/export.py", "torch.jit.load"): "the export's parity check loads back its own TorchScript file"}


def test_the_code_never_unpickles_untrusted_files():
    """Every torch.load passes weights_only=True, and nothing else that unpickles is called."""
    unsafe = {"pickle.load", "pickle.loads", "pickle.Unpickler", "torch.jit.load", "dill.load", "joblib.load",
              "marshal.loads", "shelve.open"}
    problems, loads = [], 0
    for file in [*(ROOT / "i2i").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        for name, call in _calls(ast.parse(file.read_text(), str(file))):
            where = f"{file.relative_to(ROOT)}:{call.lineno}"
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "torch.load":
                loads += 1
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif name in unsafe and (file.relative_to(ROOT).as_posix(), name) not in TRUSTED:
                problems.append(f"{where}: {name}")
            elif name.endswith("np.load") or name == "numpy.load":
                flag = keywords.get("allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{where}: np.load with allow_pickle")
    assert not problems, problems
    assert loads >= 1, "the scan found no torch.load at all: is it still looking at the right files?"
