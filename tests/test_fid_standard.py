"""The standard FID protocol (torch-fidelity's TF-Inception, comparable with papers) beside the torchvision one:
values against torchmetrics, `i2i evaluate --fid` with given and downloaded weights, one-line errors for the
wrong file, and the validation callback's `fid` and `inception_weights = "downloaded"`.

The weights are random (the real file is 100 MB behind a download), in the layout of pytorch-fid's
pt_inception-2015-12-05-6726825d.pth, so the numbers check the plumbing and the maths, not published values.
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import RECIPES, TINY, error_line
from file_server import FileServer
from i2i.storage.cache import INCEPTION_FILES, inception_path
from i2i.storage.digests import file_sha256
from i2i.tools.inception import StandardInceptionFeatures, fid_protocol_note, inception_protocol, load_inception
from i2i.tools.metrics import DistributionScores
# module fixtures, as pytest finds them by name here: a tiny CycleGAN run and a small unpaired folder
from test_evaluate import cycle_run, unpaired_data  # noqa: F401, F811

STANDARD = INCEPTION_FILES["standard"]
FID_URL_PATH = f"/mseitzer/pytorch-fid/releases/download/fid_weights/{STANDARD}"
TORCHVISION = INCEPTION_FILES["torchvision"]


@pytest.fixture(scope="module")
def standard_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict of torch-fidelity's TF-Inception with random weights, saved under the published file's name."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the fresh weights

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(0)
    net = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    # He initialisation keeps the activations of the ~100 ReLU layers near unit scale (the default shrinks the
    # 2048 features to ~1e-8, where any FID is rounding noise).
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / STANDARD
    torch.save(net.state_dict(), path)
    return path


def uint8_images(seed: int, count: int, high: int) -> torch.Tensor:
    """(count, 3, 64, 64) random 8-bit images with values below `high`."""
    return torch.randint(0, high, (count, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def near(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images that round to `pixels` (uint8) when scaled by 255: each value off by up to 0.4 / 255."""
    jitter = (torch.rand(pixels.shape, generator=torch.Generator().manual_seed(3)) - 0.5) * 0.8
    return ((pixels.float() + jitter) / 255).clamp(0, 1)


def downloaded(path: Path, protocol: str) -> Path:
    """Put `path` where `i2i download inception` keeps the weights of `protocol` (a link: the file is 100 MB)."""
    target = inception_path(protocol)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(path)
    return target


# ---------------------------------------------------------------------------------------------------------
# Values


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
def test_standard_fid_and_kid_equal_torchmetrics_on_the_same_weights(standard_weights: Path) -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    features = load_inception(standard_weights)  # the protocol follows the file: 1008 classes
    assert isinstance(features, StandardInceptionFeatures) and features.protocol == "standard"
    real, fake = uint8_images(1, 6, 256), uint8_images(2, 6, 200)
    ours = DistributionScores(features, kid_subsets=20)
    # Our images are floats in [0, 1]: (k + up to 0.4) / 255 must become k again as in a saved PNG (rounding;
    # truncating would give k - 1 for half of them)
    ours.update(near(real), real=True)
    ours.update(near(fake), real=False)
    scores = ours.compute()

    # Like for like: torchmetrics' own copy of the network's forward, with antialias=False for torch-fidelity's TF1
    # resize (its default is an antialiased resize), fed the uint8 images themselves (normalize=True would
    # truncate x * 255 rather than round it); its FID takes the general eigenvalues of sigma1 sigma2, ours a
    # symmetric square root.
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(standard_weights), antialias=False)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    expected = float(fid.compute())
    assert expected > 1.0  # well-scaled features: a distance far above rounding noise
    assert scores["fid"] == pytest.approx(expected, rel=1e-3)

    # KID on the same features: with subsets of all 6 images every subset is the whole set, so no randomness
    kid = KernelInceptionDistance(feature=fid.inception, subsets=20, subset_size=6)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    kid_mean, _ = kid.compute()
    assert scores["kid"] == pytest.approx(float(kid_mean), rel=1e-3) and scores["kid"] > 0


