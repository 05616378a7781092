"""Validation during training (the stock `validation` callback): metrics in metrics.jsonl, checkpoints/best, the
best checkpoint by name in translate/evaluate/export, bit-identical weights with it on or off, kill -9 and
--resume, and bad keep_best values refused before the first step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import RECIPES, TINY, assert_same_final_state, checkpoint_tensors, error_line, kill_9_at, run_module
from i2i.storage.checkpoint import copy_checkpoint
from i2i.storage.rundir import RunFolder
from i2i_stock.datasets import draw_synthetic

PIX2PIX = RECIPES / "pix2pix.toml"
TINY_PIX2PIX = [
    "--set", "data.name=synthetic", "--set", "data.paired=true", "--set", "data.count=4",
    "--set", "generator.downs=5", "--set", "generator.channels=4", "--set", "discriminator.channels=4",
    "--set", "data.load_size=36", "--set", "data.crop_size=32", "--set", "data.workers=0",
    "--set", "train.log_every=2", "--set", "train.checkpoint_every=0", "--set", "train.samples=1",
    "--set", "train.keep_checkpoints=0", "--set", "callback.progress.enabled=false",
]
STEPS = ["--set", "train.max_steps=8"]
VALIDATE = ["--set", "callback.validation.every=3", "--set", "callback.validation.keep_best=AtoB.l1"]


def overrides(args: list[str]) -> list[str]:
    return [args[i + 1] for i in range(0, len(args), 2)]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def validations(run: Path) -> dict[int, dict]:
    """step -> the validation result logged for it."""
    return {r["validation"]["step"]: r["validation"] for r in records(run) if "validation" in r}


def best_step(run: Path) -> int:
    """The validated step with the lowest AtoB l1, by metrics.jsonl."""
    found = validations(run)
    return min(found, key=lambda step: (found[step]["AtoB"]["l1"], step))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread) -> dict[str, Path]:
    """The same tiny pix2pix run with validation (every 3 steps, keeping the best AtoB l1) and without."""
    from i2i.engine import train
    from i2i.recipe import load_recipe

    root = tmp_path_factory.mktemp("runs")
    base = overrides([*TINY_PIX2PIX, *STEPS])
    return {"on": train(load_recipe(PIX2PIX, base + overrides(VALIDATE)), root / "on"),
            "off": train(load_recipe(PIX2PIX, base), root / "off")}


def test_metrics_are_logged_at_the_validated_steps(runs):
    logged = records(runs["on"])
    assert [r["step"] for r in logged] == [2, 4, 6, 8]
    # every 3 steps and the last; a result between log points joins the next record with its own step
    assert [r.get("validation", {}).get("step") for r in logged] == [None, 3, 6, 8]
    for result in validations(runs["on"]).values():
        assert set(result) == {"step", "AtoB"}  # pix2pix translates one way
        assert result["AtoB"]["images"] == 4 and set(result["AtoB"]) == {"images", "l1", "psnr", "ssim"}
    assert not any("validation" in r for r in records(runs["off"]))
    page = (runs["on"] / "report.html").read_text()
    assert "validation.png" in page and (runs["on"] / "validation.png").is_file()
    assert "validation.png" not in (runs["off"] / "report.html").read_text()


def test_best_is_the_checkpoint_of_the_best_validated_step(runs):
    folder = RunFolder(runs["on"])
    best = folder.checkpoint("best")
    step = best_step(runs["on"])
    assert folder.read_state(best)["step"] == step  # its checksums verify: the files are identical copies
    source = checkpoint_tensors(folder.checkpoint(f"step-{step}"))
    copied = checkpoint_tensors(best)
    assert source.keys() == copied.keys() and all(source[k].equal(copied[k]) for k in source)
    assert not [p for p in folder.checkpoints_dir.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_validation_changes_no_weight(runs):
    on, off = runs["on"] / "checkpoints" / "step-00000008", runs["off"] / "checkpoints" / "step-00000008"
    ta, tb = checkpoint_tensors(on), checkpoint_tensors(off)
    networks = [k for k in ta if not k.startswith("training/")]  # training.safetensors holds the callback's state
    assert networks and set(networks) == {k for k in tb if not k.startswith("training/")}
    assert all(ta[k].equal(tb[k]) for k in networks)
    rngs = [k for k in ta if k.startswith("training/rng.")]
    assert rngs and all(ta[k].equal(tb[k]) for k in rngs)
    assert [r["losses"] for r in records(runs["on"])] == [r["losses"] for r in records(runs["off"])]


def test_translate_evaluate_and_export_take_the_best_checkpoint(cli, runs, tmp_path):
    run, step = runs["on"], best_step(runs["on"])
    image = tmp_path / "in.png"
    draw_synthetic(0, "test", "A", 0, 32).save(image)
    result = cli("translate", run, image, "--out", tmp_path / "out", "--checkpoint", "best")
    assert result.code == 0, result.err
    assert (tmp_path / "out" / "in.png").is_file()
    result = cli("evaluate", run, "--checkpoint", "best")
    assert result.code == 0, result.err
    report = json.loads((run / "metrics.json").read_text())
    assert report["checkpoint"] == "best" and report["step"] == step
    # the same metrics as validation measured during training, from the same weights
    assert report["metrics"]["AtoB"]["l1"] == pytest.approx(validations(run)[step]["AtoB"]["l1"], rel=1e-5)
    result = cli("export", run, "--checkpoint", "best", "--format", "torchscript", "--out", tmp_path / "g.pt")
    assert result.code == 0, result.err
    assert "nope" in error_line(cli("translate", run, image, "--out", tmp_path / "o2", "--checkpoint", "nope"))


def test_copying_over_best_is_atomic(runs, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    source = runs["on"] / "checkpoints" / "step-00000003"
    copy_checkpoint(source, checkpoints / "best")
    # a kill between the two renames: the previous best stepped aside, the new one is still a temp folder
    os.rename(checkpoints / "best", checkpoints / ".best.replaced")
    (checkpoints / ".best.tmp-999999").mkdir()
    copy_checkpoint(runs["on"] / "checkpoints" / "step-00000006", checkpoints / "best")
    assert RunFolder.read_state(checkpoints / "best")["step"] == 6
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best"]


def test_kill_9_then_resume_keeps_the_best_so_far(tmp_path):
    long = [*TINY_PIX2PIX, "--set", "train.max_steps=60", "--set", "callback.validation.every=4",
            "--set", "callback.validation.keep_best=AtoB.psnr", "--set", "train.checkpoint_every=5"]
    env = {"OMP_NUM_THREADS": "1"}
    assert run_module("run", PIX2PIX, *long, "--out", tmp_path / "whole", env=env).code == 0
    run = tmp_path / "killed"
    kill_9_at(run, 15, 60, [PIX2PIX, *long], env)
    resumed = run_module("run", PIX2PIX, *long, "--out", run, "--resume", env=env)
    assert resumed.code == 0, resumed.err
    # the final state (the callback's best value and step included) and every metrics line, validation too
    assert_same_final_state(tmp_path / "whole", run, 60)
    whole, killed = RunFolder(tmp_path / "whole"), RunFolder(run)
    assert killed.read_state(killed.checkpoint("best"))["step"] == whole.read_state(whole.checkpoint("best"))["step"]
    a, b = checkpoint_tensors(whole.checkpoint("best")), checkpoint_tensors(killed.checkpoint("best"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a if not k.startswith("training/"))


@pytest.mark.parametrize("recipe, extra, expected", [
    ("quickstart.toml", ["--set", "callback.validation.keep_best=AtoB.l1"], "l1, psnr and ssim need paired data"),
    ("pix2pix.toml", ["--set", "callback.validation.keep_best=BtoA.l1"], "translates AtoB only"),
    ("pix2pix.toml", ["--set", "callback.validation.keep_best=AtoB.fid"], "needs FID/KID"),
    ("pix2pix.toml", ["--set", "callback.validation.keep_best=AtoB.lpips"], "is not DIRECTION.METRIC"),
    ("pix2pix.toml", ["--set", "callback.validation.split=val"], "has no such split"),
])
def test_bad_keep_best_is_refused_before_anything_is_written(cli, tmp_path, recipe, extra, expected):
    settings = [*TINY_PIX2PIX, *STEPS] if recipe == "pix2pix.toml" else TINY  # quickstart: unpaired, both ways
    run = tmp_path / "run"
    line = error_line(cli("run", RECIPES / recipe, *settings, *extra, "--out", run))
    assert expected in line
    assert not run.exists()  # checked once the run is built (on_setup), before the run folder is made
