"""The stock parts beyond CycleGAN's: U-Net and encoder-decoder generators, vanilla and WGAN-GP losses, the
`none` buffer and PatchGAN's features."""

from __future__ import annotations

import inspect
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from i2i.errors import I2IError
from i2i.contract.registry import Registry
from i2i_stock.encdec import EncoderDecoderGenerator
from i2i_stock.image_pool import NoBuffer
from i2i_stock.losses import VanillaGANLoss, WGANGPLoss
from i2i_stock.patchgan import PatchGANDiscriminator
from i2i_stock.resnet import ResnetGenerator
from i2i_stock.unet import UnetGenerator
from test_networks import _layer_keys, n_params


def expected_unet_keys(downs: int, norm: str) -> list[str]:
    """State-dict keys of the reference UnetGenerator, written out from its nesting of skip-connection blocks."""
    bias = norm == "instance"

    def level(prefix: str, depth: int) -> list[str]:
        if depth == downs - 1:  # innermost: lrelu, conv (no norm), relu, convT, norm
            return _layer_keys(prefix, 1, "none", bias) + _layer_keys(prefix, 3, norm, bias)
        # lrelu, conv, norm, inner level, relu, convT, norm
        return _layer_keys(prefix, 1, norm, bias) + level(f"{prefix}3.model.", depth + 1) + \
            _layer_keys(prefix, 5, norm, bias)

    # outermost: conv (the reference's bias rule, though no norm follows), inner levels, relu, convT (biased), tanh
    keys = ["model.model.0.weight"] + (["model.model.0.bias"] if bias else [])
    inner = level("model.model.1.model.", 1) if downs > 1 else []
    return keys + inner + ["model.model.3.weight", "model.model.3.bias"]


def expected_encdec_keys(depth: int, norm: str) -> list[str]:
    """conv, lrelu, then 2 * (depth - 1) x (conv or convT, norm, activation), convT, tanh; no bias on the ends."""
    keys = ["model.0.weight"]
    for n in range(2 * (depth - 1)):
        keys += _layer_keys("model.", 2 + 3 * n, norm, norm == "instance")
    return keys + [f"model.{2 + 6 * (depth - 1)}.weight"]


