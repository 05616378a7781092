"""The CLI end to end: training a tiny run, determinism, and one clear line for every bad input."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import RECIPES, SHARED_DATA, TINY, error_line, run_module

QUICK = RECIPES / "quickstart.toml"
CYCLEGAN = RECIPES / "cyclegan.toml"


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    folder = run / "checkpoints" / f"step-{step:08d}"
    out = {}
    for file in sorted(folder.glob("[GD]_*.safetensors")):
        out.update({f"{file.stem}.{k}": v for k, v in load_file(file).items()})
    return out


def test_tiny_quickstart_leaves_a_complete_run_folder(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--out", run)
    assert result.code == 0, result.err
    assert "done:" in result.out
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    # every default written out, overrides applied
    assert recipe["generator"] == {"name": "resnet", "blocks": 1, "channels": 4, "norm": "instance",
                                   "dropout": False, "in_channels": 3, "out_channels": 3, "antialias": False,
                                   "init": "normal", "init_gain": 0.02}
    assert recipe["loss"]["identity"] == {"name": "l1", "weight": 0.5}
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step-00000002", "step-00000004"]
    final = run / "checkpoints" / "step-00000004"
    assert sorted(p.name for p in final.iterdir()) == [
        "D_A.safetensors", "D_B.safetensors", "G_A.safetensors", "G_B.safetensors",
        "training.json", "training.safetensors"]
    assert json.loads((final / "training.json").read_text())["step"] == 4
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert set(records[0]["losses"]) == {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"}
    assert all(v > 0 for v in records[-1]["losses"].values())
    html = (run / "report.html").read_text()
    assert "samples/step-00000004.png" in html and "losses.png" in html
    assert (run / "samples" / "step-00000004.png").stat().st_size > 0


def test_same_seed_gives_bit_identical_weights(cli, tmp_path):
    for name in ("a", "b"):
        assert cli("run", QUICK, *TINY, "--out", tmp_path / name).code == 0
    assert cli("run", QUICK, *TINY, "--set", "run.seed=1", "--out", tmp_path / "c").code == 0
    a, b, c = (weights(tmp_path / n, 4) for n in "abc")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_existing_run_is_not_overwritten_without_asking(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("run", QUICK, *TINY, "--out", run).code == 0
    before = weights(run, 4)
    line = error_line(cli("run", QUICK, *TINY, "--set", "run.seed=3", "--out", run))
    assert "already holds a run" in line and "--overwrite" in line
    after = weights(run, 4)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert cli("run", QUICK, *TINY, "--set", "run.seed=3", "--out", run, "--overwrite").code == 0


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("overrides, expected", [
    (["--set", "generator.blokcs=3"], ["unknown key 'blokcs' in [generator]", "did you mean 'blocks'"]),
    (["--set", "optim.lr=fast"], ["[optim] lr must be a float", '"fast"']),
    (["--set", "optim.lr=-0.1"], ["[optim] lr = -0.1 is out of range", ">= 0"]),
    (["--set", "generator.name=resnte"], ["unknown generator 'resnte'", "did you mean 'resnet'", "available:"]),
    (["--set", "generator.norm=instnace"], ["not one of", "did you mean 'instance'"]),
    (["--set", "trian.epochs=3"], ["unknown key 'trian'", "did you mean 'train'"]),
    (["--set", "loss.cycel.weight=1"], ["no loss slot 'cycel'", "did you mean 'cycle'"]),
    (["--set", "loss.cycle.name=lsgan"], ["[loss.cycle]", "not a reconstruction loss", "l1"]),
    (["--set", "data.batch_size=0"], ["[data] batch_size = 0 is out of range"]),
    (["--set", "train.max_steps=true"], ["[train] max_steps must be an int"]),
    (["--set", "optim"], ["expected KEY=VALUE"]),
])
def test_bad_recipe_values_get_one_clear_line(cli, tmp_path, overrides, expected):
    line = error_line(cli("run", QUICK, *TINY, *overrides, "--out", tmp_path / "run"))
    for fragment in expected:
        assert fragment in line, line
    assert not (tmp_path / "run").exists(), "nothing is written before the recipe is valid"


def test_toml_syntax_error_names_file_and_line(cli, tmp_path):
    bad = write(tmp_path / "bad.toml", '[run]\nname = "x"\n\n[optim]\nlr = 2e-4 oops\n')
    line = error_line(cli("run", bad))
    assert "bad.toml" in line and "invalid TOML" in line and "line 5" in line


def test_missing_recipe_file(cli, tmp_path):
    line = error_line(cli("run", tmp_path / "nope.toml"))
    assert "recipe file not found" in line and "nope.toml" in line


def test_recipe_without_part_name_lists_what_exists(cli, tmp_path):
    text = QUICK.read_text().replace('name = "resnet"\n', "")
    line = error_line(cli("run", write(tmp_path / "r.toml", text), *TINY))
    assert "[generator] needs a name" in line and "resnet" in line


def test_missing_data_folder(cli, tmp_path):
    line = error_line(cli("run", CYCLEGAN, "--set", f"data.root={tmp_path / 'nowhere'}", "--out", tmp_path / "r"))
    assert "nowhere" in line


def test_unset_data_root_says_how_to_set_it(cli, tmp_path):
    line = error_line(cli("run", CYCLEGAN, "--out", tmp_path / "r"))
    assert "data.root" in line


def test_empty_data_folder(cli, tmp_path):
    for sub in ("trainA", "trainB"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    line = error_line(cli("run", CYCLEGAN, "--set", f"data.root={tmp_path / 'data'}", "--out", tmp_path / "r"))
    assert "trainA" in line


def test_undecodable_images_are_named(cli, tmp_path):
    for sub in ("trainA", "trainB"):
        folder = tmp_path / "data" / sub
        folder.mkdir(parents=True)
        (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    result = cli("run", CYCLEGAN, "--set", f"data.root={tmp_path / 'data'}", "--out", tmp_path / "r")
    line = error_line(result)
    assert "broken.jpg" in result.err and "trainA" in line


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(cli, tmp_path):
    args = ["run", QUICK, *TINY, "--set", "run.device=cuda:7", "--out", tmp_path / "r"]
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    assert "device" in error_line(cli(*args))
    debug = cli(*args, "--debug")
    assert debug.code == 2 and "Traceback" in debug.err


def test_list_and_info(cli):
    listing = cli("list", "generator")
    assert listing.code == 0
    assert "resnet" in listing.out and "i2i" in listing.out
    everything = cli("list").out
    for name in ("resnet", "patchgan", "lsgan", "l1", "image_pool", "cycle", "unpaired", "synthetic"):
        assert name in everything
    info = cli("info", "generator", "resnet")
    assert info.code == 0
    for fragment in ("blocks", "int", "9", "instance", "dropout"):
        assert fragment in info.out
    assert "did you mean 'patchgan'" in error_line(cli("info", "discriminator", "patchgn"))


def test_python_dash_m_is_the_same_command():
    result = run_module("list", "loss")
    assert result.code == 0, result.err
    assert "lsgan" in result.out and "l1" in result.out


@pytest.mark.skipif(not (SHARED_DATA / "horse2zebra").is_dir(), reason="../shared/data/horse2zebra is absent")
def test_paper_recipe_trains_on_horse2zebra(cli, tmp_path):
    result = cli("run", CYCLEGAN, "--set", f"data.root={SHARED_DATA / 'horse2zebra'}",
                 "--set", "data.crop_size=32", "--set", "data.load_size=36", "--set", "generator.channels=8",
                 "--set", "generator.blocks=2", "--set", "discriminator.channels=8", "--set", "train.max_steps=10",
                 "--set", "data.workers=0", "--out", tmp_path / "h2z")
    assert result.code == 0, result.err
    assert (tmp_path / "h2z" / "checkpoints" / "step-00000010" / "G_A.safetensors").exists()
    # log_every (100) is beyond the run's 10 steps: step 1 is logged too, then the last step
    assert [json.loads(line)["step"] for line in (tmp_path / "h2z" / "metrics.jsonl").read_text().splitlines()] == [
        1, 10]
