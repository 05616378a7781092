"""A newcomer's first runs (issue 28): progress that shows in a log file, a first log point early in a short run,
log lines that never wrap, `--resume` of a finished run, recipe changes on --resume applied or refused (never written
silently), errors of a --set value naming the --set, and the report's lr and epoch in plain words."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import RECIPES, TINY, assert_same_final_state, checkpoint_tensors, error_line

QUICK = RECIPES / "quickstart.toml"
LOSSES = ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B")

pytestmark = pytest.mark.usefixtures("one_thread")


def steps_logged(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- progress in a log file -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> tuple[Path, str]:
    """A 6-step run whose log_every (100) is beyond its end, with stdout and stderr in a file, as `> run.log 2>&1`."""
    folder = tmp_path_factory.mktemp("logged")
    run, log = folder / "run", folder / "run.log"
    with open(log, "w") as f:
        code = subprocess.run([sys.executable, "-m", "i2i", "run", str(QUICK), *TINY, "--set", "train.max_steps=6",
                               "--set", "train.log_every=100", "--set", "callback.progress.every_s=0",
                               "--out", str(run)], stdout=f, stderr=subprocess.STDOUT,
                              env={**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, "OMP_NUM_THREADS": "1"},
                              timeout=300).returncode
    text = log.read_text()
    assert code == 0, text
    return run, text


def test_a_log_file_gets_progress_lines_with_step_speed_and_eta(logged_run):
    _, text = logged_run
    lines = [line for line in text.splitlines() if re.match(r"step \d+/6 \(\d+%\)", line)]
    assert [line.split()[1] for line in lines] == [f"{step}/6" for step in range(1, 7)], text  # every_s = 0
    for line in lines:
        assert re.search(r"  \d+\.\d+ (it/s|s/it)  elapsed \d:\d\d:\d\d  ETA \d:\d\d:\d\d  ", line), line
        assert all(f" {name} " in f"{line} " for name in LOSSES), line
    assert "━" not in text  # no bar drawn into the file


def test_a_run_shorter_than_log_every_logs_at_step_1(logged_run):
    run, text = logged_run
    assert steps_logged(run) == [1, 6]
    assert [step for step in (1, 6) if (run / "samples" / f"step-{step:08d}.png").is_file()] == [1, 6]
    assert "step 6/6  G_A " in text  # the last log point's mean losses


def test_no_line_of_the_log_is_wrapped_at_80_columns(logged_run):
    _, text = logged_run
    lines = text.splitlines()
    assert max(len(line) for line in lines) > 100  # long enough that an 80-column console would have wrapped it
    starts = ("training cycle ", "step ", "done: ")
    assert all(line.startswith(starts) for line in lines), [line for line in lines if not line.startswith(starts)]


# -- --resume of a finished run, and recipe changes on --resume -------------------------------------------------------

def test_resuming_a_finished_run_says_so_and_how_to_train_longer(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("run", QUICK, *TINY, "--out", run).code == 0
    recipe, metrics = (run / "recipe.toml").read_bytes(), (run / "metrics.jsonl").read_bytes()
    again = cli("run", QUICK, *TINY, "--out", run, "--resume")
    assert again.code == 0, again.err
    assert again.out.strip() == (f"{run} had already finished: it is at step 4, where train.max_steps = 4 ends it; to"
                                 " train longer, --resume with a higher one, e.g. --set train.max_steps=8 --resume")
    assert "training" not in again.err and "done" not in again.out
    assert (run / "recipe.toml").read_bytes() == recipe and (run / "metrics.jsonl").read_bytes() == metrics
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    lower = cli("run", QUICK, *TINY, "--set", "train.max_steps=3", "--out", run, "--resume")
    assert lower.code == 0 and "is at step 4, past train.max_steps = 3: nothing to train" in lower.out, lower.out
    assert (run / "recipe.toml").read_bytes() == recipe


def test_a_run_that_ran_its_epochs_says_to_add_epochs(cli, tmp_path):
    run = tmp_path / "run"
    whole = [*TINY, "--set", "data.count=2", "--set", "train.max_steps=0"]  # 3 epochs of 2 steps
    assert cli("run", QUICK, *whole, "--out", run).code == 0
    again = cli("run", QUICK, *whole, "--set", "train.max_steps=100", "--out", run, "--resume")
    assert again.code == 0, again.err
    assert "had already finished: it is at step 6, the end of its 3 epochs" in again.out
    assert "--set train.epochs=3 --resume" in again.out
    assert tomllib.loads((run / "recipe.toml").read_text())["train"]["max_steps"] == 0  # nothing trained: unchanged


def test_raising_max_steps_on_resume_trains_on_as_one_longer_run(cli, tmp_path):
    assert cli("run", QUICK, *TINY, "--set", "train.max_steps=6", "--out", tmp_path / "whole").code == 0
    run = tmp_path / "run"
    assert cli("run", QUICK, *TINY, "--out", run).code == 0
    longer = cli("run", QUICK, *TINY, "--set", "train.max_steps=6", "--out", run, "--resume")
    assert longer.code == 0, longer.err
    assert "note: --resume from step 4 applies train.max_steps = 6 (was 4); it trains to step 6" in longer.err
    assert "schedule" not in longer.err  # the linear schedule follows epochs, not max_steps: the same run
    assert tomllib.loads((run / "recipe.toml").read_text())["train"]["max_steps"] == 6
    assert_same_final_state(tmp_path / "whole", run, 6)


def test_a_schedule_over_the_runs_length_says_what_a_longer_resume_does(cli, tmp_path):
    run = tmp_path / "run"
    cosine = [*TINY, "--set", "schedule.name=cosine"]
    assert cli("run", QUICK, *cosine, "--out", run).code == 0
    longer = cli("run", QUICK, *cosine, "--set", "train.max_steps=6", "--out", run, "--resume")
    assert longer.code == 0, longer.err
    assert ("note: the learning-rate schedule (cosine) depends on the run's length: from step 4 it follows the new"
            " one (6 steps), while the steps before had the rates of the old one (4 steps)") in longer.err


def test_a_change_resume_cannot_apply_is_refused_naming_the_key(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("run", QUICK, *TINY, "--set", "train.max_steps=2", "--out", run).code == 0
    recipe = (run / "recipe.toml").read_bytes()
    before = checkpoint_tensors(run / "checkpoints" / "step-00000002")
    line = error_line(cli("run", QUICK, *TINY, "--set", "optim.beta1=0.9", "--out", run, "--resume"))
    assert line.startswith("error: --resume cannot change optim.beta1 = 0.9 (was 0.5): "), line
    assert "remove it, or train a new run (--out DIR)" in line
    assert (run / "recipe.toml").read_bytes() == recipe
    assert not (run / "checkpoints" / "step-00000004").exists()
    after = checkpoint_tensors(run / "checkpoints" / "step-00000002")
    assert all(before[k].equal(after[k]) for k in before)


def test_a_model_mismatch_on_resume_is_said_once(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("run", QUICK, *TINY, "--out", run).code == 0  # checkpoints at steps 2 and 4
    result = cli("run", QUICK, *TINY, "--set", "generator.channels=8", "--out", run, "--resume")
    line = error_line(result)
    assert "the recipe's model differs" in line and "[generator] channels = 8 here, 4 in the checkpoint" in line
    assert result.err.count("model differs") == 1, result.err


# -- errors of --set values -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, says", [
    ("train.max_steps=abc", '[train] max_steps must be an int, got "abc"'),
    ("generator.chanels=8", "unknown key 'chanels' in [generator]: did you mean 'channels'?"),
    ("generator.name=resnett", "unknown generator 'resnett': did you mean 'resnet'?"),
])
def test_a_bad_set_value_is_named_as_the_set_not_the_recipe_file(cli, tmp_path, setting, says):
    line = error_line(cli("run", QUICK, *TINY, "--set", setting, "--out", tmp_path / "run"))
    assert line.startswith(f"error: --set {setting}: {says}"), line
    assert str(QUICK) not in line and not (tmp_path / "run").exists()


def test_the_same_bad_value_is_named_where_it_was_given(cli, tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text(QUICK.read_text().replace("channels = 16", "channels = -16", 1))
    pairs = [TINY[i:i + 2] for i in range(0, len(TINY), 2)]
    tiny = [arg for pair in pairs if pair[1] != "generator.channels=4" for arg in pair]
    in_file = error_line(cli("run", recipe, *tiny, "--out", tmp_path / "r"))
    assert in_file.startswith(f"error: {recipe}: [generator] channels = -16 is out of range"), in_file
    by_set = error_line(cli("run", QUICK, *tiny, "--set", "generator.channels=-16", "--out", tmp_path / "r"))
    assert by_set.startswith("error: --set generator.channels=-16: [generator] channels = -16 is out of range"), by_set


# -- the report, and what every run of the paper recipe printed -------------------------------------------------------

def test_the_report_says_lr_per_group_and_the_epoch_as_people_count(cli, tmp_path):
    run = tmp_path / "run"
    # 3 epochs of 2 steps; data.workers above this machine's CPUs is capped without a word
    result = cli("run", QUICK, *TINY, "--set", "data.count=2", "--set", "train.max_steps=0",
                 "--set", "data.workers=64", "--out", run)
    assert result.code == 0, result.err
    assert "data.workers" not in result.err and "warning" not in result.err, result.err
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 2 and last["lr"] == {"G": 0.0001, "D": 0.0001}  # metrics.jsonl counts epochs from 0
    html = (run / "report.html").read_text()
    assert "<dt>epoch</dt><dd>3</dd>" in html
    assert "<dt>lr</dt><dd>G 0.0001, D 0.0001</dd>" in html
    assert "{" not in html.split("<dt>lr</dt>")[1].split("</dd>")[0]
