"""recipes/finetune_cyclegan.toml as a user runs it: `i2i download model` fetches the published generators (from a
real HTTP server on 127.0.0.1 that serves reference-layout .pth files under upstream's paths), then `i2i run` starts
G_A and G_B from them; a reference .pth given directly is read as `i2i convert` reads it."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import RECIPES, error_line
from file_server import FileServer
from i2i.storage.rundir import RunFolder
from i2i_stock.datasets import draw_synthetic
from test_convert import Exploit, reference_generator

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = RECIPES / "finetune_cyclegan.toml"
#: what each published generator starts in the recipe (the catalogue's model.cyclegan names say the direction)
PUBLISHED = {"G_A": "horse2zebra", "G_B": "zebra2horse"}
#: served generators small enough to train a few steps in a test (the recipe's own size is checked apart)
SMALL = {"blocks": 2, "channels": 4}
SHORT = ["--set", "data.load_size=36", "--set", "data.crop_size=32", "--set", "data.workers=0",
         "--set", "run.device=cpu", "--set", f"generator.blocks={SMALL['blocks']}",
         "--set", f"generator.channels={SMALL['channels']}", "--set", "discriminator.channels=4",
         "--set", "train.max_steps=2", "--set", "train.log_every=1", "--set", "callback.samples.images=1"]
FREEZE_G_A = ["--set", 'init.G_A.freeze=["*"]']


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.fixture(scope="module")
def horses(tmp_path_factory) -> Path:
    """A dataset of one's own, in the reference's layout: a few 40 px images in trainA/ and trainB/."""
    root = tmp_path_factory.mktemp("my_horses")
    for domain in "AB":
        (root / f"train{domain}").mkdir()
        for i in range(3):
            draw_synthetic(i, "train", domain, 0, 40).save(root / f"train{domain}" / f"{i}.png")
    return root


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


def serve_published(server: FileServer, **options) -> dict[str, dict[str, torch.Tensor]]:
    """Reference-layout .pth generators (random, distinct weights) where upstream publishes horse2zebra and
    zebra2horse; their state dicts by name."""
    states = {}
    for seed, name in enumerate(PUBLISHED.values()):
        states[name] = reference_generator(seed, **options).state_dict()
        buffer = io.BytesIO()
        torch.save(states[name], buffer)
        server.files[f"/cyclegan/pretrained_models/{name}.pth"] = buffer.getvalue()
    return states


def download(cli, server: FileServer, cache: Path) -> dict[str, Path]:
    """`i2i download model NAME` for both published generators, as the recipe's comments say; the files by name."""
    files = {}
    for name in PUBLISHED.values():
        result = cli("download", "model", name, "--url", server.url)
        assert result.code == 0, result.err
        files[name] = cache / "models" / "cyclegan" / f"{name}.safetensors"
        assert files[name].is_file() and str(files[name]) in result.out
    return files


def test_the_recipe_fine_tunes_the_downloaded_generators_and_records_them(cli, server, horses, isolated_cache,
                                                                          tmp_path):
    served = serve_published(server, **SMALL)
    files = download(cli, server, isolated_cache)
    run = tmp_path / "run"
    result = cli("run", RECIPE, "--set", f"data.root={horses}", *SHORT, *FREEZE_G_A, "--out", run)
    assert result.code == 0, result.err
    assert "G_A: starting weights from model:horse2zebra" in result.err
    assert "G_B: starting weights from model:zebra2horse" in result.err

    final = run / "checkpoints" / "step-00000002"
    # G_A (frozen) is still exactly the downloaded generator, which is exactly the served one
    g_a = load_file(final / "G_A.safetensors")
    assert same(g_a, load_file(files["horse2zebra"])) and same(g_a, served["horse2zebra"])
    # G_B trained for 2 steps from the downloaded weights: changed, but by Adam steps of about optim.G.lr, nowhere near
    # the 0.1 scale by which the served weights differ from a random start
    g_b, published = load_file(final / "G_B.safetensors"), load_file(files["zebra2horse"])
    assert g_b.keys() == published.keys()
    moved = max((g_b[k] - published[k]).abs().max().item() for k in g_b)
    assert 0 < moved < 1e-3, moved

    record = RunFolder(run).read_starting_weights()
    assert set(record) == set(PUBLISHED)  # the discriminators started from random weights
    for network, name in PUBLISHED.items():
        entry = record[network]
        assert (entry["source"], entry["from"], entry["strict"]) == ("model", f"model:{name}", True)
        assert Path(entry["file"]) == files[name].resolve()
        assert entry["sha256"] == hashlib.sha256(files[name].read_bytes()).hexdigest()
        assert entry["loaded"] == entry["tensors"] == len(served[name])
    assert record["G_A"]["frozen"]["prefixes"] == ["*"] and "frozen" not in record["G_B"]

    # the cache emptied, --resume still continues: from the run's own checkpoint, the source not read again
    shutil.rmtree(isolated_cache / "models")
    again = cli("run", RECIPE, "--set", f"data.root={horses}", *SHORT, *FREEZE_G_A, "--set", "train.max_steps=3",
                "--out", run, "--resume")
    assert again.code == 0, again.err
    assert same(load_file(run / "checkpoints" / "step-00000003" / "G_A.safetensors"), served["horse2zebra"])
    assert RunFolder(run).read_starting_weights() == record