def randomized(net: nn.Module, seed: int = 0) -> nn.Module:
    """`net` with every weight, bias and norm statistic perturbed, as a trained network's would be."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.1)
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.abs_().add_(0.5)
    return net.eval()


@pytest.fixture(scope="module")
def registry() -> Registry:
    r = Registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other plugins may be mid-change; these parts must load regardless
        r.load_entry_points()
    return r


# --- U-Net -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("downs", "params"), [(8, 54_413_955), (7, 41_828_995)])
def test_unet_reference_sizes_and_keys(downs: int, params: int) -> None:
    net = UnetGenerator(downs=downs)
    assert n_params(net) == params  # the reference's unet_256 and unet_128 with batch norm
    state = net.state_dict()
    innermost = "model.model.1." + "model.3." * (downs - 2) + "model."
    for key in ["model.model.0.weight", "model.model.1.model.1.weight", "model.model.1.model.2.running_mean",
                "model.model.1.model.3.model.1.weight", "model.model.1.model.5.weight", "model.model.1.model.6.bias",
                f"{innermost}1.weight", f"{innermost}3.weight", f"{innermost}4.weight", "model.model.3.bias"]:
        assert key in state
    assert state["model.model.0.weight"].shape == (64, 3, 4, 4)
    assert state[f"{innermost}1.weight"].shape == (512, 512, 4, 4)
    assert state["model.model.3.weight"].shape == (128, 3, 4, 4)  # ConvTranspose2d: (in = 2 x 64, out)
    assert list(state) == expected_unet_keys(downs, "batch")
    assert (net.size_multiple, net.batch_independent) == (2 ** downs, False)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("downs", [1, 2, 5, 6])
def test_unet_keys_by_rule(norm: str, downs: int) -> None:
    net = UnetGenerator(downs=downs, channels=2, norm=norm, dropout=True)
    assert list(net.state_dict()) == expected_unet_keys(downs, norm)
    assert net.batch_independent == (norm != "batch")


@pytest.mark.parametrize(("downs", "height", "width"), [(5, 32, 32), (5, 64, 96), (3, 8, 24), (1, 2, 4)])
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_keeps_size(downs: int, height: int, width: int, norm: str) -> None:
    net = UnetGenerator(downs=downs, channels=4, norm=norm, in_channels=3, out_channels=1)
    y = net(torch.randn(2, 3, height, width))
    assert y.shape == (2, 1, height, width) and y.abs().max() <= 1
    assert net.size_multiple == 2 ** downs


@pytest.mark.parametrize("downs", [5, 6, 8])
def test_unet_dropout_sits_in_the_middle_levels_only(downs: int) -> None:
    net = UnetGenerator(downs=downs, channels=2, dropout=True)
    # The reference adds one per 8x-wide level between the narrowing ones and the innermost: downs - 5.
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == downs - 5


def test_unet_dropout_active_in_training_only() -> None:
    net = UnetGenerator(downs=6, channels=2, norm="instance", dropout=True)
    x = torch.randn(1, 3, 64, 64)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("options", [
    {"downs": 5, "norm": "batch"},
    {"downs": 5, "norm": "instance"},
    {"downs": 6, "norm": "none"},
    {"downs": 8, "norm": "batch", "in_channels": 1, "out_channels": 2},
    {"downs": 2, "norm": "instance"},
    {"downs": 1, "norm": "instance"},
])
def test_unet_options_from_state_dict(options: dict) -> None:
    expected = {"downs": 5, "channels": 3, "norm": "batch", "dropout": False, "in_channels": 3, "out_channels": 3,
                **options}
    net = UnetGenerator(**expected)
    assert UnetGenerator.options_from_state_dict(net.state_dict()) == expected


def test_unet_and_resnet_do_not_claim_each_other() -> None:
    unet = UnetGenerator(downs=5, channels=2, norm="instance").state_dict()
    resnet = ResnetGenerator(blocks=1, channels=2).state_dict()
    assert ResnetGenerator.options_from_state_dict(unet) is None
    assert UnetGenerator.options_from_state_dict(resnet) is None
    for other in [EncoderDecoderGenerator(channels=2).state_dict(), PatchGANDiscriminator(channels=2).state_dict()]:
        assert UnetGenerator.options_from_state_dict(other) is None
        assert ResnetGenerator.options_from_state_dict(other) is None


def test_unet_layout_with_inconsistent_widths_is_not_claimed() -> None:
    state = UnetGenerator(downs=5, channels=2).state_dict()
    state["model.model.1.model.3.model.1.weight"] = torch.zeros(5, 4, 4, 4)  # not 4 x the first width
    assert UnetGenerator.options_from_state_dict(state) is None


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_unet_reference_checkpoint_converts(cli, tmp_path, norm: str) -> None:
    net = randomized(UnetGenerator(downs=5, channels=4, norm=norm, in_channels=1))
    state = net.state_dict()
    if norm == "instance":  # PyTorch < 0.4 saved running stats for instance norms; convert drops them
        state = {**state, "model.model.1.model.2.running_mean": torch.zeros(8),
                 "model.model.1.model.2.running_var": torch.ones(8)}
    torch.save(state, tmp_path / "latest_net_G.pth")
    out = tmp_path / "facades.safetensors"
    result = cli("convert", tmp_path / "latest_net_G.pth", "--out", out)
    assert result.code == 0, result.err
    with safe_open(out, framework="pt") as f:
        meta = f.metadata()
    options = json.loads(meta["i2i.options"])
    assert (meta["i2i.kind"], meta["i2i.name"]) == ("generator", "unet")
    assert {k: options[k] for k in ("downs", "channels", "norm", "dropout", "in_channels", "out_channels")} == \
        {"downs": 5, "channels": 4, "norm": norm, "dropout": False, "in_channels": 1, "out_channels": 3}
    tensors = load_file(out)
    assert tensors.keys() == net.state_dict().keys()
    assert all(torch.equal(tensors[k], v) for k, v in net.state_dict().items())


# --- encoder-decoder ---------------------------------------------------------------------------------------------

def test_encdec_is_discogans_generator() -> None:
    net = EncoderDecoderGenerator()
    assert n_params(net) == 5_513_856  # the official DiscoGAN generator's count (bias-free convs, batch norm)
    assert list(net.state_dict()) == expected_encdec_keys(4, "batch")
    widths = [m.out_channels for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert widths == [64, 128, 256, 512, 256, 128, 64, 3]
    assert (net.size_multiple, net.batch_independent) == (16, False)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("depth", [1, 3, 4])
def test_encdec_shapes_and_keys(norm: str, depth: int) -> None:
    net = EncoderDecoderGenerator(depth=depth, channels=4, norm=norm, out_channels=1)
    assert list(net.state_dict()) == expected_encdec_keys(depth, norm)
    y = net(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1, 64, 64) and y.abs().max() <= 1
    assert net.size_multiple == 2 ** depth and net.batch_independent == (norm != "batch")


@pytest.mark.parametrize("cls", [UnetGenerator, EncoderDecoderGenerator, WGANGPLoss])
def test_constructor_matches_options(cls: type) -> None:
    params = inspect.signature(cls.__init__).parameters
    assert {n: p.default for n, p in params.items() if n != "self"} == {o.name: o.default for o in cls.options}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in params.items() if n != "self")
    assert cls.description() and "\n" not in cls.description()


# --- losses ------------------------------------------------------------------------------------------------------

def test_vanilla_is_binary_cross_entropy_on_logits() -> None:
    torch.manual_seed(0)
    pred = torch.randn(2, 1, 5, 5) * 3
    loss = VanillaGANLoss()
    assert torch.allclose(loss(pred, True), -torch.log(torch.sigmoid(pred)).mean())
    assert torch.allclose(loss(pred, False), -torch.log(1 - torch.sigmoid(pred)).mean())
    assert torch.allclose(loss(pred, True), F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred)))
    # Saturated scores stay finite, where log(sigmoid(x)) would give inf.
    assert loss(torch.tensor([200.0]), False).item() == pytest.approx(200.0)


def test_wgangp_critic_values() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    loss = WGANGPLoss()
    assert loss(pred, True).item() == -3.0 and loss(pred, False).item() == 3.0


class LinearCritic(nn.Module):
    """D(x) = <w, x> per sample: its gradient with respect to every input is w."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


