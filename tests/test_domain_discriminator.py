"""The PatchGAN's auxiliary domain classifier (issue 32, StarGAN's D_cls): option `classes`, scores_and_logits."""

from __future__ import annotations

import pytest
import torch

from conftest import RECIPES, TINY, error_line
from i2i.api import I2IError
from i2i.contract.registry import create
from i2i.testing import check_part

HEAD_KEYS = {"classifier.weight", "classifier.bias"}


def patchgan(seed: int = 0, **options) -> torch.nn.Module:
    """A small stock PatchGAN built from `seed`."""
    torch.manual_seed(seed)
    return create("discriminator", "patchgan", **{"channels": 4, **options})


@pytest.mark.parametrize("options", [{"classes": 3},
                                     {"classes": 2, "antialias": True, "spectral_norm": True, "norm": "none"}])
def test_the_classifier_keeps_the_part_contract(options):
    net = check_part("discriminator", "patchgan", channels=4, **options)
    scores, logits = net.scores_and_logits(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, options["classes"]) and torch.isfinite(logits).all()
    assert scores.shape == (2, 1, 2, 2)


@pytest.mark.parametrize("options", [{}, {"antialias": True, "spectral_norm": True, "norm": "none"},
                                     {"layers": 2, "norm": "batch"}])
def test_scores_equal_forward_bit_for_bit_and_logits_fit_any_size(options):
    net = patchgan(classes=3, **options).eval()  # eval: spectral norm's power iteration stays where it is
    for side in (net.min_size, 48):
        x = torch.randn(2, 3, side, side + 8, generator=torch.Generator().manual_seed(side))
        with torch.no_grad():
            scores, logits = net.scores_and_logits(x)
            assert torch.equal(scores, net(x))
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_the_logits_are_differentiable_in_the_input_and_the_head():
    net = patchgan(classes=3)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    _, logits = net.scores_and_logits(x)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert net.classifier.weight.grad.abs().sum() > 0 and net.model[0].weight.grad.abs().sum() > 0
    assert net.model[-1].weight.grad is None  # the score conv is not on the logits' path


def test_the_head_learns_to_tell_domains_apart(one_thread):
    net = patchgan(classes=3, norm="none")
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        # three domains told apart by colour only: red, green or blue noise
        labels = torch.randint(0, 3, (12,), generator=generator)
        images = torch.rand(12, 3, 24, 24, generator=generator) * 0.5 - 1
        images[torch.arange(12), labels] += 1.0
        return images, labels

    for _ in range(40):
        images, labels = batch()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net.scores_and_logits(images)[1], labels).backward()
        optimizer.step()
    images, labels = batch()
    with torch.no_grad():
        assert (net.scores_and_logits(images)[1].argmax(1) == labels).float().mean() == 1.0


def test_classes_zero_keeps_the_network_the_head_adds_two_keys_and_leaves_the_trunk():
    absent, zero, three = patchgan(), patchgan(classes=0), patchgan(classes=3)
    assert absent.state_dict().keys() == zero.state_dict().keys()
    assert not any(key.startswith("classifier") for key in absent.state_dict())
    assert all(torch.equal(absent.state_dict()[k], zero.state_dict()[k]) for k in absent.state_dict())
    assert [name for name, _ in absent.named_modules()] == [name for name, _ in zero.named_modules()]
    with pytest.raises(I2IError, match="discriminator.classes"):
        zero.scores_and_logits(torch.randn(1, 3, 32, 32))
    # the head is drawn after the trunk, so the trunk (scores, features) is the same as without it
    assert three.state_dict().keys() == absent.state_dict().keys() | HEAD_KEYS
    assert all(torch.equal(absent.state_dict()[k], three.state_dict()[k]) for k in absent.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(absent.features(x), three.features(x), strict=True))
        assert torch.equal(absent(x), three(x))


def test_the_head_takes_the_init_and_spectral_norm_options():
    normal = patchgan(classes=3, channels=8, init_gain=0.5).classifier
    assert abs(normal.weight.std().item() - 0.5) < 0.05 and not normal.bias.any()  # torch's own init: uniform
    orthogonal = patchgan(classes=3, init="orthogonal", init_gain=1.0).classifier.weight.flatten(1)
    assert torch.allclose(orthogonal @ orthogonal.T, torch.eye(3), atol=1e-5)
    keys = patchgan(classes=3, spectral_norm=True).state_dict().keys()
    assert {"classifier.parametrizations.weight.original", "classifier.parametrizations.weight.0._u"} <= keys


def test_a_bad_classes_value_is_one_line_naming_the_key(cli, tmp_path):
    result = cli("run", RECIPES / "quickstart.toml", *TINY, "--set", "discriminator.classes=-1",
                 "--out", tmp_path / "r")
    assert result.code == 2 and "discriminator.classes" in error_line(result)
    assert not (tmp_path / "r").exists()


def test_info_lists_the_option(cli):
    result = cli("info", "discriminator", "patchgan")
    assert result.code == 0 and "classes" in result.out and "StarGAN" in result.out
