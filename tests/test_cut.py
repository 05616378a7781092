"""The `cut` method (CUT and FastCUT): the PatchNCE loss, the generators' encoder features, training through the
CLI on synthetic and shared data, bit-identical resume, one-way translation and a sweep comparing it with CycleGAN."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import i2i
from conftest import RECIPES, SHARED_DATA, TINY, assert_same_final_state, error_line
from i2i.cli import main
from i2i.errors import I2IError
from i2i.recipe import load_recipe
from i2i.contract.registry import Registry
from i2i.testing import check_part
from i2i_stock.cut import patch_nce_loss
from i2i_stock.resnet import ResnetGenerator

CUT, FASTCUT, QUICK = RECIPES / "cut.toml", RECIPES / "fastcut.toml", RECIPES / "quickstart.toml"
# TINY on synthetic data, with fewer patches and narrower heads than the paper's 256
SMALL = ["--set", "data.name=synthetic", *TINY, "--set", "method.num_patches=16", "--set", "method.head_channels=8"]
RECIPE = {"cut": CUT, "fastcut": FASTCUT}
# SMALL without its ResNet sizes, for another generator
OTHER_GENERATOR = [x for pair in zip(SMALL[::2], SMALL[1::2]) if not pair[1].startswith("generator.") for x in pair]


def losses(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["losses"]


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory) -> Path:
    """A tiny CUT run on synthetic data (4 steps, checkpoints at steps 2 and 4)."""
    folder = tmp_path_factory.mktemp("cut") / "run"
    main(["run", str(CUT), *SMALL, "--out", str(folder)])
    return folder


# -- PatchNCE --------------------------------------------------------------------------------------------------


def test_patch_nce_gives_the_hand_computed_value():
    # one image, 3 patches of unit 2-d features; similarities q_i . k_j worked out by hand:
    #   q0 = (1, 0):     k0 0.6, k1 0,   k2 1
    #   q1 = (0, 1):     k0 0.8, k1 1,   k2 0
    #   q2 = (0.6, 0.8): k0 1,   k1 0.8, k2 0.6
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
    t = 0.5
    # row i: the positive q_i . k_i, then every key of the image, the positive's own entry masked to -10
    rows = [(0.6, [-10, 0.0, 1.0]), (1.0, [0.8, -10, 0.0]), (0.6, [1.0, 0.8, -10])]
    expected = sum(-pos / t + math.log(math.exp(pos / t) + sum(math.exp(n / t) for n in negs))
                   for pos, negs in rows) / 3
    assert patch_nce_loss(q, k, images=1, temperature=t).item() == pytest.approx(expected, rel=1e-6)
    # by hand: row 0: log(e^1.2 + e^-20 + e^0 + e^2) - 1.2 = 2.4604 - 1.2 = 1.2604; row 1: log(e^2 + e^1.6 + e^-20
    # + e^0) - 2 = 0.5909; row 2: log(e^1.2 + e^2 + e^1.6 + e^-20) - 1.2 = 1.5513; their mean
    assert expected == pytest.approx(1.1342, abs=1e-4)


def test_patch_nce_takes_negatives_from_the_same_image_only():
    torch.manual_seed(0)
    q, k = torch.nn.functional.normalize(torch.randn(2, 8, 4), dim=2), torch.nn.functional.normalize(
        torch.randn(2, 8, 4), dim=2)
    each = [patch_nce_loss(q[i], k[i], images=1, temperature=0.07) for i in range(2)]
    both = patch_nce_loss(q.flatten(0, 1), k.flatten(0, 1), images=2, temperature=0.07)
    assert both.item() == pytest.approx((each[0] + each[1]).item() / 2, rel=1e-6)
    pooled = patch_nce_loss(q.flatten(0, 1), k.flatten(0, 1), images=1, temperature=0.07)
    assert pooled.item() != pytest.approx(both.item(), rel=1e-3)  # 15 negatives per patch instead of 7


def test_patch_nce_approaches_its_lower_bound_for_identical_positives_and_orthogonal_negatives():
    patches, t = 256, 0.07
    q = torch.eye(patches, requires_grad=True)  # unit features, orthogonal to each other
    k = torch.eye(patches, requires_grad=True)
    loss = patch_nce_loss(q, k, images=1, temperature=t)
    # each row: positive 1/t, 255 negatives 0, the masked entry -10/t
    bound = math.log(1 + (patches - 1) * math.exp(-1 / t) + math.exp(-11 / t))
    assert loss.item() == pytest.approx(bound, abs=5e-6)  # float32 logits near 1/t = 14.3 carry ~1e-6
    assert 0 < loss.item() < 2e-4  # the infimum of a cross-entropy is 0
    far = patch_nce_loss(torch.nn.functional.normalize(torch.randn(patches, 16), dim=1),
                         torch.nn.functional.normalize(torch.randn(patches, 16), dim=1), images=1, temperature=t)
    assert far.item() > 3  # unrelated features: about log(256)
    loss.backward()
    assert k.grad is None and q.grad is not None  # the keys (the input's features) are detached


# -- the generators' encoder features --------------------------------------------------------------------------


def test_resnet_taps_the_outputs_of_its_layer_sequence():
    net = i2i.create("generator", "resnet", blocks=2, channels=4)
    channels = net.feature_channels()
    assert channels == {0: 3, 1: 4, 2: 4, 3: 4, 4: 8, 5: 8, 6: 8, 7: 16, 8: 16, 9: 16, 10: 16, 11: 16}
    assert net.default_feature_layers() == (0, 4, 8)  # the paper's 0,4,8,12,16 within the encoder's 12 layers
    assert i2i.create("generator", "resnet", blocks=9).default_feature_layers() == (0, 4, 8, 12, 16)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    layers = [0, 4, 8, 11]
    maps = net.encode(x, layers)
    with torch.no_grad():
        for layer, found in zip(layers, maps):
            assert found.shape[:2] == (2, channels[layer])
            assert torch.equal(found, net.model[:layer + 1](x))
    # layer 8 is a norm whose ReLU (in place) follows: the tapped map keeps its negative values
    assert (maps[2] < 0).any()
    assert [m.shape[-1] for m in net.encode(x, [8, 0])] == [8, 38]  # in the order asked


def test_unet_and_timm_unet_tap_the_input_and_their_encoder_levels():
    unet = i2i.create("generator", "unet", downs=5, channels=4)
    assert unet.feature_channels() == {0: 3, 1: 4, 2: 8, 3: 16, 4: 32, 5: 32}
    assert unet.default_feature_layers() == (0, 1, 2, 3, 4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    maps = unet.encode(x, [0, 1, 2, 3, 4, 5])
    assert [tuple(m.shape[1:]) for m in maps] == [(3, 32, 32), (4, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2),
                                                   (32, 1, 1)]
    assert torch.equal(maps[0], x) and torch.equal(maps[1], unet.model.model[0](x))

    timm_unet = i2i.create("generator", "timm_unet", backbone="resnet18", decoder_channels=4)
    assert timm_unet.feature_channels() == {0: 3, 1: 64, 2: 64, 3: 128, 4: 256, 5: 512}
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    maps = timm_unet.encode(x, [0, 2, 5])
    assert [tuple(m.shape[1:]) for m in maps] == [(3, 64, 64), (64, 16, 16), (512, 2, 2)]
    with torch.no_grad():
        timm_unet.eval()
        assert torch.equal(timm_unet.encode(x, [3])[0], timm_unet.encoder(timm_unet.normalize(x))[2])


@pytest.mark.parametrize(("name", "options"), [("resnet", {"blocks": 2, "channels": 4}),
                                               ("unet", {"downs": 5, "channels": 4})])
def test_the_stock_generators_pass_check_part_with_their_encoder_features(name, options):
    net = check_part("generator", name, **options)  # includes encode against feature_channels, deepest first
    assert net.feature_channels()


class MisdeclaredResnet(ResnetGenerator):
    """A ResNet that declares one channel too many for layer 4."""

    name = "misdeclared_resnet"

    def feature_channels(self) -> dict[int, int]:
        found = super().feature_channels()
        found[4] += 1
        return found


class MisdeclaredPlugin:
    @i2i.hookimpl
    def i2i_generators(self) -> list[type]:
        return [MisdeclaredResnet]


def test_check_part_catches_encoder_features_that_differ_from_the_declared_channels():
    registry = Registry()
    registry.register(MisdeclaredPlugin(), name="misdeclared")
    with pytest.raises(AssertionError, match=r"layer 4 has shape \(2, 8, 16, 16\), expected \(2, 9, H, W\)"):
        check_part("generator", "misdeclared_resnet", registry=registry, blocks=1, channels=4)


def test_a_generator_without_encoder_features_says_so():
    with pytest.raises(I2IError, match="generator 'encdec' does not expose its encoder features"):
        i2i.create("generator", "encdec", depth=3, channels=4).feature_channels()


# -- training through the CLI ----------------------------------------------------------------------------------


def test_cut_trains_one_generator_one_discriminator_and_the_heads(cut_run):
    assert set(losses(cut_run)) == {"D_fake", "D_real", "G_GAN", "NCE", "NCE_Y"}
    step2, step4 = (cut_run / "checkpoints" / f"step-0000000{n}" for n in (2, 4))
    assert sorted(p.name for p in step4.glob("*.safetensors")) == [
        "D.safetensors", "F.safetensors", "G.safetensors", "training.safetensors"]
    assert json.loads((step4 / "training.json").read_text())["generators"] == {"AtoB": "G"}
    heads = load_file(step4 / "F.safetensors")
    # resnet with 1 block: default layers 0, 4, 8 with 3, 8 and 16 channels, each C -> 8 -> 8
    assert [heads[f"mlps.{i}.0.weight"].shape for i in range(3)] == [(8, 3), (8, 8), (8, 16)]
    assert all(not torch.equal(v, load_file(step2 / "F.safetensors")[k]) for k, v in heads.items())  # trained
    state = load_file(step4 / "training.safetensors")
    assert any(k.startswith("optim.F.") for k in state)
    samples = json.loads((cut_run / "samples" / "step-00000004.json").read_text())
    assert samples["columns"] == ["real_A", "fake_B", "real_B", "idt_B"]


def test_fastcut_trains_without_the_identity_term(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", FASTCUT, *SMALL, "--out", run)
    assert result.code == 0, result.err
    assert set(losses(run)) == {"D_fake", "D_real", "G_GAN", "NCE"}
    recipe = tomllib.loads((run / "recipe.toml").read_text())["method"]
    assert (recipe["lambda_nce"], recipe["nce_idt"], recipe["flip_equivariance"]) == (10.0, False, True)
    assert json.loads((run / "samples" / "step-00000004.json").read_text())["columns"] == [
        "real_A", "fake_B", "real_B"]


@pytest.mark.parametrize("recipe", ["cut", "fastcut"])
def test_trains_on_the_shared_horse2zebra_data(cli, tmp_path, recipe):
    root = SHARED_DATA / "horse2zebra"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    run = tmp_path / recipe
    result = cli("run", RECIPE[recipe], "--set", f"data.root={root}", *TINY[2:], "--set", "train.max_steps=2",
                 "--set", "method.num_patches=16", "--set", "method.head_channels=8", "--out", run)
    assert result.code == 0, result.err
    assert (run / "checkpoints" / "step-00000002" / "F.safetensors").is_file()
    assert all(math.isfinite(v) for v in losses(run).values())


@pytest.mark.parametrize(("generator", "channels"), [
    (["--set", "generator.name=unet", "--set", "generator.downs=5", "--set", "generator.channels=4"],
     [3, 4, 8, 16, 32]),
    (["--set", "generator.name=timm_unet", "--set", "generator.backbone=resnet18", "--set",
      "generator.decoder_channels=4", "--set", "data.load_size=72", "--set", "data.crop_size=64"],
     [3, 64, 64, 128, 256, 512]),
])
def test_cut_works_with_the_unet_and_timm_generators(cli, tmp_path, generator, channels):
    run = tmp_path / "run"
    result = cli("run", CUT, *OTHER_GENERATOR, *generator, "--set", "train.max_steps=2", "--out", run)
    assert result.code == 0, result.err
    assert set(losses(run)) == {"D_fake", "D_real", "G_GAN", "NCE", "NCE_Y"}
    heads = load_file(run / "checkpoints" / "step-00000002" / "F.safetensors")
    # the default layers: the input and the first four levels (unet), the input and every level (timm_unet)
    assert [heads[f"mlps.{i}.0.weight"].shape[1] for i in range(len(heads) // 4)] == channels


@pytest.mark.parametrize("recipe", ["cut", "fastcut"])
def test_resume_continues_bit_identically(cli, tmp_path, recipe):
    # 4 steps in one go, or 2 and then --resume: the checkpoint at step 2 must hold everything (G, D, the heads
    # F, the three optimizers, the random state that draws the patches and the flips)
    assert cli("run", RECIPE[recipe], *SMALL, "--out", tmp_path / "whole").code == 0
    run = tmp_path / "resumed"
    assert cli("run", RECIPE[recipe], *SMALL, "--set", "train.max_steps=2", "--out", run).code == 0
    result = cli("run", RECIPE[recipe], *SMALL, "--out", run, "--resume")
    assert result.code == 0, result.err
    assert_same_final_state(tmp_path / "whole", run, 4)


# -- errors, translation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "expected"), [
    ([*OTHER_GENERATOR, "--set", "generator.name=encdec", "--set", "generator.depth=3"],
     "generator 'encdec' does not expose its encoder features"),
    ([*SMALL, "--set", "method.nce_layers=0,4,30"], "generator 'resnet' has no encoder layer 30; its layers are 0-10"),
    ([*SMALL, "--set", "method.nce_layers=0;4"], "expected layer numbers separated by commas or spaces"),
    ([*SMALL, "--set", "method.nce_layers=4,4"], "names a layer twice"),
    ([*SMALL, "--set", "method.nce_t=0"], "nce_t = 0.0 must be greater than 0"),
])
def test_bad_settings_fail_with_one_line_before_anything_is_written(cli, tmp_path, overrides, expected):
    line = error_line(cli("run", CUT, *overrides, "--out", tmp_path / "run"))
    assert expected in line
    assert not (tmp_path / "run").exists()


def test_translate_goes_a_to_b_and_refuses_b_to_a(cli, cut_run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (37, 23), (200, 30, 60)).save(images / "a.png")
    result = cli("translate", cut_run, images, "--out", tmp_path / "out")
    assert result.code == 0, result.err
    with Image.open(tmp_path / "out" / "a.png") as image:
        assert image.size == (37, 23)
    line = error_line(cli("translate", cut_run, images, "--out", tmp_path / "back", "--direction", "BtoA"))
    assert "direction 'BtoA' is not available" in line and "method 'cut' translates one way only" in line
    assert line.endswith("use AtoB")


# -- comparing methods in one sweep ----------------------------------------------------------------------------

# The README's sweep, on TINY settings
METHOD_VARIANTS = [
    "--variant", "cyclegan:",
    "--variant", "cut:method.name=cut",
    "--variant", "fastcut:method.name=cut,method.nce_idt=false,method.lambda_nce=10,method.flip_equivariance=true",
]


def test_swapping_the_method_drops_the_tables_it_does_not_use():
    recipe = load_recipe(QUICK, ["method.name=cut"])
    assert set(recipe["loss"]) == {"adversarial"} and "buffer" not in recipe.tables
    assert recipe.notes == ("[method] name = 'cut' (from --set) does not use [buffer], [loss.cycle],"
                            " [loss.identity] of the recipe file: dropped",)
    with pytest.raises(I2IError, match="method 'cut' has no loss slot 'cycle'"):  # one the overrides set stays
        load_recipe(QUICK, ["method.name=cut", "loss.cycle.weight=5"])


def test_one_sweep_compares_cyclegan_cut_and_fastcut(cli, tmp_path):
    out = tmp_path / "methods"
    short = [*TINY, "--set", "train.max_steps=2", "--set", "train.checkpoint_every=0", "--set", "train.log_every=1",
             "--set", "train.samples=1"]
    result = cli("sweep", QUICK, *short, *METHOD_VARIANTS, "--out", out)
    assert result.code == 0, result.err
    assert "3 finished, 0 skipped" in result.out
    methods = {name: tomllib.loads((out / name / "recipe.toml").read_text())["method"]
               for name in ("cyclegan", "cut", "fastcut")}
    assert {n: m["name"] for n, m in methods.items()} == {"cyclegan": "cycle", "cut": "cut", "fastcut": "cut"}
    assert methods["fastcut"]["lambda_nce"] == 10 and not methods["fastcut"]["nce_idt"]
    assert "cycle_A" in losses(out / "cyclegan") and "NCE_Y" in losses(out / "cut")
    assert "NCE_Y" not in losses(out / "fastcut")
    page = (out / "compare.html").read_text()
    assert all(name in page for name in ("cyclegan", "cut", "fastcut", "NCE", "cycle_A"))
