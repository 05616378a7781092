"""The networks' stabilizer options: spectral normalization of the discriminators, anti-aliased sampling."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import RECIPES, ROOT, TINY, assert_same_final_state
from i2i.nn.layers import BlurDownsample, BlurUpsample
from i2i.contract.registry import create
from i2i.testing import check_part


def largest_singular_values(net: nn.Module) -> list[float]:
    """The spectral norm of each conv's effective weight, reshaped to (out, in * k * k)."""
    return [torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), 2).item()
            for m in net.modules() if isinstance(m, nn.Conv2d)]


def pixel_discriminator(**options) -> nn.Module:
    """i2i-extras' pixel discriminator, from its source tree (test_extras pip-installs the package itself)."""
    if "i2i_extras" in sys.modules:  # installed and imported by now: leave it as it is
        return importlib.import_module("i2i_extras.pixel").PixelDiscriminator(**options)
    source = str(ROOT / "plugins" / "i2i_extras" / "src")
    sys.path.insert(0, source)
    try:
        from i2i_extras.pixel import PixelDiscriminator
    finally:
        # forgotten again, so that test_extras still sees the package as not installed until it installs it
        sys.path.remove(source)
        for module in [m for m in sys.modules if m == "i2i_extras" or m.startswith("i2i_extras.")]:
            del sys.modules[module]
    return PixelDiscriminator(**options)


def discriminator(name: str, **options) -> nn.Module:
    """A stock discriminator, or the extras' pixel one."""
    return pixel_discriminator(**options) if name == "pixel" else create("discriminator", name, **options)


# resnet18 cut after level 1 at 32 px: its stem and first stage's convs, cheap to run and to take the SVD of
@pytest.mark.parametrize("name, options", [("patchgan", {"channels": 8}),
                                           ("patchgan", {"channels": 8, "antialias": True}),
                                           ("timm", {"backbone": "resnet18", "level": 1}),
                                           ("pixel", {"channels": 8})])
def test_spectral_norm_holds_each_layers_largest_singular_value_at_one(name, options):
    torch.manual_seed(0)
    plain = discriminator(name, **options)
    normed = discriminator(name, spectral_norm=True, **options)
    for _ in range(25):  # the power iteration runs once per training-mode forward
        normed(torch.randn(1, 3, 32, 32))
    sigmas = largest_singular_values(normed)
    assert sigmas and all(abs(s - 1) < 0.05 for s in sigmas), sigmas
    assert not all(abs(s - 1) < 0.05 for s in largest_singular_values(plain))


def test_spectral_norm_keeps_its_power_iteration_in_the_state_dict():
    torch.manual_seed(0)
    net = create("discriminator", "patchgan", channels=8, spectral_norm=True)
    net(torch.randn(1, 3, 32, 32))
    assert not net.batch_independent  # its forwards advance the power iteration: one call per batch
    keys = net.state_dict().keys()
    assert "model.0.parametrizations.weight.original" in keys and "model.0.parametrizations.weight.0._u" in keys
    copy = create("discriminator", "patchgan", channels=8, spectral_norm=True)
    copy.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(net.eval()(x), copy.eval()(x))


def test_blur_downsampling_keeps_a_constant_and_upsampling_keeps_the_pixels():
    assert torch.allclose(BlurDownsample(2)(torch.full((1, 2, 8, 8), 0.7)), torch.full((1, 2, 4, 4), 0.7))
    x = torch.randn(1, 3, 5, 6)
    up = BlurUpsample(3)(x)
    assert up.shape == (1, 3, 10, 12)
    assert torch.allclose(up[..., ::2, ::2], x)  # the input pixels stay, the new ones lie between them
    assert torch.allclose(up[..., ::2, 1:-1:2], (x[..., :, :-1] + x[..., :, 1:]) / 2)
    assert not BlurDownsample(3).state_dict() and not BlurUpsample(3).state_dict()  # no new keys


def test_blurred_downsampling_moves_less_under_a_one_pixel_shift_than_striding():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 64, 64)
    shifted = torch.roll(x, 1, dims=-1)
    strided = (x[..., ::2, ::2] - shifted[..., ::2, ::2]).norm() / x[..., ::2, ::2].norm()
    blur = BlurDownsample(1)
    blurred = (blur(x) - blur(shifted))[..., 2:-2, 2:-2].norm() / blur(x)[..., 2:-2, 2:-2].norm()
    assert blurred < 0.8 * strided


def test_the_antialiased_patchgan_moves_less_under_a_one_pixel_shift():
    changes = {}
    for antialias in (False, True):
        torch.manual_seed(0)
        net = create("discriminator", "patchgan", channels=8, antialias=antialias).eval()
        x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            # the interior only: the rolled-in column reaches the border scores
            a, b = net(x)[..., 2:-2, 2:-2], net(torch.roll(x, 1, dims=-1))[..., 2:-2, 2:-2]
        changes[antialias] = ((a - b).norm() / a.norm()).item()
    assert changes[True] < 0.5 * changes[False], changes


