"""`i2i evaluate`: paired metrics, cycle L1, FID/KID plumbing and the Fréchet distance, and its errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from conftest import RECIPES, TINY, error_line
from i2i.tools.inception import InceptionFeatures, load_inception
from i2i.tools.metrics import PSNR_CAP, DistributionScores, frechet_distance, paired_metrics
from i2i_stock.datasets import draw_synthetic

PIX2PIX_TINY = [
    "--set", "data.name=synthetic", "--set", "data.paired=true", "--set", "data.count=4",
    "--set", "generator.downs=5", "--set", "generator.channels=4", "--set", "discriminator.channels=4",
    "--set", "data.load_size=36", "--set", "data.crop_size=32", "--set", "data.workers=0",
    "--set", "train.max_steps=2", "--set", "train.log_every=1", "--set", "train.checkpoint_every=0",
    "--set", "train.samples=1",
]


def aligned_folder(root: Path, counts: dict[str, int]) -> Path:
    """A pix2pix-style folder: <split>/<i>.png holding a flat-shapes image | its striped twin."""
    for split, count in counts.items():
        (root / split).mkdir(parents=True)
        for i in range(count):
            pair = Image.new("RGB", (80, 40))
            pair.paste(draw_synthetic(7, split, "A", i, 40), (0, 0))
            pair.paste(draw_synthetic(7, split, "A", i, 40, style="B"), (40, 0))
            pair.save(root / split / f"{i}.png")
    return root


def unpaired_folder(root: Path, counts: dict[str, int]) -> Path:
    """A CycleGAN-style folder: trainA/, testB/, ... with `counts` images each."""
    for sub, count in counts.items():
        (root / sub).mkdir(parents=True)
        for i in range(count):
            draw_synthetic(7, sub[:-1], sub[-1], i, 40).save(root / sub / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def cycle_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CycleGAN run on synthetic data (both generators)."""
    from i2i.recipe import load_recipe
    from i2i.engine import train

    overrides = [TINY[i + 1] for i in range(0, len(TINY), 2)]
    return train(load_recipe(RECIPES / "quickstart.toml", overrides), tmp_path_factory.mktemp("runs") / "cycle")