def test_the_protocol_note_says_comparable_only_for_the_published_file() -> None:
    published = fid_protocol_note("standard", Path("w.pth"), sha256="6726825d" + "0" * 56)
    assert published == ("FID protocol: standard (TF-Inception of pytorch-fid/torch-fidelity, weights w.pth):"
                         " comparable with published FIDs")
    other = fid_protocol_note("standard", Path("w.pth"), sha256="ab" * 32)
    assert "NOT comparable with published FIDs" in other and "abababab, not 6726825d" in other
    assert "i2i download inception" in other
    assert fid_protocol_note("torchvision", Path("t.pth")).endswith(": NOT comparable with published FIDs")


# ---------------------------------------------------------------------------------------------------------
# i2i evaluate


def test_evaluate_standard_with_given_and_with_downloaded_weights(cli, cycle_run: Path, unpaired_data: Path,
                                                                  standard_weights: Path) -> None:
    result = cli("evaluate", cycle_run, "--data", unpaired_data, "--inception-weights", standard_weights)
    assert result.code == 0, result.err
    given = json.loads((cycle_run / "metrics.json").read_text())
    assert given["features"].startswith(f"FID protocol: standard (TF-Inception of pytorch-fid/torch-fidelity,"
                                        f" weights {standard_weights}): NOT comparable with published FIDs")
    assert given["features"] in result.out  # printed as stored
    for direction in ("AtoB", "BtoA"):
        found = given["metrics"][direction]
        assert math.isfinite(found["fid"]) and found["fid"] > 0 and math.isfinite(found["kid"])

    # No --inception-weights: the file `i2i download inception` fetched (from a server on 127.0.0.1 serving it under
    # pytorch-fid's path; --sha256 pins it, as random weights cannot have the published prefix), the same numbers
    with FileServer() as server:
        server.files[FID_URL_PATH] = standard_weights.read_bytes()
        fetched = cli("download", "inception", "--url", server.url, "--sha256", file_sha256(standard_weights))
    assert fetched.code == 0, fetched.err
    cached = inception_path("standard")
    assert "evaluate with: i2i evaluate RUN" in fetched.out and cached.is_file()
    result = cli("evaluate", cycle_run, "--data", unpaired_data, "--fid", "standard")
    assert result.code == 0, result.err
    found = json.loads((cycle_run / "metrics.json").read_text())
    assert found["features"].startswith(f"FID protocol: standard (TF-Inception of pytorch-fid/torch-fidelity,"
                                        f" weights {cached})")
    assert "FID protocol: standard" in result.out and "comparable with published FIDs" in result.out
    assert found["metrics"] == given["metrics"]


def test_without_weights_there_is_no_fid_and_the_output_says_how_to_get_it(cli, cycle_run: Path,
                                                                          unpaired_data: Path) -> None:
    result = cli("evaluate", cycle_run, "--data", unpaired_data)
    assert result.code == 0, result.err
    saved = json.loads((cycle_run / "metrics.json").read_text())
    assert saved["features"] is None and "fid" not in saved["metrics"]["AtoB"]
    assert f"no Inception weights of the standard protocol in {inception_path('standard')}" in result.err
    assert "`i2i download inception`" in result.err


def test_wrong_weights_for_each_protocol_are_one_line(cli, cycle_run: Path, standard_weights: Path,
                                                      tmp_path: Path) -> None:
    # torchvision's layout (1000 classes) for the standard protocol: refused on the classifier, before any load
    torchvision_like = tmp_path / TORCHVISION
    torch.save({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, torchvision_like)
    assert inception_protocol(torch.load(torchvision_like, weights_only=True)) == "torchvision"
    line = error_line(cli("evaluate", cycle_run, "--fid", "standard", "--inception-weights", torchvision_like))
    assert f"--inception-weights {torchvision_like} is not the TF-Inception of the standard FID protocol" in line
    assert "fc.weight is 1000x2048, not 1008x2048" in line and STANDARD in line
    assert "`i2i download inception`" in line

    # the TF-Inception for the torchvision protocol
    line = error_line(cli("evaluate", cycle_run, "--fid", "torchvision", "--inception-weights", standard_weights))
    assert f"{standard_weights} looks like the TF-Inception of the standard FID protocol" in line
    assert TORCHVISION in line and "`i2i download inception --kind torchvision`" in line

    # the TF-Inception's classifier alone: the protocol follows it, and the missing tensors are named
    partial = tmp_path / "partial.safetensors"
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, partial)
    line = error_line(cli("evaluate", cycle_run, "--inception-weights", partial))
    assert "is not the TF-Inception of the standard FID protocol" in line
    assert "of its tensors are missing (e.g. Conv2d_1a_3x3.conv.weight)" in line and STANDARD in line

    # a damaged file in the cache is named as the downloaded weights
    cached = inception_path("standard")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x80\x02 truncated")
    line = error_line(cli("evaluate", cycle_run))
    assert f"cannot read the downloaded Inception weights {cached}: it is not" in line
    assert "`i2i download inception`" in line