@pytest.mark.parametrize("kind, name, options", [
    ("generator", "resnet", {"blocks": 2, "channels": 4, "antialias": True}),
    ("generator", "unet", {"downs": 5, "channels": 4, "antialias": True}),
    ("discriminator", "patchgan", {"channels": 4, "antialias": True, "spectral_norm": True, "norm": "none"}),
    ("discriminator", "patchgan", {"channels": 4, "layers": 2, "spectral_norm": True, "norm": "batch"}),
])
def test_the_options_keep_the_part_contract(kind, name, options):
    net = check_part(kind, name, **options)  # generators: encode() against feature_channels(), as CUT uses them
    if kind == "discriminator":
        assert len(net.features(torch.randn(1, 3, 32, 32))) == options.get("layers", 3) + 1  # one per LeakyReLU


@pytest.mark.parametrize("name, options", [("resnet", {"blocks": 2, "channels": 8}),
                                           ("unet", {"downs": 5, "channels": 8}), ("patchgan", {"channels": 8})])
def test_antialiased_networks_give_the_plain_ones_output_shapes(name, options):
    kind = "discriminator" if name == "patchgan" else "generator"
    x = torch.randn(2, 3, 64, 64)
    plain, smooth = create(kind, name, **options), create(kind, name, antialias=True, **options)
    assert smooth(x).shape == plain(x).shape
    assert any(isinstance(m, BlurDownsample) for m in smooth.modules())
    assert not any(isinstance(m, BlurDownsample) for m in plain.modules())


def test_options_off_keep_the_reference_layout():
    resnet = create("generator", "resnet", blocks=2, channels=8).state_dict()
    assert {"model.1.weight", "model.4.weight", "model.10.conv_block.1.weight", "model.12.weight"} <= resnet.keys()
    unet = create("generator", "unet", downs=5, channels=8).state_dict()
    assert {"model.model.0.weight", "model.model.1.model.1.weight", "model.model.3.weight"} <= unet.keys()
    patchgan = create("discriminator", "patchgan", channels=8).state_dict()
    assert {"model.0.weight", "model.2.weight", "model.5.weight", "model.11.weight"} <= patchgan.keys()


def test_cut_taps_an_antialiased_resnet():
    net = create("generator", "resnet", blocks=6, channels=8, antialias=True)
    layers = list(net.default_feature_layers())
    assert layers == [0, 4, 8, 12, 16]
    maps = net.encode(torch.randn(1, 3, 32, 32), layers)
    assert [m.shape[1] for m in maps] == [net.feature_channels()[i] for i in layers]
    assert isinstance(net.model[net.first_block], nn.Module) and net.first_block == 12


def test_cut_trains_an_antialiased_resnet_as_its_paper_does(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", RECIPES / "cut.toml", "--set", "data.name=synthetic", *TINY, "--set", "method.num_patches=16",
                 "--set", "method.head_channels=8", "--set", "generator.antialias=true",
                 "--set", "discriminator.antialias=true", "--set", "train.max_steps=2", "--out", run)
    assert result.code == 0, result.err
    heads = load_file(run / "checkpoints" / "step-00000002" / "F.safetensors")
    # layers 0, 4, 8, 12 of the anti-aliased encoder (1 block): the input, the two stride-1 downsampling convs
    # (8 and 16 channels, before their blur) and the residual block
    assert [heads[f"mlps.{i}.0.weight"].shape[1] for i in range(len(heads) // 4)] == [3, 8, 16, 16]


def test_a_run_with_both_options_resumes_and_exports(cli, tmp_path):
    args = [RECIPES / "quickstart.toml", *TINY, "--set", "discriminator.spectral_norm=true",
            "--set", "discriminator.antialias=true", "--set", "generator.antialias=true",
            "--set", "train.keep_checkpoints=0"]
    whole = tmp_path / "whole"
    assert cli("run", *args, "--out", whole).code == 0
    d_a = load_file(whole / "checkpoints" / "step-00000004" / "D_A.safetensors")
    assert any(key.endswith("._u") for key in d_a), "the power iteration's vector is saved"
    part = tmp_path / "part"
    assert cli("run", *args, "--set", "train.max_steps=2", "--out", part).code == 0
    # the schedule depends on the run's length only through epochs here, so a longer resumed run is the same run
    assert cli("run", *args, "--out", part, "--resume").code == 0
    assert_same_final_state(whole, part, 4)
    for fmt, name in (("torchscript", "g.pt"), ("onnx", "g.onnx")):  # each with the export's parity check
        result = cli("export", whole, "--format", fmt, "--out", tmp_path / name, "--size", "32")
        assert result.code == 0, result.err
        assert (tmp_path / name).is_file()
