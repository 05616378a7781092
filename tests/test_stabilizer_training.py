"""GAN stabilizers in the training step: differentiable augmentation of D's inputs (none, DiffAugment, ADA), the R1
gradient penalty of every adversarial loss, and the hinge loss; alone, and trained through the CLI."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch
from torch import nn

from conftest import RECIPES, TINY, assert_same_final_state, error_line
from i2i.errors import I2IError
from i2i.recipe import load_recipe
from i2i.contract.registry import create
from i2i.storage.rundir import RunFolder
from i2i.testing import check_part

QUICK = RECIPES / "quickstart.toml"


def images(n: int = 4, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """A batch in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=generator) * 2 - 1


# --- DiffAugment ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [3, 6])
def test_diffaug_keeps_the_shape_and_gradients_reach_the_images(channels: int) -> None:
    torch.manual_seed(0)
    x = images(channels=channels).requires_grad_(True)
    out = create("augment", "diffaug")(x)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pair_applies_one_draw_to_both_batches_and_separate_calls_draw_anew() -> None:
    augment = create("augment", "diffaug")
    x = images()
    torch.manual_seed(1)
    first, second = augment.pair(x, x.clone())
    assert torch.equal(first, second) and not torch.equal(first, x)
    assert not torch.equal(augment(x), augment(x))
    # the draw is per sample: a batch of copies of one image comes out as different images
    copies = augment(x[:1].expand(4, -1, -1, -1).contiguous())
    assert not torch.equal(copies[0], copies[1])


def test_translation_moves_the_content_by_the_drawn_integer_shift() -> None:
    augment = create("augment", "diffaug", policy="translation", translation=0.25)
    x = images(n=8, size=16) + 3  # no zeros in the content, so the filled border shows
    torch.manual_seed(2)
    params = augment.draw(x)
    out = augment.apply(x, params)
    assert params.shift.dtype == torch.int64 and params.shift.abs().max() <= 4 and params.shift.abs().sum() > 0
    for n, (dy, dx) in enumerate(params.shift.tolist()):
        expected = torch.zeros_like(x[n])
        expected[:, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)] = \
            x[n, :, max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):16 + min(-dx, 0)]
        assert torch.equal(out[n], expected), (dy, dx)


def test_cutout_zeros_a_square_of_half_the_size() -> None:
    augment = create("augment", "diffaug", policy="cutout")
    x = torch.ones(64, 3, 32, 32)
    torch.manual_seed(3)
    out = augment(x)
    full = 0
    for image in out:
        zero = image[0] == 0
        assert torch.equal(zero.expand(3, -1, -1), image == 0)  # all channels alike
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        height, width = len(rows), len(cols)
        assert 0 < height <= 16 and 0 < width <= 16
        assert int(zero.sum()) == height * width  # one rectangle: a square clipped at the image's borders
        assert rows.tolist() == list(range(int(rows[0]), int(rows[0]) + height))
        touches = rows[0] == 0 or rows[-1] == 31 or cols[0] == 0 or cols[-1] == 31
        assert (height, width) == (16, 16) or touches
        full += (height, width) == (16, 16)
    assert full > 10


def test_color_is_brightness_then_saturation_then_contrast_per_rgb_group() -> None:
    augment = create("augment", "diffaug", policy="color")
    x = images(n=3, channels=6)
    torch.manual_seed(4)
    params = augment.draw(x)
    out = augment.apply(x, params)
    b, s, c = (v.view(-1, 1, 1, 1) for v in (params.brightness, params.saturation, params.contrast))
    assert (b.abs() <= 0.5).all() and ((s >= 0) & (s <= 2)).all() and ((c >= 0.5) & (c <= 1.5)).all()
    for half in (slice(0, 3), slice(3, 6)):  # each RGB image of the stacked pair on its own, with the same draw
        y = x[:, half] + b
        y = (y - y.mean(1, keepdim=True)) * s + y.mean(1, keepdim=True)
        y = (y - y.mean((1, 2, 3), keepdim=True)) * c + y.mean((1, 2, 3), keepdim=True)
        assert torch.allclose(out[:, half], y, atol=1e-6)


def test_color_refuses_images_that_are_not_rgb_or_grey() -> None:
    with pytest.raises(I2IError, match="4-channel images.*without color"):
        create("augment", "diffaug")(images(channels=4))
    create("augment", "diffaug", policy="translation,cutout")(images(channels=4))
    create("augment", "diffaug")(images(channels=1))


def test_none_returns_its_input_and_draws_no_random_numbers() -> None:
    augment = create("augment", "none")
    x, scores = images(), images(channels=1)
    state = torch.get_rng_state()
    assert augment(x) is x
    first, second = augment.pair(x, x)
    assert first is x and second is x
    augment.observe(scores, 0.0)
    assert torch.equal(torch.get_rng_state(), state)
    assert augment.active is False and augment.state_dict() == {} and augment.log_values() == {}


