"""Sweeps through the CLI: one run folder per combination, a comparison page, resume, failures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from PIL import Image

from conftest import RECIPES, TINY, error_line
from i2i.errors import I2IError
from i2i.tools.sweep import combinations

QUICK = RECIPES / "quickstart.toml"
SHORT = [*TINY, "--set", "train.max_steps=2", "--set", "train.checkpoint_every=0", "--set", "train.log_every=1"]


def referenced_files(html: Path) -> list[Path]:
    return [html.parent / unquote(ref) for ref in re.findall(r'(?:src|href)="([^"#:]+)"', html.read_text())]


def test_a_2x2_sweep_gives_four_runs_and_a_comparison_page(cli, tmp_path):
    out = tmp_path / "sweep"
    result = cli("sweep", QUICK, *SHORT, "--grid", "loss.identity.weight=0,0.5", "--grid", "generator.blocks=1,2",
                 "--out", out, "--jobs", "2")
    assert result.code == 0, result.err
    names = sorted(p.name for p in out.iterdir() if (p / "recipe.toml").exists())
    assert names == ["loss.identity.weight=0,generator.blocks=1", "loss.identity.weight=0,generator.blocks=2",
                     "loss.identity.weight=0.5,generator.blocks=1", "loss.identity.weight=0.5,generator.blocks=2"]
    assert "4 finished, 0 skipped" in result.out
    html = out / "compare.html"
    text = html.read_text()
    assert "loss.identity.weight" in text and "generator.blocks" in text
    files = referenced_files(html)
    assert files
    for file in files:
        assert file.exists(), file
        if file.suffix == ".png":
            Image.open(file).verify()


def test_a_killed_sweep_resumes_running_only_what_is_missing(cli, tmp_path):
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "i2i", "sweep", str(QUICK), *SHORT, "--grid", "loss.cycle.weight=1,5,10",
            "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        state = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").exists() else {"runs": {}}
        if any(r["status"] == "finished" for r in state["runs"].values()):
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the run it is in the middle of
    proc.wait()
    finished = [name for name, r in state["runs"].items() if r["status"] == "finished"]
    assert 1 <= len(finished) < 3
    stamp = {name: (out / name / "metrics.jsonl").stat().st_mtime_ns for name in finished}

    result = cli("sweep", QUICK, *SHORT, "--grid", "loss.cycle.weight=1,5,10", "--out", out, "--resume")
    assert result.code == 0, result.err
    assert f"{3 - len(finished)} finished, {len(finished)} skipped" in result.out
    for name in finished:  # not run again
        assert (out / name / "metrics.jsonl").stat().st_mtime_ns == stamp[name]
    final = json.loads((out / "sweep.json").read_text())["runs"]
    assert sorted(final) == ["loss.cycle.weight=1", "loss.cycle.weight=10", "loss.cycle.weight=5"]
    assert all(r["status"] == "finished" for r in final.values())


def test_a_failed_run_is_reported_and_the_others_go_on(cli, tmp_path):
    if torch.cuda.device_count() > 7:
        pytest.skip("cuda:7 exists here")
    out = tmp_path / "sweep"
    # a recipe that validates but fails when the run starts
    result = cli("sweep", QUICK, *SHORT, "--grid", "run.device=cpu,cuda:7", "--out", out)
    line = error_line(result)
    assert "1 of the sweep's runs failed: run.device=cuda:7" in line
    assert "no CUDA device is available" in result.err or "CUDA devices exist" in result.err
    assert (out / "run.device=cpu" / "checkpoints" / "step-00000002").is_dir()
    assert (out / "compare.html").exists()


def test_a_bad_grid_key_fails_before_anything_runs(cli, tmp_path):
    out = tmp_path / "sweep"
    line = error_line(cli("sweep", QUICK, *SHORT, "--grid", "generator.blokcs=1,2", "--out", out))
    assert "did you mean 'blocks'" in line
    assert not out.exists()
    assert "expected KEY=V1,V2" in error_line(cli("sweep", QUICK, "--grid", "generator.blocks", "--out", out))


def test_variants_and_grid_multiply_and_name_the_runs():
    combos = combinations(["loss.identity.weight=0,0.5"], ["full:", "no_cycle:loss.cycle.weight=0"])
    assert [c.name for c in combos] == ["full,loss.identity.weight=0", "full,loss.identity.weight=0.5",
                                        "no_cycle,loss.identity.weight=0", "no_cycle,loss.identity.weight=0.5"]
    assert combos[2].overrides == ["loss.cycle.weight=0", "loss.identity.weight=0"]
    with pytest.raises(I2IError, match="names a key twice"):
        combinations(["a.b=1,2", "a.b=3"])
