"""RunFolder, the one owner of a run folder's layout, driven on a real tiny run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import RECIPES, ROOT, TINY
from i2i.errors import I2IError
from i2i.storage.rundir import BEST, RunFolder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(one_thread, tmp_path_factory) -> Path:
    """A tiny run of 4 steps: checkpoints, metrics and samples at steps 2 and 4."""
    from i2i.cli import main

    run = tmp_path_factory.mktemp("rundir") / "run"
    main(["run", str(RECIPES / "quickstart.toml"), *TINY, "--out", str(run)])
    return run


@pytest.fixture
def run(trained, tmp_path) -> RunFolder:
    """A copy of the trained run that a test may change."""
    return RunFolder(shutil.copytree(trained, tmp_path / "run"))


def test_the_files_of_a_trained_run_are_where_it_says(trained):
    run = RunFolder(trained)
    assert run.path == trained and RunFolder.is_run(trained) and run.holds_run()
    for file in (run.recipe_file, run.metrics_file, run.report_file, run.sample_file(4), run.sample_file(2)):
        assert file.is_file(), file
    assert run.samples_dir.is_dir() and run.checkpoints_dir.is_dir()
    assert [step for step, _ in run.samples()] == [2, 4]
    assert [r["step"] for r in run.read_metrics()] == [2, 4]
    assert run.read_recipe()["run"]["name"] == "quickstart"
    assert run.load_recipe(["train.max_steps=9"])["train"]["max_steps"] == 9
    assert RunFolder.containing(run.checkpoint()).path == run.path
    assert RunFolder.containing(trained / "elsewhere" / "step-00000002") is None


def test_not_a_run(tmp_path):
    assert not RunFolder.is_run(tmp_path) and not RunFolder(tmp_path).holds_run()
    (tmp_path / "checkpoints").mkdir()
    assert RunFolder.is_run(tmp_path) and not RunFolder(tmp_path).holds_run()  # a run, but nothing in it yet
    with pytest.raises(I2IError, match="has no complete checkpoint yet"):
        RunFolder(tmp_path).checkpoint()


def test_checkpoints_by_name(run):
    step2, step4 = run.checkpoints_dir / "step-00000002", run.checkpoints_dir / "step-00000004"
    assert run.checkpoints() == [step2, step4] and run.newest_checkpoint() == step4
    assert run.checkpoint() == run.checkpoint("latest") == step4
    assert run.checkpoint("step-00000002") == run.checkpoint("step-2") == run.checkpoint("2") == step2
    assert run.best_checkpoint() is None

    for which in ("best", "7", "step-00000007", "newest"):
        with pytest.raises(I2IError) as caught:
            run.checkpoint(which)
        assert f"no checkpoint {which!r}" in str(caught.value)
        assert "use one of latest, step-00000002, step-00000004" in str(caught.value), str(caught.value)

    best = run.checkpoints_dir / BEST
    best.mkdir()  # a save cut short: no training.json yet
    assert run.best_checkpoint() is None
    best.rmdir()
    shutil.copytree(step2, best)
    assert run.best_checkpoint() == run.checkpoint("best") == best
    assert run.checkpoints() == [step2, step4]  # best is not a step checkpoint
    with pytest.raises(I2IError, match="use one of latest, step-00000002, step-00000004, best"):
        run.checkpoint("3")


def test_read_state_checks_the_checksum(run):
    folder = run.checkpoint()
    assert run.read_state(folder)["step"] == 4
    state = json.loads((folder / "training.json").read_text())
    state["edited"] = True  # still valid JSON: only the checksum can tell
    (folder / "training.json").write_text(json.dumps(state, indent=1, sort_keys=True))
    with pytest.raises(I2IError, match="its content differs from its recorded SHA-256"):
        run.read_state(folder)


def test_forget_after_drops_later_metrics_and_samples(run):
    run.forget_after(2)
    assert [r["step"] for r in run.read_metrics()] == [2]
    assert [step for step, _ in run.samples()] == [2]
    assert not run.sample_file(4).with_suffix(".json").exists()
    assert run.sample_file(2).with_suffix(".json").is_file()
    run.forget_after(0)
    assert run.read_metrics() == [] and run.samples() == []


def test_metrics_append_and_skip_damaged_lines(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_metrics() == []
    run.append_metrics({"step": 1, "losses": {"a": 1.0}})
    with open(run.metrics_file, "a") as f:
        f.write('\n[1, 2]\n{"step": 2, "losses": {"a"')  # a blank line, no object, a line cut by a crash
    assert run.read_metrics() == [{"step": 1, "losses": {"a": 1.0}}]


def test_check_new_and_prepare(run, tmp_path):
    with pytest.raises(I2IError, match="already holds a run: pass --out DIR .* or --overwrite to replace it"):
        run.check_new(overwrite=False)
    with pytest.raises(I2IError, match="already holds a run"):
        run.prepare(overwrite=False)
    assert run.recipe_file.is_file()  # refusing writes nothing
    run.check_new(overwrite=True)
    run.prepare(overwrite=True)
    assert run.path.is_dir() and not any(run.path.iterdir())

    fresh = RunFolder(tmp_path / "a" / "b")
    fresh.check_new()
    fresh.prepare()
    assert fresh.path.is_dir()

    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(I2IError, match="exists and is not a folder"):
        RunFolder(file).check_new(overwrite=True)


def test_save_recipe_round_trips(trained, tmp_path):
    copy = RunFolder(tmp_path / "copy")
    copy.prepare()
    copy.save_recipe(RunFolder(trained).load_recipe())
    assert copy.read_recipe() == RunFolder(trained).read_recipe()


def test_run_folder_names_are_spelled_in_one_module():
    """Only i2i/storage/rundir.py spells the run folder's file names; everything else asks it (tests check the layout
    on their own, so they are not searched)."""
    # "checkpoints" is also a word (the stock callback's name, a report label): only its uses as a path count
    literal = re.compile(r"""(["'])(recipe\.toml|metrics\.jsonl|report\.html)(\1|/)"""
                         r"""|/\s*(["'])checkpoints\4|(["'])checkpoints(\5\s*/|/)""")
    found = []
    for file in sorted([*(ROOT / "i2i").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]):
        if file == ROOT / "i2i" / "storage" / "rundir.py" or "tests" in file.relative_to(ROOT).parts:
            continue
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if literal.search(line):
                found.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