def test_nothing_to_measure_names_the_download(cli, tmp_path: Path) -> None:
    # CUT translates one way; on its unpaired synthetic data only FID/KID could be measured
    run = tmp_path / "cut"
    small = ["--set", "data.name=synthetic", *TINY, "--set", "method.num_patches=16", "--set",
             "method.head_channels=8", "--set", "train.max_steps=2"]
    assert cli("run", RECIPES / "cut.toml", *small, "--out", run).code == 0
    line = error_line(cli("evaluate", run, "--fid", "standard"))
    assert "nothing to measure on unpaired data with one generator (AtoB)" in line
    assert f"no Inception weights for FID and KID in {inception_path('standard')}" in line
    assert "`i2i download inception`" in line
    line = error_line(cli("evaluate", run, "--fid", "torchvision"))
    assert f"in {inception_path('torchvision')}" in line and "`i2i download inception --kind torchvision`" in line


def test_standard_without_torch_fidelity_says_how_to_install_it(cli, cycle_run: Path, standard_weights: Path,
                                                                monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)  # import fails
    line = error_line(cli("evaluate", cycle_run, "--fid", "standard", "--inception-weights", standard_weights))
    assert 'pip install "i2i-toolkit[fid]"' in line and "--fid torchvision" in line


class Exploit:
    """Unpickling this object would run a shell command: what a malicious .pth does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_planted_pickle_never_runs_whichever_protocol(cli, cycle_run: Path, tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "pwned"
    evil = tmp_path / STANDARD  # the name torch-fidelity's own loader would unpickle without a second thought
    evil.write_bytes(pickle.dumps({"fc.weight": Exploit(marker)}, protocol=2))
    for fid in ("standard", "torchvision"):
        line = error_line(cli("evaluate", cycle_run, "--fid", fid, "--inception-weights", evil))
        assert f"{evil}: it is not a plain state dict of tensors (refused to unpickle" in line
    downloaded(evil, "standard")
    assert "the downloaded Inception weights" in error_line(cli("evaluate", cycle_run))
    assert not marker.exists(), "a pickle's code ran"


# ---------------------------------------------------------------------------------------------------------
# The validation callback


def test_validation_measures_fid_with_the_downloaded_weights(cli, tmp_path: Path, standard_weights: Path) -> None:
    validate = ["--set", "callback.validation.inception_weights=downloaded", "--set", "callback.validation.images=2",
                "--set", "callback.progress.enabled=false"]
    # recipe time: not downloaded yet, for either protocol
    run = tmp_path / "run"
    line = error_line(cli("run", RECIPES / "quickstart.toml", *TINY, *validate, "--out", run))
    assert 'inception_weights = "downloaded"' in line and str(inception_path("standard")) in line
    assert "`i2i download inception`" in line
    line = error_line(cli("run", RECIPES / "quickstart.toml", *TINY, *validate, "--set",
                          "callback.validation.fid=torchvision", "--out", run))
    assert "`i2i download inception --kind torchvision`" in line
    # a protocol the file does not fit: refused when the run is set up, before anything is written
    line = error_line(cli("run", RECIPES / "quickstart.toml", *TINY, "--set", "callback.validation.fid=torchvision",
                          "--set", f"callback.validation.inception_weights={standard_weights}", "--out", run))
    assert f"[callback.validation] inception_weights {standard_weights} looks like the TF-Inception" in line
    assert not run.exists()

    downloaded(standard_weights, "standard")
    result = cli("run", RECIPES / "quickstart.toml", *TINY, *validate, "--out", run)
    assert result.code == 0, result.err
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validation = [r["validation"] for r in logged if "validation" in r]
    assert [v["step"] for v in validation] == [4]  # at the end only
    for direction in ("AtoB", "BtoA"):
        found = validation[0][direction]
        assert found["images"] == 2 and math.isfinite(found["fid"]) and found["fid"] > 0
        assert math.isfinite(found["kid"])
