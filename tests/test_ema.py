"""The `ema` callback: an exponential moving average of the generator weights, saved as <network>.ema.safetensors in
every checkpoint, used by translate/evaluate/export unless --raw, and by the report samples through
TrainingContext.evaluation_weights. Which variant inference uses is what the callback declares (weights_variant), never
a name the core knows: a callback of another package declaring another variant is used the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from conftest import RECIPES, TINY, assert_same_final_state, error_line, kill_9_at, run_module
from i2i.contract.parts import Method

QUICK = RECIPES / "quickstart.toml"
STEPS = ["--set", "train.max_steps=4", "--set", "train.log_every=1", "--set", "train.checkpoint_every=1",
         "--set", "train.keep_checkpoints=0"]
EMA = ["--set", "callback.ema.decay=0.6", "--set", "callback.ema.start_step=1"]


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def rewrite_state(folder: Path, change) -> None:
    """Rewrite a checkpoint's training.json with `change(state)` applied and its own checksum recomputed: what a
    checkpoint of an earlier i2i holds (a valid file, just without what this one adds)."""
    from i2i.storage.checkpoint import STATE_FILE, state_digest

    state = json.loads((folder / STATE_FILE).read_text())
    change(state)
    state["sha256"][STATE_FILE] = state_digest(state)
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))


# -- the update on a toy network ----------------------------------------------------------------------------------

class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)


def toy_context(net: nn.Module) -> SimpleNamespace:
    other = nn.Linear(2, 2)  # a discriminator: not averaged

    class OneSided(Method):  # the Method interface's generator lookup, one generator
        def generator_for(self, direction: str) -> nn.Module:
            if direction != "AtoB":
                raise KeyError(direction)
            return net

    return SimpleNamespace(networks={"G": net, "D": other}, method=OneSided(), recipe={"method": {"name": "toy"}})


def test_the_update_is_the_hand_computed_average_from_start_step_every_n_steps():
    from i2i_stock.callbacks.ema import EMA

    torch.manual_seed(0)
    net = Toy().to(memory_format=torch.channels_last)
    context = toy_context(net)
    ema = EMA(decay=0.9, start_step=2, every=2)
    ema.track(context)
    params = {k: v for k, v in net.state_dict(keep_vars=True).items() if isinstance(v, nn.Parameter)}
    expected = {k: v.detach().double().clone() for k, v in params.items()}
    for step in range(1, 8):
        with torch.no_grad():  # what an optimizer step does: new weights, in place
            for p in params.values():
                p.copy_(torch.randn_like(p))
            net.norm.running_mean.copy_(torch.randn(4))
        ema.update(step)
        for k, p in params.items():
            w = p.detach().double()
            if step <= 2:
                expected[k] = w.clone()
            elif (step - 2) % 2 == 0:
                expected[k] = 0.9 * expected[k] + 0.1 * w
    assert ema.updates == 2  # steps 4 and 6
    saved = ema.checkpoint_variants(context)["ema"]["G"]  # tensors, no stand-in module
    assert list(saved) == list(net.state_dict())  # the raw network's keys and nothing else: no "D"
    for k in params:
        assert torch.allclose(saved[k].double(), expected[k], rtol=0, atol=1e-6), k
    # buffers (batch-norm statistics) are the raw network's, not averaged
    assert saved["norm.running_mean"].equal(net.norm.running_mean)
    fresh = Toy()
    fresh.load_state_dict({k: v.contiguous() for k, v in saved.items()})  # loads into a network without the layout

    # swapped in for evaluation, then the raw weights come back bit for bit
    raw = {k: v.detach().clone() for k, v in params.items()}
    with ema.swap_in_for_evaluation(context):
        assert all(params[k].equal(saved[k]) for k in params)
    assert all(params[k].equal(raw[k]) for k in params)
    assert net.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_decay_must_lie_strictly_between_0_and_1(cli, tmp_path):
    result = cli("run", QUICK, *TINY, "--set", "callback.ema.decay=1.0", "--out", tmp_path / "run")
    assert "decay = 1.0 must lie strictly between 0 and 1" in error_line(result)


# -- a real run ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread) -> dict[str, Path]:
    """The same tiny run (checkpoints at every step) with and without the average."""
    from i2i.cli import main

    root = tmp_path_factory.mktemp("ema")
    found = {}
    for name, extra in (("ema", EMA), ("plain", [])):
        found[name] = root / name
        try:
            main(["run", str(QUICK), *TINY, *STEPS, *extra, "--out", str(found[name])])
        except SystemExit as exc:
            assert not exc.code, f"training {name} failed"
    return found


def test_the_saved_average_is_the_hand_computed_one(runs):
    run = runs["ema"]
    files = sorted(p.name for p in ckpt(run, 4).glob("*.safetensors"))
    assert files == ["D_A.safetensors", "D_B.safetensors", "G_A.ema.safetensors", "G_A.safetensors",
                     "G_B.ema.safetensors", "G_B.safetensors", "training.safetensors"]
    state = json.loads((ckpt(run, 4) / "training.json").read_text())
    assert state["variants"] == {"ema": {"G_A": "G_A.ema", "G_B": "G_B.ema"}}
    assert state["weights_variant"] == "ema"  # what the callback declared for inference
    assert state["state"]["callback.ema"]["updates"] == 3  # steps 2, 3, 4 (step 1 is start_step: a copy)
    for network in ("G_A", "G_B"):
        raw = [load_file(ckpt(run, s) / f"{network}.safetensors") for s in range(1, 5)]
        average = {k: v.double() for k, v in raw[0].items()}  # a copy of the weights up to start_step
        for weights in raw[1:]:
            average = {k: 0.6 * average[k] + 0.4 * weights[k].double() for k in average}
        saved = load_file(ckpt(run, 4) / f"{network}.ema.safetensors")
        assert saved.keys() == raw[-1].keys()
        worst = max(float((saved[k].double() - average[k]).abs().max()) for k in saved)
        assert worst < 1e-6
        assert any(not saved[k].equal(raw[-1][k]) for k in saved)  # it differs from the raw weights
        with safe_open(ckpt(run, 4) / f"{network}.ema.safetensors", "pt") as a, \
                safe_open(ckpt(run, 4) / f"{network}.safetensors", "pt") as b:
            assert a.metadata() == b.metadata() and a.metadata()["i2i.name"] == "resnet"


def test_the_average_leaves_training_alone_and_draws_the_samples(runs):
    # the swap for the samples restores the raw weights exactly: training is bit-identical without the callback
    for network in ("G_A", "G_B", "D_A", "D_B"):
        a, b = (load_file(ckpt(runs[r], 4) / f"{network}.safetensors") for r in ("ema", "plain"))
        assert all(a[k].equal(b[k]) for k in a), network
    # ... while the sample grids, drawn under context.evaluation_weights(), show the averaged generators
    grid = {r: np.asarray(Image.open(runs[r] / "samples" / "step-00000004.png")) for r in runs}
    assert not np.array_equal(grid["ema"], grid["plain"])


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "x.png")
    return folder / "x.png"


def test_translate_uses_the_average_and_raw_the_trained_weights(cli, runs, image, tmp_path):
    run, step = runs["ema"], ckpt(runs["ema"], 4)
    out = {}
    for name, args in {"default": [run], "raw": [run, "--raw"], "ema_file": [step / "G_A.ema.safetensors"],
                       "raw_file": [step / "G_A.safetensors"]}.items():
        result = cli("translate", *args[:1], image, "--out", tmp_path / name, *args[1:])
        assert result.code == 0, result.err
        out[name] = pixels(tmp_path / name / "x.png")
        if name == "default":
            assert "translated 1 image with the EMA weights (G_A.ema) into" in result.out
        if name == "raw":
            assert "with the raw weights (G_A)" in result.out
    assert np.array_equal(out["default"], out["ema_file"]) and np.array_equal(out["raw"], out["raw_file"])
    assert not np.array_equal(out["default"], out["raw"])


def test_evaluate_and_export_use_the_average(cli, runs, tmp_path):
    run = runs["ema"]
    result = cli("evaluate", run)
    assert result.code == 0, result.err
    assert "with the EMA weights (G_A.ema, G_B.ema)" in result.out
    assert json.loads((run / "metrics.json").read_text())["generators"] == {"AtoB": "G_A.ema.safetensors",
                                                                            "BtoA": "G_B.ema.safetensors"}
    raw = cli("evaluate", run, "--raw")
    assert raw.code == 0 and "with the raw weights (G_A, G_B)" in raw.out
    assert json.loads((run / "metrics.json").read_text())["generators"]["AtoB"] == "G_A.safetensors"

    from i2i.tools.generators import load_generator

    exported = cli("export", run, "--format", "torchscript", "--out", tmp_path / "g.pt", "--direction", "BtoA")
    assert exported.code == 0, exported.err
    assert "note: exported the EMA weights (G_B.ema)" in exported.err and "passed:" in exported.out
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        scripted = torch.jit.load(str(tmp_path / "g.pt"))(x)
        ema = load_generator(ckpt(run, 4) / "G_B.ema.safetensors")(x)
        trained = load_generator(run, "BtoA", raw=True)(x)
    assert (scripted - ema).abs().max() < 1e-4 and (scripted - trained).abs().max() > 1e-4


def test_batch_norm_statistics_are_copied_and_the_average_loads_channels_last(cli, tmp_path, one_thread):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", "train.max_steps=2", "--set", "generator.norm=batch",
                 "--set", "run.channels_last=true", "--set", "callback.ema.decay=0.5", "--out", run)
    assert result.code == 0, result.err
    ema, raw = (load_file(ckpt(run, 2) / f"G_A{v}.safetensors") for v in (".ema", ""))
    stats = [k for k in raw if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(ema[k].equal(raw[k]) for k in stats)
    assert raw[stats[0]].abs().sum() > 0 and not ema["model.1.weight"].equal(raw["model.1.weight"])
    from i2i.tools.generators import load_generator

    assert load_generator(run, "AtoB").training is False  # the average rebuilt into a fresh network


# -- kill -9, then --resume ---------------------------------------------------------------------------------------

def test_kill_9_then_resume_is_bit_identical_with_the_average(tmp_path):
    env = {"OMP_NUM_THREADS": "1"}
    long = [*TINY, "--set", "data.count=4", "--set", "train.epochs=4", "--set", "train.decay_epochs=0",
            "--set", "train.max_steps=14", "--set", "train.checkpoint_every=3", "--set", "train.log_every=2",
            "--set", "train.keep_checkpoints=0", "--set", "callback.ema.decay=0.7", "--set", "callback.ema.every=2"]
    assert run_module("run", QUICK, *long, "--out", tmp_path / "whole", env=env).code == 0
    run = tmp_path / "killed"
    kill_9_at(run, 6, 14, [QUICK, *long], env)
    resumed = run_module("run", QUICK, *long, "--out", run, "--resume", env=env)
    assert resumed.code == 0, resumed.err
    assert (ckpt(run, 14) / "G_A.ema.safetensors").is_file()
    assert_same_final_state(tmp_path / "whole", run, 14)  # every .safetensors, the .ema files included


# -- which variant inference uses: the declaration, also for checkpoints written before it was recorded --------------

def test_a_checkpoint_without_the_record_still_picks_the_average_its_recipe_enabled(cli, runs, image, tmp_path):
    run = Path(shutil.copytree(runs["ema"], tmp_path / "old"))
    step = ckpt(run, 4)
    for folder in run.glob("checkpoints/step-*"):
        rewrite_state(folder, lambda state: state.pop("weights_variant"))
    assert "weights_variant" not in json.loads((step / "training.json").read_text())
    result = cli("translate", run, image, "--out", tmp_path / "default")
    assert result.code == 0, result.err
    assert "with the EMA weights (G_A.ema)" in result.out  # the registry says: callback ema writes "ema"
    assert cli("translate", step / "G_A.ema.safetensors", image, "--out", tmp_path / "file").code == 0
    assert np.array_equal(pixels(tmp_path / "default" / "x.png"), pixels(tmp_path / "file" / "x.png"))

    # the recipe it was trained with did not enable the callback: the files are not inference's, the weights are
    rewrite_state(step, lambda state: state["recipe"]["callback"]["ema"].update(enabled=False))
    result = cli("translate", run, image, "--out", tmp_path / "unlisted")
    assert result.code == 0 and "EMA" not in result.out, result.out
    assert cli("translate", step / "G_A.safetensors", image, "--out", tmp_path / "raw").code == 0
    assert np.array_equal(pixels(tmp_path / "unlisted" / "x.png"), pixels(tmp_path / "raw" / "x.png"))


def averaging_plugin():
    """A plugin as another package writes one: the stock average under another name and variant, and a callback
    written before checkpoint_variants existed (a module from checkpoint_networks)."""
    import i2i
    from i2i.api import Callback
    from i2i_stock.callbacks.ema import EMA

    class Averaging(EMA):
        """The average, written as <network>.avg.safetensors and declared as the weights inference uses."""

        name = "test_average"
        weights_variant = "avg"

    class Legacy(Callback):
        """Saves a copy of G_A as a module, the way callbacks did before tensors."""

        name = "test_legacy"

        def checkpoint_networks(self, context):
            return {"copy": {"G_A": context.networks["G_A"]}}

    class Plugin:
        @i2i.hookimpl
        def i2i_callbacks(self):
            return [Averaging, Legacy]

    return Plugin()


@pytest.fixture
def averaging():
    from i2i.contract.registry import default_registry

    registry = default_registry()
    registry.register(averaging_plugin(), name="test-averaging")
    yield
    registry.manager.unregister(name="test-averaging")
    registry._parts = None


def test_translate_uses_the_variant_a_callback_declares(cli, averaging, image, tmp_path, one_thread):
    run = tmp_path / "run"
    args = [QUICK, *TINY, *STEPS, "--set", "callback.test_average.decay=0.6", "--set",
            "callback.test_legacy.enabled=true", "--out", run]
    result = cli("run", *args)
    assert result.code == 0, result.err
    step = ckpt(run, 4)
    state = json.loads((step / "training.json").read_text())
    assert state["weights_variant"] == "avg"
    assert state["variants"] == {"avg": {"G_A": "G_A.avg", "G_B": "G_B.avg"}, "copy": {"G_A": "G_A.copy"}}
    assert not list(step.glob("*.ema.*"))
    copy, trained = load_file(step / "G_A.copy.safetensors"), load_file(step / "G_A.safetensors")
    assert copy.keys() == trained.keys() and all(copy[k].equal(trained[k]) for k in copy)

    out = {}
    for name, given in {"default": [run], "raw": [run, "--raw"], "avg": [step / "G_A.avg.safetensors"],
                        "trained": [step / "G_A.safetensors"]}.items():
        result = cli("translate", given[0], image, "--out", tmp_path / name, *given[1:])
        assert result.code == 0, result.err
        out[name] = pixels(tmp_path / name / "x.png")
        if name == "default":
            assert "with the AVG weights (G_A.avg)" in result.out
    assert np.array_equal(out["default"], out["avg"]) and np.array_equal(out["raw"], out["trained"])
    assert not np.array_equal(out["default"], out["raw"])

    # --resume reads the average back through context.checkpoints.read_variant, by the declared name
    resumed = cli("run", *args[:-2], "--set", "train.max_steps=5", "--out", run, "--resume")
    assert resumed.code == 0 and "holds no EMA average" not in resumed.err, resumed.err
    assert (ckpt(run, 5) / "G_B.avg.safetensors").is_file()


def test_two_callbacks_declaring_the_inference_weights_are_refused(cli, averaging, tmp_path):
    result = cli("run", QUICK, *TINY, "--set", "callback.ema.decay=0.9", "--set", "callback.test_average.decay=0.9",
                 "--out", tmp_path / "run")
    line = error_line(result)
    assert "callbacks 'ema' and 'test_average' both declare the weights inference uses" in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()
