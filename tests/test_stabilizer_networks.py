"""The networks' stabilizer options: spectral normalization of the discriminators, anti-aliased sampling."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import RECIPES, TINY, assert_same_final_state
from i2i.layers import BlurDownsample, BlurUpsample
from i2i.registry import create


def largest_singular_values(net: nn.Module) -> list[float]:
    """The spectral norm of each conv's effective weight, reshaped to (out, in * k * k)."""
    return [torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), 2).item()
            for m in net.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name, options", [("patchgan", {"channels": 8}), ("patchgan", {"channels": 8, "antialias": True}),
                                           ("timm", {"backbone": "resnet18"})])
def test_spectral_norm_holds_each_layers_largest_singular_value_at_one(name, options):
    torch.manual_seed(0)
    plain = create("discriminator", name, **options)
    normed = create("discriminator", name, spectral_norm=True, **options)
    for _ in range(25):  # the power iteration runs once per training-mode forward
        normed(torch.randn(1, 3, 64, 64))
    sigmas = largest_singular_values(normed)
    assert sigmas and all(abs(s - 1) < 0.05 for s in sigmas), sigmas
    assert not all(abs(s - 1) < 0.05 for s in largest_singular_values(plain))


def test_spectral_norm_keeps_its_power_iteration_in_the_state_dict():
    torch.manual_seed(0)
    net = create("discriminator", "patchgan", channels=8, spectral_norm=True)
    net(torch.randn(1, 3, 32, 32))
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


@pytest.mark.parametrize("name, options", [("resnet", {"blocks": 2, "channels": 8}), ("unet", {"downs": 5, "channels": 8}),
                                           ("patchgan", {"channels": 8})])
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
    result = cli("export", whole, "--format", "torchscript", "--out", tmp_path / "g.pt", "--size", "32")
    assert result.code == 0, result.err
    assert (tmp_path / "g.pt").is_file()