@pytest.mark.parametrize("name, options", [("none", {}), ("diffaug", {}), ("diffaug", {"policy": "cutout"}),
                                           ("ada", {"p_init": 0.5})])
def test_the_stock_augments_pass_check_part(name: str, options: dict) -> None:
    check_part("augment", name, size=16, **options)


def test_a_policy_naming_an_unknown_transform_is_refused() -> None:
    with pytest.raises(I2IError, match="policy = 'color,zoom'.*'zoom' is none of them"):
        create("augment", "diffaug", policy="color,zoom")


# --- ADA -----------------------------------------------------------------------------------------------------------

def test_ada_moves_p_by_the_images_of_an_interval_over_speed() -> None:
    ada = create("augment", "ada", speed=100, interval=2)
    sure = torch.full((4, 1, 2, 2), 0.9)  # LSGAN-like scores above the threshold 0.5: r_t = 1 > 0.6
    ada.observe(sure, 0.5)
    assert ada.p == 0.0  # not yet: every 2 updates
    ada.observe(sure, 0.5)
    assert ada.p == pytest.approx(8 / 100)
    assert ada.log_values() == {"p": ada.p}


def test_ada_p_rises_while_d_is_sure_of_the_reals_falls_otherwise_and_stays_in_its_bounds() -> None:
    ada = create("augment", "ada", speed=40, interval=4, p_max=0.8)
    history = []
    for step in range(40):  # 4 images an update: p moves by 0.4 per interval
        ada.observe(torch.full((4, 1), 2.0 if step < 20 else -2.0), 0.0)
        history.append(ada.p)
    assert history[3] == pytest.approx(0.4) and history[7] == pytest.approx(0.8)
    assert max(history) == pytest.approx(0.8)  # clamped at p_max
    assert history[23] == pytest.approx(0.4) and history[-1] == 0.0  # falls, clamped at 0
    # mixed scores: r_t = mean(sign) = 0.5 < 0.6, so p falls; r_t = 1 > 0.6, it rises
    ada = create("augment", "ada", speed=40, interval=1, p_init=0.5)
    ada.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]), 0.0)
    assert ada.p == pytest.approx(0.4)
    ada.observe(torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.0)
    assert ada.p == pytest.approx(0.5)


def test_ada_state_round_trips_mid_interval() -> None:
    ada = create("augment", "ada", speed=30, interval=4, p_init=0.3)
    for step in range(6):  # one adjustment, then half an interval
        ada.observe(torch.randn(2, 1, 3, 3) + 0.5, 0.0)
    state = json.loads(json.dumps(ada.state_dict()))  # as a checkpoint's training.json holds it
    copy = create("augment", "ada", speed=30, interval=4)
    copy.load_state_dict(state)
    assert copy.p == ada.p != 0.3
    scores = [torch.randn(2, 1, 3, 3) for _ in range(6)]
    for s in scores:
        ada.observe(s, 0.0)
        copy.observe(s, 0.0)
        assert copy.p == ada.p
    x = images()
    torch.manual_seed(5)
    expected = ada(x)
    torch.manual_seed(5)
    assert torch.equal(copy(x), expected)


def test_ada_at_p_zero_leaves_the_images_as_they_are() -> None:
    x = images()
    out = create("augment", "ada")(x)
    assert torch.allclose(out, x, atol=1e-6)


# --- hinge and the generator's objective ---------------------------------------------------------------------------

def test_hinge_loss_values() -> None:
    hinge = create("loss", "hinge")
    pred = torch.tensor([-2.0, 0.5, 3.0])
    assert hinge(pred, True).item() == pytest.approx((3.0 + 0.5 + 0.0) / 3)  # relu(1 - D(real))
    assert hinge(pred, False).item() == pytest.approx((0.0 + 1.5 + 4.0) / 3)  # relu(1 + D(fake))
    assert hinge.generator_loss(pred).item() == pytest.approx(-0.5)  # -D(G(x)), past the margin too
    assert hinge.threshold == 0.0


@pytest.mark.parametrize("name, threshold", [("lsgan", 0.5), ("vanilla", 0.0), ("wgangp", 0.0), ("hinge", 0.0)])
def test_the_generator_objective_and_the_undecided_score(name: str, threshold: float) -> None:
    loss = create("loss", name)
    assert loss.threshold == threshold
    pred = torch.randn(2, 1, 4, 4)
    if name != "hinge":  # the others score G's fakes against the real target, as before
        assert torch.equal(loss.generator_loss(pred), loss(pred, True))


# --- R1 ------------------------------------------------------------------------------------------------------------