def test_wgangp_penalty_is_zero_for_a_unit_gradient_critic() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    critic = LinearCritic(w / w.norm())
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    assert WGANGPLoss().penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_wgangp_penalty_of_a_known_linear_critic_and_its_gradient() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    critic = LinearCritic(w / w.norm() * 3)  # ||grad|| = 3 at every point
    penalty = WGANGPLoss(gp_weight=2.5).penalty(critic, torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4))
    assert penalty.item() == pytest.approx(2.5 * (3 - 1) ** 2, rel=1e-5)
    penalty.backward()
    # d/dw of 2.5 (||w|| - 1)^2 = 5 (||w|| - 1) w / ||w||
    expected = 5 * (3 - 1) * critic.w.detach() / 3
    assert torch.allclose(critic.w.grad, expected, rtol=1e-4, atol=1e-6)


def test_wgangp_penalty_interpolates_per_sample_with_torchs_rng() -> None:
    class Quadratic(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # gradient at x is x itself
            return 0.5 * (x ** 2).flatten(1).sum(1)

    real, fake = torch.randn(6, 2, 3, 3), torch.randn(6, 2, 3, 3)
    torch.manual_seed(7)
    alpha = torch.rand(6, 1, 1, 1)
    mixed = alpha * real + (1 - alpha) * fake
    expected = 10.0 * ((mixed.flatten(1).norm(dim=1) - 1) ** 2).mean()
    torch.manual_seed(7)
    assert WGANGPLoss().penalty(Quadratic(), real, fake).item() == pytest.approx(expected.item(), rel=1e-5)


def test_wgangp_penalty_trains_a_patchgan_and_can_be_off() -> None:
    torch.manual_seed(0)
    net = PatchGANDiscriminator(layers=2, channels=4, norm="none")
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    penalty = WGANGPLoss().penalty(net, real, fake)
    assert penalty.dim() == 0 and torch.isfinite(penalty) and penalty > 0
    penalty.backward()
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0 for w in weights)
    assert WGANGPLoss(gp_weight=0.0).penalty(net, real, fake) is None


# --- buffer, features, registration ------------------------------------------------------------------------------

def test_none_buffer_returns_its_input() -> None:
    buffer = NoBuffer()
    fakes = torch.randn(3, 3, 8, 8)
    assert buffer.query(fakes) is fakes
    assert buffer.state_dict() == {}
    buffer.load_state_dict({})


@pytest.mark.parametrize(("layers", "widths", "sides"), [(1, [4, 8], [32, 31]), (3, [4, 8, 16, 32], [32, 16, 8, 7]),
                                                         (4, [4, 8, 16, 32, 32], [32, 16, 8, 4, 3])])
def test_patchgan_features(layers: int, widths: list[int], sides: list[int]) -> None:
    torch.manual_seed(0)
    net = PatchGANDiscriminator(layers=layers, channels=4)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    features = net.features(x)
    assert [f.shape for f in features] == [(2, w, s, s) for w, s in zip(widths, sides)]
    # The last features are what the final conv scores, and forward is unchanged.
    assert torch.allclose(net.model[-1](features[-1]), net(x))
    features[0].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("kind", "name", "cls"), [
    ("generator", "unet", UnetGenerator), ("generator", "encdec", EncoderDecoderGenerator),
    ("loss", "vanilla", VanillaGANLoss), ("loss", "wgangp", WGANGPLoss), ("buffer", "none", NoBuffer),
])
def test_parts_are_registered(registry: Registry, kind: str, name: str, cls: type) -> None:
    assert name in registry.available(kind)
    info = registry.info(kind, name)
    assert info.cls is cls and info.package == "i2i-toolkit"


def test_registry_builds_them_with_options(registry: Registry) -> None:
    unet = registry.create("generator", "unet", downs=5, channels=2, norm="instance")
    assert isinstance(unet, UnetGenerator) and unet.size_multiple == 32 and unet.batch_independent
    assert registry.create("loss", "wgangp", gp_weight=1.0).gp_weight == 1.0
    assert isinstance(registry.create("buffer", "none"), NoBuffer)


@pytest.mark.parametrize(("kind", "name", "bad"), [
    ("generator", "unet", {"downs": 0}),
    ("generator", "unet", {"norm": "group"}),
    ("generator", "unet", {"channels": 0}),
    ("generator", "encdec", {"depth": 0}),
    ("generator", "encdec", {"blocks": 3}),
    ("loss", "wgangp", {"gp_weight": -1.0}),
    ("loss", "vanilla", {"weight": 1.0}),
    ("buffer", "none", {"size": 50}),
])
def test_bad_options_raise(registry: Registry, kind: str, name: str, bad: dict) -> None:
    with pytest.raises(I2IError):
        registry.create(kind, name, **bad)
