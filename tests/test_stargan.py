"""StarGAN: one generator for N domains, trained through the CLI on 3-domain data, resumed bit for bit after kill -9,
its directions recorded in the checkpoint; also on two-domain data; what it cannot take refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

import i2i
from conftest import RECIPES, SHARED_DATA, assert_same_final_state, error_line, kill_9_at, run_module

STARGAN = RECIPES / "stargan.toml"
TINY = ["--set", "data.name=synthetic_domains", "--set", "data.count=4", "--set", "data.load_size=36",
        "--set", "data.crop_size=32", "--set", "data.batch_size=2", "--set", "data.workers=0",
        "--set", "generator.channels=4", "--set", "generator.blocks=1", "--set", "discriminator.channels=4",
        "--set", "discriminator.layers=2", "--set", "train.max_steps=6", "--set", "train.log_every=3",
        "--set", "method.critic_steps=2", "--set", "callback.checkpoints.every=3",
        "--set", "callback.samples.images=2", "--set", "run.threads=1"]


TWO_DOMAIN_TINY = ["--set", "data.count=4", "--set", "data.load_size=36", "--set", "data.crop_size=32",
                   "--set", "data.workers=0", "--set", "generator.channels=4", "--set", "generator.blocks=1",
                   "--set", "discriminator.channels=4", "--set", "train.max_steps=2", "--set", "callback.samples.images=0"]


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_stargan_trains_on_three_domains_and_records_its_directions(cli, tmp_path, one_thread):
    run = tmp_path / "run"
    result = cli("run", STARGAN, *TINY, "--out", run)
    assert result.code == 0, result.err
    last = records(run)[-1]
    assert last["step"] == 6
    # D every step, G every critic_steps-th: each loss is the mean over the steps that computed it
    assert {"D_real", "D_fake", "D_cls", "D_penalty", "G_adv", "G_cls", "G_rec"} <= set(last["losses"])
    state = json.loads((run / "checkpoints" / "step-00000006" / "training.json").read_text())
    domains = state["directions"]["domains"]
    assert len(domains) == 3
    assert state["directions"]["directions"] == {
        f"to_{d}": {"source": None, "target": d, "network": "G", "condition": i} for i, d in enumerate(domains)}
    assert state["generators"] == {f"to_{d}": "G" for d in domains}
    assert sorted(p.name for p in (run / "checkpoints" / "step-00000006").glob("*.safetensors")) == [
        "D.safetensors", "G.safetensors", "training.safetensors"]
    # the sample grid: 2 images spread over the split (the first and the last domain), each translated to every domain
    from PIL import Image

    grid = Image.open(sorted((run / "samples").glob("*.png"))[-1])
    assert grid.width > grid.height  # columns: the image and its 3 translations; rows: 2 samples


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny StarGAN run on the 3-domain synthetic data (trained once for the module)."""
    run = tmp_path_factory.mktemp("stargan") / "run"
    result = run_module("run", STARGAN, *TINY, "--out", run)
    assert result.code == 0, result.err
    return run


def test_export_one_file_per_target_domain_and_compare(cli, tmp_path, trained):
    domains = json.loads((trained / "checkpoints" / "step-00000006" / "training.json").read_text())[
        "directions"]["domains"]
    result = cli("export", trained, "--format", "torchscript", "--to", domains[1], "--out", tmp_path / "g.pt")
    assert result.code == 0, result.err
    assert f"(to_{domains[1]})" in result.out and "held-out image 1" in result.out and "passed" in result.out
    exported = torch.jit.load(str(tmp_path / "g.pt"))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    assert exported(image).shape == image.shape
    line = error_line(cli("export", trained, "--format", "torchscript", "--out", tmp_path / "x.pt"))
    assert "pick one with --to DOMAIN" in line
    result = cli("compare", trained, "--out", tmp_path / "compare")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "compare").glob("compare-to_*.png")) == [
        f"compare-to_{d}.png" for d in sorted(domains)]