@pytest.fixture(scope="module")
def unpaired_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trainA/ and trainB/ (the datasets need them), 3 test images of A and 2 of B."""
    return unpaired_folder(tmp_path_factory.mktemp("data") / "h2z",
                           {"trainA": 1, "trainB": 1, "testA": 3, "testB": 2})


class TinyFeatures(nn.Module):
    """A small conv net with the Inception feature interface: [0, 1] images in, (N, 8) features out."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class Given(nn.Module):
    """Treats its (N, d, 1, 1) input as the features, so Gaussian samples go straight into FID/KID."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


# ---------------------------------------------------------------------------------------------------------
# Paired data


def test_paired_run_on_an_aligned_folder(cli, tmp_path: Path) -> None:
    run = tmp_path / "p2p"
    assert cli("run", RECIPES / "pix2pix.toml", *PIX2PIX_TINY, "--out", run).code == 0
    data = aligned_folder(tmp_path / "maps", {"train": 1, "test": 3})

    result = cli("evaluate", run, "--data", data, "--batch-size", "2")
    assert result.code == 0, result.err
    saved = json.loads((run / "metrics.json").read_text())
    assert f"metrics: {run / 'metrics.json'}" in result.out and "psnr" in result.out
    assert saved["data"] == {"dataset": "aligned", "root": str(data), "split": "test", "paired": True,
                             "load_size": 36, "crop_size": 32}
    assert saved["checkpoint"] == "step-00000002" and saved["step"] == 2 and saved["features"] is None
    assert list(saved["metrics"]) == ["AtoB"]  # pix2pix trains one generator
    found = saved["metrics"]["AtoB"]
    assert set(found) == {"images", "l1", "psnr", "ssim"} and found["images"] == 3
    assert 0 < found["l1"] < 1 and 0 < found["psnr"] < PSNR_CAP and -1 <= found["ssim"] <= 1

    # Without --data: the run's own (paired synthetic) test split, 4 images; --size replaces load and crop
    result = cli("evaluate", run, "--size", "24")
    assert result.code == 0, result.err
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["metrics"]["AtoB"]["images"] == 4 and saved["data"]["dataset"] == "synthetic"
    assert saved["data"]["load_size"] == saved["data"]["crop_size"] == 24

    # images larger than --tile are translated in tiles (as i2i translate does): close to the whole-image scores
    whole = cli("evaluate", run, "--size", "64")
    assert whole.code == 0, whole.err
    untiled = json.loads((run / "metrics.json").read_text())["metrics"]["AtoB"]
    tiled = cli("evaluate", run, "--size", "64", "--tile", "32")
    assert tiled.code == 0, tiled.err
    found = json.loads((run / "metrics.json").read_text())["metrics"]["AtoB"]
    assert found["images"] == 4 and found != untiled and abs(found["l1"] - untiled["l1"]) < 0.05


def test_psnr_ssim_l1_known_values() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 24, 24) - 0.5  # [-1, 1] units, room for the offset
    output = target + 0.2                    # 0.1 in [0, 1] units: MSE 0.01
    found = paired_metrics(output, target)
    assert found["l1"] == pytest.approx(0.1, abs=1e-6)
    assert found["psnr"] == pytest.approx(10 * math.log10(1 / 0.01), abs=1e-4)  # 20 dB
    assert 0 < found["ssim"] < 1

    same = paired_metrics(target, target.clone())
    assert same == {"l1": 0.0, "psnr": PSNR_CAP, "ssim": pytest.approx(1.0, abs=1e-6)}
    # One exact image counts as PSNR_CAP: the mean stays finite and keeps the other image's value.
    mixed = paired_metrics(torch.stack([target[0], output[1]]), target)
    assert mixed["psnr"] == pytest.approx((PSNR_CAP + 20.0) / 2, abs=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Unpaired data


def test_unpaired_run_cycle_l1(cli, cycle_run: Path, unpaired_data: Path) -> None:
    result = cli("evaluate", cycle_run, "--data", unpaired_data, "--device", "cpu")
    assert result.code == 0, result.err
    saved = json.loads((cycle_run / "metrics.json").read_text())
    assert saved["data"]["dataset"] == "unpaired" and saved["data"]["paired"] is False
    metrics = saved["metrics"]
    # each file once, although the split pairs image i of A with image i mod 2 of B
    assert metrics["AtoB"]["images"] == 3 and metrics["BtoA"]["images"] == 2
    for direction in ("AtoB", "BtoA"):
        assert set(metrics[direction]) == {"images", "cycle_l1"}
        assert 0 < metrics[direction]["cycle_l1"] < 1
    assert "cycle_l1" in result.out


# ---------------------------------------------------------------------------------------------------------
# FID and KID


def test_fid_kid_plumbing_with_a_tiny_feature_network(cli, cycle_run: Path, unpaired_data: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"stand-in")
    loaded = []

    def tiny(path: Path, protocol: str | None = None, **_) -> nn.Module:
        loaded.append(Path(path))
        features = TinyFeatures()
        features.protocol = "torchvision"  # what load_inception's networks say they measure
        return features

    monkeypatch.setattr("i2i.tools.evaluate.load_inception", tiny)
    result = cli("evaluate", cycle_run, "--data", unpaired_data, "--inception-weights", weights)
    assert result.code == 0, result.err
    assert loaded == [weights]
    saved = json.loads((cycle_run / "metrics.json").read_text())
    assert saved["features"] == (f"FID protocol: torchvision (ImageNet Inception v3 of torchvision, weights {weights}):"
                                 " NOT comparable with published FIDs")
    for direction in ("AtoB", "BtoA"):
        found = saved["metrics"][direction]
        assert {"cycle_l1", "fid", "kid", "kid_std"} <= set(found)
        assert found["fid"] > 0 and math.isfinite(found["kid"]) and found["kid_std"] >= 0
    assert "fid" in result.out and "kid" in result.out


def test_frechet_distance_known_values() -> None:
    torch.manual_seed(0)
    d = 4
    x = torch.randn(1000, d, 1, 1, dtype=torch.float64)
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64).view(1, d, 1, 1)

    def scores(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        metric = DistributionScores(Given(d), kid_subsets=10, kid_subset_size=200)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return metric.compute()

    same = scores(x, x.clone())
    shifted = scores(x, x + shift)  # same covariance: FID is |shift|^2 = 5
    assert same["fid"] == pytest.approx(0.0, abs=1e-6) and shifted["fid"] == pytest.approx(5.0, abs=1e-6)
    # KID is an unbiased estimate over random subsets: near 0 for one distribution, far above for two
    assert abs(same["kid"]) < 0.05 and shifted["kid"] > 1.0
    # Doubling the samples: means mu and 2 mu, covariances sigma and 4 sigma, so
    # FID = |mu|^2 + Tr(sigma + 4 sigma - 2 * 2 sigma) = |mu|^2 + Tr(sigma) (about d)
    mu, sigma = x.flatten(1).mean(0), torch.cov(x.flatten(1).T)
    assert scores(x, 2 * x)["fid"] == pytest.approx(float(mu.square().sum() + sigma.trace()), rel=1e-6)
    assert float(sigma.trace()) == pytest.approx(d, rel=0.1)

    # Our symmetric square root agrees with torchmetrics' general eigenvalue formula on random covariances.
    from torchmetrics.image.fid import _compute_fid

    a, b = torch.randn(50, 16, dtype=torch.float64), torch.randn(30, 16, dtype=torch.float64) * 1.5 + 0.3
    args = (a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))
    assert float(frechet_distance(*args)) == pytest.approx(float(_compute_fid(*args)), rel=1e-8)


def test_load_inception_from_torchvision_state_dicts(tmp_path: Path) -> None:
    from torchvision.models import Inception3

    reference = Inception3(num_classes=1000, aux_logits=True, init_weights=False)
    state = {k: v.half() for k, v in reference.state_dict().items()}  # half size on disk; loading casts
    save_file(state, tmp_path / "inception.safetensors")
    features = load_inception(tmp_path / "inception.safetensors")
    assert isinstance(features, InceptionFeatures) and not features.training
    assert torch.equal(features.net.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"].float())
    with torch.inference_mode():
        assert features(torch.rand(1, 3, 32, 32)).shape == (1, 2048)

    # a .pth wrapped as {"state_dict": ...} with DataParallel's prefixes, read with weights_only
    pth = {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "fc."))}
    torch.save({"state_dict": {f"module.{k}": v for k, v in pth.items()}}, tmp_path / "wrapped.pth")
    assert torch.equal(load_inception(tmp_path / "wrapped.pth").net.Mixed_7c.branch_pool.conv.weight,
                       state["Mixed_7c.branch_pool.conv.weight"].float())


# ---------------------------------------------------------------------------------------------------------
# Errors


def test_errors_are_one_line(cli, cycle_run: Path, unpaired_data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-run"
    (empty / "checkpoints").mkdir(parents=True)
    shutil.copy(cycle_run / "recipe.toml", empty / "recipe.toml")
    assert "no complete checkpoint" in error_line(cli("evaluate", empty, "--data", unpaired_data))
    assert "is not a run folder" in error_line(cli("evaluate", unpaired_data))

    line = error_line(cli("evaluate", cycle_run, "--data", unpaired_data, "--split", "val"))
    assert str(unpaired_data / "valA") in line and "--split" in line
    assert "neither" in error_line(cli("evaluate", cycle_run, "--data", tmp_path))

    missing = tmp_path / "nope.pth"
    assert f"--inception-weights {missing}: it does not exist" in error_line(
        cli("evaluate", cycle_run, "--data", unpaired_data, "--inception-weights", missing))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    # garbage bytes happen to start like a pickle, which the weights-only unpickler refuses
    line = error_line(cli("evaluate", cycle_run, "--data", unpaired_data, "--inception-weights", garbage))
    assert f"cannot read --inception-weights {garbage}: it is not a plain state dict of tensors" in line
    assert "refused to unpickle" in line and "inception_v3_google" in line
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv.weight": torch.zeros(2, 3, 1, 1)}, wrong)
    line = error_line(cli("evaluate", cycle_run, "--inception-weights", wrong))
    assert f"{wrong} is not torchvision's inception_v3 state dict" in line and "inception_v3_google" in line
    fid_style = tmp_path / "pt_inception.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, fid_style)
    # the TF-Inception's layout (1008 classes) for the torchvision protocol; tests/test_fid_standard.py has the rest
    line = error_line(cli("evaluate", cycle_run, "--fid", "torchvision", "--inception-weights", fid_style))
    assert "1008 classes" in line and "i2i download inception --kind torchvision" in line
    assert not (empty / "metrics.json").exists()
