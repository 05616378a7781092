"""The stock networks: sizes, state-dict layout of the reference code, shapes, norms, init and registration."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch import nn

from i2i.errors import I2IError
from i2i.contract.registry import Registry
from i2i.api import init_weights, norm_layer
from i2i_stock.patchgan import PatchGANDiscriminator
from i2i_stock.resnet import ResnetGenerator

NORM_KEYS = {
    "instance": [],  # affine=False, no running stats: nothing in the state dict
    "none": [],
    "batch": ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"],
}


def _layer_keys(prefix: str, conv_idx: int, norm: str, conv_bias: bool) -> list[str]:
    """Keys of a conv at `conv_idx` followed by a norm at `conv_idx + 1`."""
    keys = [f"{prefix}{conv_idx}.weight"] + ([f"{prefix}{conv_idx}.bias"] if conv_bias else [])
    return keys + [f"{prefix}{conv_idx + 1}.{k}" for k in NORM_KEYS[norm]]


def expected_generator_keys(blocks: int, norm: str, dropout: bool) -> list[str]:
    """State-dict keys of the reference ResnetGenerator, written out from its layer layout."""
    bias = norm == "instance"
    # model: 0 pad, 1 conv, 2 norm, 3 relu, then 2 x (conv, norm, relu) downsampling
    keys = _layer_keys("model.", 1, norm, bias) + _layer_keys("model.", 4, norm, bias) + \
        _layer_keys("model.", 7, norm, bias)
    # blocks at 10.. : pad, conv, norm, relu, [dropout], pad, conv, norm
    second = 6 if dropout else 5
    for b in range(10, 10 + blocks):
        prefix = f"model.{b}.conv_block."
        keys += _layer_keys(prefix, 1, norm, bias) + _layer_keys(prefix, second, norm, bias)
    up = 10 + blocks  # 2 x (convT, norm, relu), pad, conv (always biased), tanh
    keys += _layer_keys("model.", up, norm, bias) + _layer_keys("model.", up + 3, norm, bias)
    return keys + [f"model.{up + 7}.weight", f"model.{up + 7}.bias"]


def expected_patchgan_keys(layers: int, norm: str) -> list[str]:
    """State-dict keys of the reference NLayerDiscriminator: conv, lrelu, then `layers` x (conv, norm, lrelu), conv."""
    keys = ["model.0.weight", "model.0.bias"]
    for n in range(layers):
        keys += _layer_keys("model.", 2 + 3 * n, norm, norm == "instance")
    last = 2 + 3 * layers
    return keys + [f"model.{last}.weight", f"model.{last}.bias"]


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def paper_generator() -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator()


def test_paper_sizes(paper_generator: ResnetGenerator) -> None:
    assert n_params(paper_generator) == 11_378_179
    assert n_params(PatchGANDiscriminator()) == 2_764_737


def test_generator_key_names(paper_generator: ResnetGenerator) -> None:
    keys = list(paper_generator.state_dict())
    for key in ["model.1.weight", "model.1.bias", "model.4.weight", "model.10.conv_block.1.weight",
                "model.10.conv_block.5.bias", "model.18.conv_block.5.weight", "model.19.weight",
                "model.22.weight", "model.26.weight", "model.26.bias"]:
        assert key in keys
    assert keys == expected_generator_keys(9, "instance", False)


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize("blocks", [0, 2])
def test_generator_keys_by_rule(norm: str, dropout: bool, blocks: int) -> None:
    net = ResnetGenerator(blocks=blocks, channels=4, norm=norm, dropout=dropout)
    assert list(net.state_dict()) == expected_generator_keys(blocks, norm, dropout)


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("layers", [1, 3, 5])
def test_patchgan_keys_by_rule(norm: str, layers: int) -> None:
    net = PatchGANDiscriminator(layers=layers, channels=4, norm=norm)
    assert list(net.state_dict()) == expected_patchgan_keys(layers, norm)


def test_patchgan_key_names() -> None:
    keys = list(PatchGANDiscriminator().state_dict())
    assert keys == ["model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias", "model.5.weight",
                    "model.5.bias", "model.8.weight", "model.8.bias", "model.11.weight", "model.11.bias"]


@pytest.mark.parametrize("size", [32, 64])
def test_generator_keeps_size(size: int) -> None:
    net = ResnetGenerator(blocks=2, channels=8, in_channels=3, out_channels=1)
    y = net(torch.randn(2, 3, size, size))
    assert y.shape == (2, 1, size, size)
    assert y.abs().max() <= 1.0
    assert ResnetGenerator.size_multiple == 4


@pytest.mark.parametrize(("layers", "out"), [(1, 126), (3, 30), (5, 6)])
def test_patchgan_map_shape(layers: int, out: int) -> None:
    net = PatchGANDiscriminator(layers=layers, channels=4, in_channels=6)
    assert net(torch.randn(1, 6, 256, 256)).shape == (1, 1, out, out)


def test_patchgan_receptive_field_is_70() -> None:
    # Without norm each score depends on its patch only; LeakyReLU never zeroes a gradient.
    net = PatchGANDiscriminator(channels=4, norm="none")
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    scores = net(x)
    scores[0, 0, scores.shape[2] // 2, scores.shape[3] // 2].backward()
    touched = x.grad[0].abs().sum(0) > 0
    assert touched.any(1).sum() == 70 and touched.any(0).sum() == 70


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("dropout", [False, True])
def test_norms_and_dropout_run(norm: str, dropout: bool) -> None:
    gen = ResnetGenerator(blocks=1, channels=4, norm=norm, dropout=dropout)
    disc = PatchGANDiscriminator(channels=4, norm=norm)
    assert gen.batch_independent == disc.batch_independent == (norm != "batch")
    for mode in (True, False):
        gen.train(mode)
        disc.train(mode)
        y = gen(torch.randn(2, 3, 32, 32))
        assert y.shape == (2, 3, 32, 32) and torch.isfinite(y).all()
        assert torch.isfinite(disc(y)).all()


def test_dropout_active_in_training_only() -> None:
    net = ResnetGenerator(blocks=1, channels=4, dropout=True)
    x = torch.randn(1, 3, 16, 16)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_init_is_seeded() -> None:
    torch.manual_seed(3)
    a = ResnetGenerator(blocks=1, channels=4).state_dict()
    torch.manual_seed(3)
    b = ResnetGenerator(blocks=1, channels=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_normal_init_statistics(paper_generator: ResnetGenerator) -> None:
    weight = paper_generator.model[10].conv_block[1].weight  # 256 x 256 x 3 x 3
    assert abs(weight.std().item() - 0.02) < 5e-4 and abs(weight.mean().item()) < 5e-4
    assert all(m.bias is None or not m.bias.any() for m in paper_generator.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("init", ["xavier", "kaiming", "orthogonal"])
def test_other_inits(init: str) -> None:
    torch.manual_seed(0)
    net = ResnetGenerator(blocks=1, channels=32, norm="batch", init=init, init_gain=0.5)
    weight = net.model[10].conv_block[1].weight.detach()  # 128 x 128 x 3 x 3: fan_in = fan_out = 1152
    if init == "xavier":
        assert weight.std().item() == pytest.approx(0.5 * (2 / (2 * 1152)) ** 0.5, rel=0.03)
    elif init == "kaiming":
        assert weight.std().item() == pytest.approx((2 / 1152) ** 0.5, rel=0.03)  # gain ignored, as the reference
    else:
        rows = weight.flatten(1)
        assert torch.allclose(rows @ rows.T, 0.25 * torch.eye(128), atol=1e-4)
    bn = net.model[2]
    assert abs(bn.weight.mean().item() - 1.0) < 0.5 and bn.weight.std().item() > 0.1 and not bn.bias.any()


def test_layers_reject_unknown_names() -> None:
    assert isinstance(norm_layer("instance")(8), nn.InstanceNorm2d)
    assert isinstance(norm_layer("none")(8), nn.Identity)
    with pytest.raises(I2IError):
        norm_layer("group")
    with pytest.raises(I2IError):
        init_weights(nn.Conv2d(1, 1, 1), "uniform")


@pytest.mark.parametrize("cls", [ResnetGenerator, PatchGANDiscriminator])
def test_constructor_matches_options(cls: type) -> None:
    params = inspect.signature(cls.__init__).parameters
    declared = {o.name: o.default for o in cls.options}
    assert {n: p.default for n, p in params.items() if n != "self"} == declared
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in params.items() if n != "self")
    assert cls.description() and "\n" not in cls.description()


@pytest.fixture(scope="module")
def registry() -> Registry:
    r = Registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other stock plugins may be missing while this one is tested
        r.load_entry_points()
    return r


def test_parts_come_through_the_registry(registry: Registry) -> None:
    gen = registry.create("generator", "resnet", blocks=2, channels=8)
    assert isinstance(gen, ResnetGenerator) and len(gen.model) == 10 + 2 + 9
    assert registry.info("generator", "resnet").package == "i2i-toolkit"
    disc = registry.create("discriminator", "patchgan", channels=8, norm="batch")
    assert isinstance(disc, PatchGANDiscriminator) and not disc.batch_independent
    assert registry.info("discriminator", "patchgan").package == "i2i-toolkit"


@pytest.mark.parametrize(("kind", "name", "bad"), [
    ("generator", "resnet", {"channels": 0}),
    ("generator", "resnet", {"norm": "group"}),
    ("generator", "resnet", {"blocks": -1}),
    ("discriminator", "patchgan", {"layers": 0}),
    ("discriminator", "patchgan", {"init": "uniform"}),
])
def test_bad_options_raise(registry: Registry, kind: str, name: str, bad: dict) -> None:
    with pytest.raises(I2IError):
        registry.create(kind, name, **bad)
