"""Starting weights ([init] tables): a new run from another run's, a checkpoint's, a file's or a reference .pth's
weights; freezing; provenance; resume; and the bad inputs, each refused in one line before training."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import RECIPES, TINY, assert_same_final_state, error_line, run_module
from packages import pip_install
from test_convert import reference_generator, with_stale_instance_norm_stats
from test_resume import wait_for

QUICK = RECIPES / "quickstart.toml"
#: the source: 4 steps with an EMA of the generators, so `weights = "auto"` has a variant to pick
SOURCE = [*TINY, "--set", "callback.ema.enabled=true", "--set", "callback.ema.decay=0.5"]
FROZEN_GENERATORS = ["--set", "init.G_A.freeze=[\"*\"]", "--set", "init.G_B.freeze=[\"*\"]"]


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def tensors(file: Path) -> dict[str, torch.Tensor]:
    return load_file(file)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A finished 4-step quick-start run (checkpoints at steps 2 and 4, EMA weights beside the trained ones)."""
    run = tmp_path_factory.mktemp("source") / "run"
    result = run_module("run", QUICK, *SOURCE, "--out", run)
    assert result.code == 0, result.err
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A few small RGB images to translate."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(3)
    for i in range(3):
        array = (torch.rand(40, 48, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(array).save(folder / f"{i}.png")
    return folder


def translated(cli, checkpoint: Path, images: Path, out: Path, *extra: str) -> dict[str, bytes]:
    result = cli("translate", checkpoint, images, "--out", out, *extra)
    assert result.code == 0, result.err
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".png"}


def test_a_run_started_from_another_run_translates_as_it_does_at_step_0(cli, source, images, tmp_path):
    from i2i.engine.trainer import Trainer
    from i2i.recipe import load_recipe

    # at step 0 (built, not trained): every network holds the source's weights, the generators its EMA ones
    recipe = load_recipe(QUICK, [*SOURCE[1::2], "init.from=" + str(source)])
    with Trainer(recipe, tmp_path / "built") as trainer:
        newest = step_dir(source, 4)
        for name, net in trainer.networks.items():
            stem = f"{name}.ema" if name.startswith("G") else name
            assert same({k: v for k, v in net.state_dict().items()}, tensors(newest / f"{stem}.safetensors")), name
    assert not (tmp_path / "built").exists(), "building a run wrote its folder"

    # through the CLI: a run whose generators stay frozen translates exactly as the source does
    run = tmp_path / "tuned"
    result = cli("run", QUICK, *TINY, "--set", f"init.from={source}", *FROZEN_GENERATORS, "--out", run)
    assert result.code == 0, result.err
    assert "G_A: starting weights from" in result.err and "step 4 (G_A, EMA weights)" in result.err
    for direction in ("AtoB", "BtoA"):
        theirs = translated(cli, source, images, tmp_path / f"source-{direction}", "--direction", direction)
        mine = translated(cli, run, images, tmp_path / f"tuned-{direction}", "--direction", direction)
        assert theirs and theirs == mine, direction

    record = json.loads((run / "starting_weights.json").read_text())["networks"]
    assert set(record) == {"G_A", "G_B", "D_A", "D_B"}
    g_a = record["G_A"]
    assert g_a["source"] == "run" and g_a["step"] == 4 and g_a["weights"] == "ema" and g_a["network"] == "G_A"
    assert g_a["sha256"] == hashlib.sha256(Path(g_a["file"]).read_bytes()).hexdigest()
    assert Path(g_a["file"]) == (step_dir(source, 4) / "G_A.ema.safetensors").resolve()
    assert record["D_A"]["weights"] == "raw" and record["G_A"]["frozen"]["until_step"] is None


def test_checkpoint_folders_steps_and_raw_weights_are_sources(cli, source, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", "train.max_steps=1", *FROZEN_GENERATORS, "--out", run,
                 "--set", f"init.G_A.from={step_dir(source, 2)}", "--set", "init.G_A.weights=raw",
                 "--set", f"init.G_B.from={source}", "--set", "init.G_B.checkpoint=step-2",
                 "--set", "init.G_B.direction=AtoB")
    assert result.code == 0, result.err
    g_a, g_b = (tensors(step_dir(run, 1) / f"{n}.safetensors") for n in ("G_A", "G_B"))
    assert same(g_a, tensors(step_dir(source, 2) / "G_A.safetensors"))
    assert same(g_b, tensors(step_dir(source, 2) / "G_A.ema.safetensors")), "direction picks the source's AtoB"
    record = json.loads((run / "starting_weights.json").read_text())["networks"]
    assert record["G_A"]["source"] == "checkpoint" and record["G_B"]["step"] == 2
    assert set(record) == {"G_A", "G_B"}, "networks without a table start from random weights"


def test_freezing_keeps_tensors_identical_and_gives_them_no_optimizer_state(cli, source, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", f"init.from={source}", "--out", run,
                 "--set", "init.D_A.freeze=[\"*\"]",
                 "--set", "init.G_B.freeze=[\"model.1\"]", "--set", "init.G_B.freeze_steps=2")
    assert result.code == 0, result.err
    start = step_dir(source, 4)
    assert same(tensors(step_dir(run, 4) / "D_A.safetensors"), tensors(start / "D_A.safetensors"))
    g_b0 = {k: v for k, v in tensors(start / "G_B.ema.safetensors").items() if k.startswith("model.1.")}
    at = {step: {k: v for k, v in tensors(step_dir(run, step) / "G_B.safetensors").items() if k in g_b0}
          for step in (2, 4)}
    assert same(at[2], g_b0), "frozen for the first 2 steps"
    assert not any(at[4][k].equal(g_b0[k]) for k in g_b0), "trained after step 2"
    # D_A's parameters come first in the D group: none of them has Adam moments, all of D_B's do
    state = json.loads((step_dir(run, 4) / "training.json").read_text())["state"]["optim.D"]["state"]
    indices = sorted(int(k) for k, _ in state["__items__"])
    d_b = len(tensors(start / "D_B.safetensors"))
    assert indices == list(range(len(indices), 2 * len(indices))) and len(indices) == d_b
    record = json.loads((run / "starting_weights.json").read_text())["networks"]
    assert record["G_B"]["frozen"] == {"prefixes": ["model.1"], "parameters": 2, "until_step": 2,
                                       "values": record["G_B"]["frozen"]["values"]}


def test_a_fine_tuned_run_resumes_bit_identically_without_reading_the_source(cli, source, images, tmp_path):
    copy = tmp_path / "source"
    shutil.copytree(source, copy)
    args = [*TINY, "--set", "data.count=16", "--set", "train.max_steps=24", "--set", "callback.checkpoints.every=3",
            "--set", "train.log_every=4", "--set", "buffer.size=3", "--set", f"init.from={copy}",
            "--set", "init.G_A.freeze=[\"model.1\", \"model.4\"]", "--set", "init.D_B.freeze=[\"*\"]",
            "--set", "init.D_B.freeze_steps=10"]
    whole = tmp_path / "whole"
    assert cli("run", QUICK, *args, "--out", whole).code == 0
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "i2i", "run", str(QUICK), *args, "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(step_dir(run, 9), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not step_dir(run, 24).exists(), "the run finished before it was killed"
    recorded = (run / "starting_weights.json").read_text()
    shutil.rmtree(copy)  # --resume must not need the source
    result = cli("run", QUICK, *args, "--out", run, "--resume")
    assert result.code == 0, result.err
    assert_same_final_state(whole, run, 24)
    assert (run / "starting_weights.json").read_text() == recorded

    exported = tmp_path / "G_A.pt"
    result = cli("export", run, "--format", "torchscript", "--out", exported)
    assert result.code == 0, result.err
    assert translated(cli, run, images, tmp_path / "out")


def test_a_reference_pth_with_stale_norm_statistics_is_a_source(cli, tmp_path):
    # (a reference .pth and a hostile pickle through the recipe: test_finetune_recipe.py)
    net = reference_generator(seed=6, channels=4, blocks=2)
    pth = tmp_path / "old.pth"
    torch.save(with_stale_instance_norm_stats(net.state_dict()), pth)
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", "generator.blocks=2", "--set", "train.max_steps=1",
                 "--set", f"init.G_B.from={pth}", "--set", "init.G_B.freeze=[\"*\"]", "--out", run)
    assert result.code == 0, result.err
    assert same(tensors(step_dir(run, 1) / "G_B.safetensors"), dict(net.state_dict()))
    entry = json.loads((run / "starting_weights.json").read_text())["networks"]["G_B"]
    assert entry["source"] == "reference" and entry["step"] is None and entry["loaded"] == entry["tensors"]