def test_the_recipe_as_written_holds_the_published_generators(cli, server, horses, isolated_cache, tmp_path):
    """The recipe's [generator] table is the published generators' layout (ResNet 9 blocks, 64 channels): at full
    size, the downloaded files load into the networks the recipe builds (built, not trained: a step takes seconds)."""
    from i2i.engine.trainer import Trainer
    from i2i.recipe import load_recipe

    # the reference's resnet_9blocks with --ngf 64 --norm instance, no dropout: what the recipe's table must say
    published = {"blocks": 9, "channels": 64, "norm": "instance", "dropout": False}
    table = tomllib.loads(RECIPE.read_text())["generator"]
    assert table["name"] == "resnet" and {k: table[k] for k in published} == published
    served = serve_published(server, **published)
    download(cli, server, isolated_cache)
    recipe = load_recipe(RECIPE, [f"data.root={horses}", "data.workers=0", "run.device=cpu"])
    with Trainer(recipe, tmp_path / "built") as trainer:
        for network, name in PUBLISHED.items():
            assert same(trainer.networks[network].state_dict(), served[name]), network
    assert not (tmp_path / "built").exists()


def test_a_model_not_downloaded_is_one_line_saying_what_to_run(cli, horses, isolated_cache, tmp_path):
    run = tmp_path / "run"
    as_written = cli("run", RECIPE, "--set", f"data.root={horses}", *SHORT, "--out", run)
    line = error_line(as_written)
    assert as_written.code == 2
    assert 'init.G_A.from = "model:horse2zebra"' in line and "run `i2i download model horse2zebra` first" in line
    other = cli("run", RECIPE, "--set", f"data.root={horses}", *SHORT, "--set", "init.G_A.from=model:NOT_DOWNLOADED",
                "--out", run)
    line = error_line(other)
    assert other.code == 2
    assert "init.G_A.from" in line and "run `i2i download model NOT_DOWNLOADED` first" in line
    assert str(isolated_cache / "models") in line  # where it looked
    assert not run.exists()


def test_a_reference_pth_is_a_source_and_a_pickle_that_runs_code_is_refused_as_convert_refuses_it(cli, horses,
                                                                                                    tmp_path):
    nets, given = {}, []
    for seed, network in enumerate(PUBLISHED):
        nets[network] = reference_generator(seed, **SMALL).state_dict()
        torch.save(nets[network], tmp_path / f"latest_net_{network}.pth")
        given += ["--set", f"init.{network}.from={tmp_path / f'latest_net_{network}.pth'}"]
    run = tmp_path / "run"
    result = cli("run", RECIPE, "--set", f"data.root={horses}", *SHORT, *given, *FREEZE_G_A, "--out", run)
    assert result.code == 0, result.err
    assert same(load_file(run / "checkpoints" / "step-00000002" / "G_A.safetensors"), nets["G_A"])
    entry = RunFolder(run).read_starting_weights()["G_A"]
    pth = tmp_path / "latest_net_G_A.pth"
    assert (entry["source"], Path(entry["file"])) == ("reference", pth.resolve())
    assert entry["sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()

    marker, evil = tmp_path / "pwned", tmp_path / "evil_net_G_A.pth"
    with evil.open("wb") as f:
        pickle.dump({"model.1.weight": Exploit(marker)}, f, protocol=2)
    refused = cli("run", RECIPE, "--set", f"data.root={horses}", *SHORT, *given, "--set", f"init.G_A.from={evil}",
                  "--out", tmp_path / "evil_run")
    line = error_line(refused)
    assert refused.code == 2 and line.startswith(f"error: init.G_A.from: {evil}: ")
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "evil_run").exists()
    # the same reader as `i2i convert`, with the same reason
    reason = re.compile(r"it is not a plain state dict of tensors \(refused to unpickle it: [^)]*\)")
    convert_line = error_line(cli("convert", evil, "--out", tmp_path / "evil.safetensors"))
    assert reason.search(line) and reason.search(line).group() == reason.search(convert_line).group()