def test_evaluate_and_validation_report_per_target_domain(cli, tmp_path, trained, one_thread):
    domains = json.loads((trained / "checkpoints" / "step-00000006" / "training.json").read_text())[
        "directions"]["domains"]
    result = cli("evaluate", trained)
    assert result.code == 0, result.err
    metrics = json.loads((trained / "metrics.json").read_text())["metrics"]
    assert sorted(metrics) == sorted(f"to_{d}" for d in domains)
    # each target: the test images of the other two domains (4 each), and their way back to their own
    assert all(m["images"] == 8 and 0 < m["cycle_l1"] < 1 for m in metrics.values())
    run = tmp_path / "validated"
    keep = f"to_{domains[0]}.cycle_l1"
    result = cli("run", STARGAN, *TINY, "--set", "callback.validation.enabled=true", "--set",
                 "callback.validation.every=3", "--set", f"callback.validation.keep_best={keep}", "--out", run)
    assert result.code == 0, result.err
    validated = [r["validation"] for r in records(run) if "validation" in r]
    assert [v["step"] for v in validated] == [3, 6] and set(validated[0]) == {"step", *metrics}
    assert (run / "checkpoints" / "best").is_dir()


def test_translate_to_each_domain_of_a_stargan_run(cli, tmp_path, trained):
    from PIL import Image

    run = trained
    domains = json.loads((run / "checkpoints" / "step-00000006" / "training.json").read_text())["directions"]["domains"]
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 36), (200, 30, 60)).save(images / "x.png")
    outputs = {}
    for domain in domains:
        result = cli("translate", run, images, "--to", domain, "--out", tmp_path / domain)
        assert result.code == 0, result.err
        outputs[domain] = Image.open(tmp_path / domain / "x.png")
        assert outputs[domain].size == (40, 36)
    assert outputs[domains[0]].tobytes() != outputs[domains[1]].tobytes()
    # the generator file alone knows its domains
    alone = cli("translate", run / "checkpoints" / "step-00000006" / "G.safetensors", images, "--to", domains[2],
                "--out", tmp_path / "alone")
    assert alone.code == 0, alone.err
    line = error_line(cli("translate", run, images, "--to", "winter", "--out", tmp_path / "bad"))
    assert f"--to winter: {run} translates to {', '.join(sorted(domains))} (from any of them)" in line
    line = error_line(cli("translate", run / "checkpoints" / "step-00000006" / "G.safetensors", images,
                          "--out", tmp_path / "bad2"))
    assert f"translates to any of the domains {', '.join(domains)}: pick one with --to DOMAIN" in line


def test_to_names_the_direction_of_a_two_domain_run(cli, tmp_path, one_thread):
    from PIL import Image

    run = tmp_path / "run"
    assert cli("run", RECIPES / "quickstart.toml", *TWO_DOMAIN_TINY, "--out", run).code == 0
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (20, 130, 60)).save(images / "x.png")
    for flags, out in ((["--to", "A"], "to_a"), (["--direction", "BtoA"], "btoa"), (["--from", "B"], "from_b")):
        assert cli("translate", run, images, *flags, "--out", tmp_path / out).code == 0
    same = [(tmp_path / out / "x.png").read_bytes() for out in ("to_a", "btoa", "from_b")]
    assert same[0] == same[1] == same[2]
    line = error_line(cli("translate", run, images, "--to", "C", "--out", tmp_path / "bad"))
    assert "--to C:" in line and "translates to A, B (from A, B)" in line


def test_kill_9_then_resume_is_bit_identical(cli, tmp_path):
    args = [STARGAN, *TINY, "--set", "train.max_steps=12", "--set", "callback.checkpoints.every=2",
            "--set", "train.keep_checkpoints=0"]
    assert cli("run", *args, "--out", tmp_path / "whole").code == 0
    run = tmp_path / "killed"
    kill_9_at(run, 4, 12, args)
    result = cli("run", *args, "--out", run, "--resume")
    assert result.code == 0, result.err
    assert_same_final_state(tmp_path / "whole", run, 12)


def test_stargan_also_trains_on_two_domain_data(cli, tmp_path, one_thread):
    run = tmp_path / "run"
    result = cli("run", STARGAN, *TINY, "--set", "data.name=synthetic", "--out", run)
    assert result.code == 0, result.err
    state = json.loads((run / "checkpoints" / "step-00000006" / "training.json").read_text())
    assert state["directions"]["domains"] == ["A", "B"]