def test_non_strict_loads_what_matches_and_records_the_rest(cli, source, tmp_path):
    args = [*TINY, "--set", "generator.blocks=2", "--set", "train.max_steps=1", "--set", f"init.G_A.from={source}",
            "--set", "init.G_A.freeze=[\"*\"]"]
    line = error_line(cli("run", QUICK, *args, "--out", tmp_path / "strict"))
    assert "init.G_A.from" in line and "does not fit" in line and "is not in the source" in line
    assert "init.G_A.strict = false" in line
    run = tmp_path / "loose"
    result = cli("run", QUICK, *args, "--set", "init.G_A.strict=false", "--out", run)
    assert result.code == 0, result.err
    entry = json.loads((run / "starting_weights.json").read_text())["networks"]["G_A"]
    assert entry["strict"] is False and entry["random"] and entry["loaded"] + len(entry["random"]) == entry["tensors"]
    assert "left random" in result.err
    source_g = tensors(step_dir(source, 4) / "G_A.ema.safetensors")
    mine = tensors(step_dir(run, 1) / "G_A.safetensors")
    loaded = [k for k in mine if k not in entry["random"]]
    assert loaded and all(mine[k].equal(source_g[k]) for k in loaded)


@pytest.mark.parametrize("extra, expected", [
    (["--set", "init.G_A.from=no/such/run"], ["init.G_A.from = \"no/such/run\" does not exist"]),
    (["--set", "init.G_A.from={source}", "--set", "init.G_A.direction=BtoC"],
     ["init.G_A.from", "direction 'BtoC' is not available", "AtoB, BtoA"]),
    (["--set", "init.from={source}", "--set", "generator.channels=8"],
     ["generator.channels = 4", "--set generator.channels=4"]),
    (["--set", "init.G_C.from={source}"], ["[init.G_C]", "no network 'G_C'", "G_A (generator, AtoB)", "did you mean"]),
    (["--set", "init.G_A.from={source}", "--set", "init.G_A.checkpoint=step-3"],
     ["init.G_A", "has no checkpoint 'step-3'", "step-00000002"]),
    (["--set", "init.G_A.freeze=[\"model.99\"]"], ["init.G_A.freeze", "'model.99'", "its layers"]),
    (["--set", "init.D_A.from={source}", "--set", "init.D_A.direction=AtoB"], ["init.D_A.direction", "init.D_A.network"]),
    (["--set", "init.G_A.from={source}", "--set", "init.G_A.weights=swa"], ["no 'swa' weights of G_A", "auto, raw, ema"]),
    (["--set", "init.G_A.from={source}", "--set", "init.G_A.network=D_A"], ["holds a discriminator", "G_A is a generator"]),
    (["--set", "init.G_A.from=model:horse2zebra"], ["not downloaded", "i2i download model horse2zebra"]),
    (["--set", "init.G_A.fro=x"], ["unknown key 'fro' in [init.G_A]", "did you mean 'from'"]),
    (["--set", "init.G_A.from={source}/checkpoints/step-00000002/G_A.safetensors", "--set", "init.G_A.direction=BtoA"],
     ["init.G_A.direction = \"BtoA\" picks among", "is a file holding one network's weights", "remove"]),
])
def test_bad_sources_are_refused_in_one_line_before_training(cli, source, tmp_path, extra, expected):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, *[a.replace("{source}", str(source)) for a in extra], "--out", run)
    line = error_line(result)
    assert result.code == 2
    for text in expected:
        assert text in line, line
    assert not run.exists(), "a refused run wrote its folder"


