"""The related systems as recipes (pix2pix, DualGAN, DiscoGAN) and stock part swaps, through the CLI."""

from __future__ import annotations

import json
import tomllib

import pytest

from conftest import RECIPES, SHARED_DATA, TINY, error_line

QUICK = RECIPES / "quickstart.toml"
SMALL_DATA = ["--set", "data.load_size=36", "--set", "data.crop_size=32", "--set", "data.workers=0",
              "--set", "data.batch_size=1", "--set", "train.max_steps=2", "--set", "train.log_every=1",
              "--set", "train.checkpoint_every=0", "--set", "train.samples=1"]
SMALL_NETS = {
    "pix2pix": ["--set", "generator.downs=5", "--set", "generator.channels=4", "--set", "discriminator.channels=4"],
    "dualgan": ["--set", "generator.downs=5", "--set", "generator.channels=4", "--set", "discriminator.channels=4"],
    "discogan": ["--set", "generator.depth=3", "--set", "generator.channels=4", "--set", "discriminator.channels=4"],
}
SYNTHETIC = {
    "pix2pix": ["--set", "data.name=synthetic", "--set", "data.paired=true", "--set", "data.count=4"],
    "dualgan": ["--set", "data.name=synthetic", "--set", "data.count=4"],
    "discogan": ["--set", "data.name=synthetic", "--set", "data.count=4"],
}
SHARED = {"pix2pix": "maps", "dualgan": "horse2zebra", "discogan": "horse2zebra"}


def losses(run) -> dict[str, float]:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["losses"]


@pytest.mark.parametrize("system", ["pix2pix", "dualgan", "discogan"])
def test_recipe_trains_on_synthetic_data(cli, tmp_path, system):
    run = tmp_path / system
    result = cli("run", RECIPES / f"{system}.toml", *SYNTHETIC[system], *SMALL_DATA, *SMALL_NETS[system],
                 "--out", run)
    assert result.code == 0, result.err
    assert (run / "checkpoints" / "step-00000002").is_dir()
    got = losses(run)
    expected = {"pix2pix": {"D_fake", "D_real", "G_GAN", "G_L1"},
                "dualgan": {"G_A", "G_B", "cycle_A", "cycle_B", "D_A", "D_B"},
                "discogan": {"G_A", "G_B", "cycle_A", "cycle_B", "fm_A", "fm_B", "D_A", "D_B"}}[system]
    assert set(got) == expected


@pytest.mark.parametrize("system", ["pix2pix", "dualgan", "discogan"])
def test_recipe_trains_on_the_shared_data(cli, tmp_path, system):
    root = SHARED_DATA / SHARED[system]
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    run = tmp_path / system
    result = cli("run", RECIPES / f"{system}.toml", "--set", f"data.root={root}", *SMALL_DATA,
                 *SMALL_NETS[system], "--out", run)
    assert result.code == 0, result.err
    assert (run / "checkpoints" / "step-00000002").is_dir()


def test_pix2pix_translates_one_way(cli, tmp_path):
    run = tmp_path / "p2p"
    assert cli("run", RECIPES / "pix2pix.toml", *SYNTHETIC["pix2pix"], *SMALL_DATA, *SMALL_NETS["pix2pix"],
               "--out", run).code == 0
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    assert recipe["discriminator"]["name"] == "patchgan"
    generators = json.loads((run / "checkpoints" / "step-00000002" / "training.json").read_text())["generators"]
    assert generators == {"AtoB": "G"}


def test_paired_method_refuses_unpaired_data(cli, tmp_path):
    line = error_line(cli("run", RECIPES / "pix2pix.toml", "--set", "data.name=synthetic", *SMALL_DATA,
                          *SMALL_NETS["pix2pix"], "--out", tmp_path / "r"))
    assert "needs paired data" in line and "data.paired = true" in line


@pytest.mark.parametrize("swap", [
    ["--set", "generator.name=unet", "--set", "generator.downs=5", "--set", "generator.channels=4"],
    ["--set", "generator.name=encdec", "--set", "generator.depth=3", "--set", "generator.channels=4"],
    ["--set", "loss.adversarial.name=vanilla"],
    ["--set", "loss.adversarial.name=wgangp"],
    ["--set", "buffer.name=none"],
    ["--set", "loss.feature_matching.weight=1"],
    ["--set", "optim.optimizer=rmsprop", "--set", "optim.lr=5e-5"],
])
def test_stock_parts_swap_in_with_set_alone(cli, tmp_path, swap):
    run = tmp_path / "run"
    tiny = list(TINY)
    if swap[1].startswith("generator.name"):  # TINY's ResNet sizes do not apply to another generator
        pairs = [tiny[i:i + 2] for i in range(0, len(tiny), 2)]
        tiny = [x for pair in pairs if not pair[1].startswith("generator.") for x in pair]
    result = cli("run", QUICK, *tiny, *swap, "--out", run)
    assert result.code == 0, result.err
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    key, value = swap[1].split("=")
    table, _, option = key.rpartition(".")
    node = recipe
    for part in table.split("."):
        node = node[part]
    expected = tomllib.loads(f"v = {value}")["v"] if value[0].isdigit() else value
    assert node[option] == expected