class Linear(nn.Module):
    """D(x) = sum(w * x) per sample: its gradient at every x is w."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


@pytest.mark.parametrize("name", ["lsgan", "vanilla", "wgangp", "hinge"])
def test_r1_of_a_linear_discriminator_is_half_the_weight_times_its_squared_norm(name: str) -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    net = Linear(w.clone())
    options = {"gp_weight": 0.0} if name == "wgangp" else {}
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    penalty = create("loss", name, r1_weight=2.5, **options).penalty(net, real, fake)
    assert penalty.item() == pytest.approx(2.5 / 2 * float(w.pow(2).sum()), rel=1e-6)
    penalty.backward()  # d/dw of 1.25 ||w||^2 = 2.5 w: the penalty trains D (create_graph)
    assert torch.allclose(net.w.grad, 2.5 * w, rtol=1e-5)


def test_r1_of_a_conv_net_matches_finite_differences() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3, stride=2)).double()
    real = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    penalty = create("loss", "lsgan", r1_weight=10.0).penalty(net, real, real)
    eps, norms = 1e-6, []
    with torch.no_grad():
        for sample in real:
            grad = torch.zeros_like(sample)
            for index in range(sample.numel()):
                step = torch.zeros(sample.numel(), dtype=torch.float64)
                step[index] = eps
                step = step.view_as(sample)
                grad.view(-1)[index] = (net((sample + step)[None]).sum() - net((sample - step)[None]).sum()) / (2 * eps)
            norms.append(float(grad.pow(2).sum()))
    assert penalty.item() == pytest.approx(10.0 / 2 * sum(norms) / len(norms), rel=1e-6)


def test_r1_is_off_by_default_and_wgangp_adds_it_to_its_gradient_penalty() -> None:
    net, real, fake = Linear(torch.randn(3, 4, 4)), torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    assert create("loss", "lsgan").penalty(net, real, fake) is None
    assert create("loss", "wgangp", gp_weight=0.0).penalty(net, real, fake) is None
    torch.manual_seed(6)
    gp = create("loss", "wgangp").penalty(net, real, fake)
    r1 = create("loss", "lsgan", r1_weight=1.0).penalty(net, real, fake)
    torch.manual_seed(6)
    both = create("loss", "wgangp", r1_weight=1.0).penalty(net, real, fake)
    assert both.item() == pytest.approx(gp.item() + r1.item(), rel=1e-6)


def test_lazy_r1_every_kth_update_of_each_discriminator_times_k() -> None:
    loss = create("loss", "lsgan", r1_weight=1.0, r1_every=3)
    d_a, d_b = Linear(torch.randn(3, 4, 4)), Linear(torch.randn(3, 4, 4))
    real = torch.randn(2, 3, 4, 4)
    every_time = create("loss", "lsgan", r1_weight=1.0)
    seen = []
    for _ in range(7):  # the cycle method's order: D_A's, then D_B's penalty in each step
        for net in (d_a, d_b):
            penalty = loss.penalty(net, real, real)
            seen.append(None if penalty is None else penalty.item() / every_time.penalty(net, real, real).item())
    assert seen == [pytest.approx(3.0)] * 2 + [None] * 4 + [pytest.approx(3.0)] * 2 + [None] * 4 + \
        [pytest.approx(3.0)] * 2
    # the count is a buffer: checkpoints keep it, and a copy restored between steps goes on in step
    copy = create("loss", "lsgan", r1_weight=1.0, r1_every=3)
    copy.load_state_dict(loss.state_dict())
    for _ in range(3):
        assert [copy.penalty(net, real, real) is None for net in (d_a, d_b)] == \
            [loss.penalty(net, real, real) is None for net in (d_a, d_b)]
    assert dict(create("loss", "lsgan", r1_weight=1.0).state_dict()) == {}  # no state without lazy R1


def test_r1_under_bf16_autocast_is_float32() -> None:
    torch.manual_seed(0)
    net = nn.Conv2d(3, 1, 3)
    real = torch.randn(2, 3, 8, 8)
    exact = create("loss", "lsgan", r1_weight=1.0).penalty(net, real, real)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = create("loss", "lsgan", r1_weight=1.0).penalty(net, real, real)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(exact.item(), rel=0.05)


# --- recipes -------------------------------------------------------------------------------------------------------

def test_a_recipe_without_augment_gets_none_written_out() -> None:
    recipe = load_recipe(QUICK)
    assert recipe["augment"] == {"name": "none"}
    assert '[augment]\nname = "none"' in recipe.to_toml()
    ada = load_recipe(QUICK, ["augment.name=ada", "augment.target=0.7"])
    assert ada["augment"] == {"name": "ada", "policy": "color,translation,cutout", "translation": 0.125,
                              "cutout": 0.5, "target": 0.7, "speed": 10000, "interval": 4, "p_init": 0.0,
                              "p_max": 1.0}
    assert load_recipe(QUICK, ["loss.adversarial.r1_weight=1"])["loss"]["adversarial"] == {
        "name": "lsgan", "weight": 1.0, "r1_weight": 1.0, "r1_every": 1}


def test_an_augment_table_needs_a_name_and_a_method_that_uses_it(monkeypatch) -> None:
    with pytest.raises(I2IError, match=r"\[augment\] needs a name.*ada, diffaug, none"):
        load_recipe(QUICK, ["augment.policy=color"])
    from i2i_stock.cycle import CycleMethod

    monkeypatch.setattr(CycleMethod, "parts", ("generator", "discriminator", "buffer"))
    assert "augment" not in load_recipe(QUICK).tables
    with pytest.raises(I2IError, match=r"\[augment\] is not used by method 'cycle'.*remove the table"):
        load_recipe(QUICK, ["augment.name=diffaug"])


def test_an_unknown_augment_is_one_line_listing_the_available(cli, tmp_path) -> None:
    line = error_line(cli("run", QUICK, *TINY, "--set", "augment.name=diffaugment", "--out", tmp_path / "run"))
    assert "unknown augment 'diffaugment'" in line and "available: ada, diffaug, none" in line
    assert not (tmp_path / "run").exists()


# --- training through the CLI --------------------------------------------------------------------------------------

STABILIZED = [*TINY, "--set", "augment.name=ada", "--set", "augment.speed=50", "--set", "augment.p_init=0.5",
              "--set", "loss.adversarial.r1_weight=1", "--set", "loss.adversarial.name=hinge",
              "--set", "loss.adversarial.r1_every=3", "--set", "buffer.size=3", "--set", "train.log_every=1",
              "--set", "train.checkpoint_every=5", "--set", "train.keep_checkpoints=0"]


def test_ada_hinge_and_r1_train_log_p_and_resume_bit_for_bit(cli, tmp_path, one_thread) -> None:
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    result = cli("run", QUICK, *STABILIZED, "--set", "train.max_steps=10", "--out", whole)
    assert result.code == 0, result.err
    assert cli("run", QUICK, *STABILIZED, "--set", "train.max_steps=5", "--out", halves).code == 0
    result = cli("run", QUICK, *STABILIZED, "--set", "train.max_steps=10", "--out", halves, "--resume")
    assert result.code == 0, result.err
    assert_same_final_state(whole, halves, 10)  # weights, optimizers, RNG ... and every metrics record

    run = RunFolder(whole)
    records = run.read_metrics()
    p = [record["augment_p"] for record in records]
    assert [sorted(values) for values in p] == [["D_A", "D_B"]] * 10
    assert p[0]["D_A"] == 0.5 and p[4]["D_A"] != 0.5  # moved by the first interval's 4 updates
    assert all(0.0 <= v <= 1.0 for values in p for v in values.values())
    state = run.read_state(whole / "checkpoints" / "step-00000010")["state"]
    assert state["augment.D_A"]["p"] == p[-1]["D_A"] and state["augment.D_B"]["p"] == p[-1]["D_B"]
    assert "loss.adversarial" in state  # the lazy R1 count
    resolved = tomllib.loads((whole / "recipe.toml").read_text())
    assert resolved["augment"]["name"] == "ada" and resolved["augment"]["speed"] == 50
    assert resolved["loss"]["adversarial"] == {"name": "hinge", "weight": 1.0, "r1_weight": 1.0, "r1_every": 3}


@pytest.mark.parametrize("system", ["pix2pix", "cut"])
def test_diffaug_and_r1_train_the_paired_and_one_sided_methods(cli, tmp_path, one_thread, system: str) -> None:
    tiny = {"pix2pix": ["--set", "data.name=synthetic", "--set", "data.paired=true", "--set", "data.count=8",
                        "--set", "data.load_size=36", "--set", "data.crop_size=32", "--set", "data.workers=0",
                        "--set", "generator.downs=5", "--set", "generator.channels=4", "--set",
                        "discriminator.channels=4", "--set", "discriminator.layers=2", "--set", "train.log_every=2",
                        "--set", "train.samples=2"],
            "cut": ["--set", "data.name=synthetic", *TINY, "--set", "method.num_patches=8", "--set",
                    "method.head_channels=8"]}[system]
    run = tmp_path / system
    result = cli("run", RECIPES / f"{system}.toml", *tiny, "--set", "train.max_steps=2", "--set",
                 "augment.name=diffaug", "--set", "loss.adversarial.r1_weight=0.5", "--out", run)
    assert result.code == 0, result.err
    records = RunFolder(run).read_metrics()
    assert records and "augment_p" not in records[-1]  # DiffAugment has nothing to log
    assert records[-1]["losses"]["D_penalty"] > 0