def test_a_discriminator_source_for_a_method_without_discriminators(tmp_path, source):
    from test_new_kind import RECIPE, PACKAGE
    import tomli_w

    site = tmp_path / "site"
    pip_install(site, PACKAGE)
    recipe = tmp_path / "smooth.toml"
    recipe.write_text(tomli_w.dumps({**RECIPE, "init": {"D_A": {"from": str(source)}}}))
    result = run_module("run", recipe, "--out", tmp_path / "run", env={"PYTHONPATH": str(site)})
    line = error_line(result)
    assert "[init.D_A]: method 'smooth' has no network 'D_A' (its networks: G (generator, AtoB))" in line
    assert not (tmp_path / "run").exists()


def test_resume_refuses_a_changed_source(cli, source, tmp_path):
    run = tmp_path / "run"
    assert cli("run", QUICK, *TINY, "--set", f"init.G_A.from={source}", "--out", run).code == 0
    result = cli("run", QUICK, *TINY, "--set", f"init.G_A.from={step_dir(source, 2)}", "--set",
                 "train.max_steps=6", "--out", run, "--resume")
    line = error_line(result)
    assert "--resume cannot change init.G_A.from" in line
    result = cli("run", QUICK, *TINY, "--set", f"init.G_A.from={source}", "--set", "init.D_A.freeze=[\"*\"]",
                 "--out", run, "--resume")
    assert "--resume cannot change init.D_A.freeze = [\"*\"] (was not set)" in error_line(result)