def test_the_method_s_directions_bind_the_shared_generator_to_each_target(tmp_path, one_thread):
    from i2i.engine import Trainer
    from i2i.recipe import load_recipe

    recipe = load_recipe(STARGAN, [arg for arg in TINY if arg != "--set"])
    with Trainer(recipe, tmp_path / "run") as trainer:
        method = trainer.method
        directions = method.directions()
        assert list(directions) == [f"to_{d}" for d in method.domains()]
        image = torch.rand(1, 3, 32, 32) * 2 - 1
        outputs = [method.generators()[name](image) for name in directions]
        assert all(o.shape == image.shape for o in outputs)
        assert not torch.equal(outputs[0], outputs[1])  # the condition reaches the network
        assert all(i2i.api.trained_network(g) is method.G for g in method.generators().values())


@pytest.mark.parametrize("setting, expected", [
    (["data.name=synthetic_domains", "data.domains=1"], "data.domains"),
    (["run.capture=true"], "critic_steps > 1 updates the generator on some steps only"),
    (["data.channels=1"], "trains on 8-bit RGB data only for now"),
])
def test_what_stargan_cannot_take_is_one_line(cli, tmp_path, setting, expected):
    sets = [arg for key in setting for arg in ("--set", key)]
    line = error_line(cli("run", STARGAN, *TINY, *sets, "--out", tmp_path / "run"))
    assert expected in line, line


@pytest.mark.skipif(not (SHARED_DATA / "horse2zebra").is_dir() or not (SHARED_DATA / "maps").is_dir(),
                    reason=f"the shared datasets horse2zebra and maps are not in {SHARED_DATA}")
def test_stargan_trains_on_a_three_domain_folder_of_real_images_and_translates_to_each(cli, tmp_path, one_thread):
    sources = {"horse": "horse2zebra/trainA", "zebra": "horse2zebra/trainB", "map": "maps/train"}
    for name, folder in sources.items():  # a few real images of each, linked (the shared data is never copied)
        (tmp_path / "data" / "train" / name).mkdir(parents=True)
        for file in sorted((SHARED_DATA / folder).glob("*.jpg"))[:4]:
            (tmp_path / "data" / "train" / name / file.name).symlink_to(file)
    run = tmp_path / "run"
    pairs = [TINY[i:i + 2] for i in range(0, len(TINY), 2)]
    real = [arg for pair in pairs if not pair[1].startswith(("data.name=", "data.count=")) for arg in pair]
    result = cli("run", STARGAN, *real, "--set", f"data.root={tmp_path / 'data'}", "--set",
                 'data.domains=["horse", "zebra", "map"]', "--out", run)
    assert result.code == 0, result.err
    image = sorted((SHARED_DATA / "horse2zebra" / "trainA").glob("*.jpg"))[0]
    for domain in sources:
        result = cli("translate", run, image, "--to", domain, "--out", tmp_path / domain)
        assert result.code == 0, result.err
        assert (tmp_path / domain / image.name).is_file()


def test_the_demo_offers_every_target_domain(tmp_path, trained):
    pytest.importorskip("gradio")
    from PIL import Image

    from i2i.tools.demo import Limits, build_demo, load_model, translate_file

    domains = json.loads((trained / "checkpoints" / "step-00000006" / "training.json").read_text())[
        "directions"]["domains"]
    model = load_model(trained, "cpu")
    assert list(model.generators) == [f"to_{d}" for d in domains]
    Image.new("RGB", (40, 32), (90, 30, 200)).save(tmp_path / "x.png")
    outputs = [translate_file(model, tmp_path / "x.png", f"to_{d}", None, Limits()) for d in domains]
    assert all(o.size == (40, 32) for o in outputs) and outputs[0].tobytes() != outputs[1].tobytes()
    page = build_demo(trained, device="cpu")
    radio = next(block for block in page.blocks.values() if getattr(block, "elem_id", None) == "direction")
    assert radio.label == "Target domain" and [c[0] for c in radio.choices] == [f"to_{d}" for d in domains]
