"""Metrics of a trained run on held-out images, saved as the run's metrics.json.

Paired data (item i's A and B correspond): L1, PSNR and SSIM of each direction's translations against the
true counterparts. Both generators present: the cycle-reconstruction L1. Inception weights given or downloaded:
FID and KID between translated images and the real images of the target domain.

Conventions (also in the README): images are compared in [0, 1] (generator outputs clamped, as when saved);
L1 is the mean absolute error in those units (half the training losses' [-1, 1] units); PSNR uses data range 1,
is computed per image, capped at PSNR_CAP dB (identical images would give infinity, which JSON cannot hold)
and averaged; SSIM is torchmetrics' (Gaussian window 11, sigma 1.5) averaged over images.

FID and KID have two protocols (FID_PROTOCOLS), both on 2048-d average-pool features:
- "standard": the TF-Inception of pytorch-fid and torch-fidelity, run by torch-fidelity's
  FeatureExtractorInceptionV3, which also does their TF1-style bilinear resize to 299 x 299. That network takes
  8-bit images, so the [0, 1] images are quantised first as saving them to PNG would: (x * 255).round(), clamped
  to 0..255. With pytorch-fid's published weights (pt_inception-2015-12-05-6726825d.pth) the numbers compare with
  published FIDs (e.g. CUT's, with its CycleGAN baselines); with any other weights they do not.
- "torchvision": torchvision's ImageNet Inception v3 on the float images, antialiased bilinear resize to
  299 x 299. Such FIDs compare between runs measured alike, not with published ones.
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

# From their modules: torchmetrics.image exports these two only when torch-fidelity is installed, which the
# default Inception needs but a feature module of our own does not.
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from i2i.storage.atomic import atomic_file
from i2i.storage.cache import INCEPTION_FILES, inception_path
from i2i.storage.checkpoint import STATE_FILE, STEP_DIR
from i2i.engine.devices import resolve_device, usable_cpus
from i2i.storage.digests import file_sha256
from i2i.errors import I2IError, first_line
from i2i.tools.inference import generator_file, load_generator, run_generator
from i2i.contract.parts import Dataset
from i2i.recipe import LOADER
from i2i.contract.registry import default_registry
from i2i.storage.rundir import RECIPE_FILE, RunFolder
from i2i.storage.weights import read_weights

__all__ = ["FID_PROTOCOLS", "LOWER_IS_BETTER", "PSNR_CAP", "DistributionScores", "InceptionFeatures", "PairedScores",
           "StandardInceptionFeatures", "download_command", "evaluate", "fid_protocol_note",
           "frechet_distance", "improves", "inception_protocol", "load_inception", "measure", "measure_held_out",
           "metric_names", "paired_metrics"]

#: PSNR of an image reproduced exactly (an MSE of 0 gives infinity); also the most any one image counts for.
PSNR_CAP = 100.0
#: the FID protocols, the default first: "standard" (TF-Inception, comparable with papers) and "torchvision"
FID_PROTOCOLS = ("standard", "torchvision")
#: torchvision's ImageNet Inception v3 (Inception_V3_Weights.IMAGENET1K_V1), the weights of the torchvision protocol
INCEPTION_FILE = INCEPTION_FILES["torchvision"]
#: pytorch-fid's TF-Inception (torch-fidelity's network loads it), the weights of the standard protocol
STANDARD_FILE = INCEPTION_FILES["standard"]
#: the classes of the TF-Inception's classifier (ImageNet's 1000 and 8 unused): what tells its weights apart
TF_CLASSES = 1008
#: torchmetrics' metrics sync over the process group when one is running (torchrun); ours measure the images the
#: calling process saw (validation runs on rank 0 alone), so they never wait for the other processes
LOCAL = {"sync_on_compute": False}
KID_SUBSET_SIZE = 1000  # torch-fidelity's and torchmetrics' default; fewer images use them all
DIRECTIONS = {"AtoB": ("A", "B"), "BtoA": ("B", "A")}  # direction: (source domain, target domain)
#: every score `measure` gives, and whether lower is better (for keeping the best checkpoint); images and kid_std
#: are counts and spreads, not scores
LOWER_IS_BETTER = {"l1": True, "psnr": False, "ssim": False, "cycle_l1": True, "fid": True, "kid": True}


def metric_names(directions: list[str] | dict[str, Any], paired: bool, features: bool) -> list[str]:
    """The scores `measure` gives each of `directions`: on paired data, with both generators, with features."""
    names = ["l1", "psnr", "ssim"] if paired else []
    if all(d in directions for d in DIRECTIONS):
        names.append("cycle_l1")
    return names + (["fid", "kid"] if features else [])


def improves(metric: str, value: float | None, best: float | None) -> bool:
    """Whether `value` of `metric` beats `best` (None: nothing yet); a missing or non-finite value never does."""
    if value is None or not math.isfinite(value):
        return False
    return best is None or (value < best if LOWER_IS_BETTER[metric] else value > best)


# ---------------------------------------------------------------------------------------------------------
# Metrics on tensors


def to_unit(images: Tensor) -> Tensor:
    """Images in [-1, 1] mapped to [0, 1], clamped and NaN-free like a saved image."""
    return ((images.float() + 1) / 2).nan_to_num(0.0).clamp_(0.0, 1.0)


class PairedScores:
    """L1, PSNR and SSIM of outputs against their targets, accumulated over batches of images in [-1, 1]."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        # Per-image values (reduction none), so that one exactly reproduced image is capped, not infinite.
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="none", dim=(1, 2, 3), **LOCAL).to(device)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0, reduction="none", **LOCAL).to(device)
        self.l1: list[Tensor] = []

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch of (N, C, H, W) outputs and their targets."""
        output, target = to_unit(output), to_unit(target)
        self.l1.append((output - target).abs().flatten(1).mean(1).double().cpu())
        self.psnr.update(output, target)
        self.ssim.update(output, target)

    def compute(self) -> dict[str, float]:
        """Means over all images: l1 (in [0, 1] units), psnr (dB, each image capped at PSNR_CAP), ssim."""
        if not self.l1:
            raise ValueError("no images were added")
        psnr = self.psnr.compute().double().reshape(-1).clamp(max=PSNR_CAP)
        ssim = self.ssim.compute().double().reshape(-1)
        return {"l1": float(torch.cat(self.l1).mean()), "psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


def paired_metrics(output: Tensor, target: Tensor) -> dict[str, float]:
    """L1, PSNR and SSIM of (N, C, H, W) outputs against targets, both in [-1, 1] (see PairedScores)."""
    scores = PairedScores(output.device)
    scores.update(output, target)
    return scores.compute()


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64 in, float64 scalar out).

    |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), with Tr sqrt(sigma1 sigma2) taken as the sum of
    the square roots of the eigenvalues of the symmetric R sigma2 R, R = sqrt(sigma1): the same eigenvalues
    as torchmetrics' general eigvals of sigma1 sigma2, but two symmetric eigen-solves instead of a general
    one (2048-d on a 2-core CPU: about 18 s instead of 90).
    """
    values, vectors = torch.linalg.eigh(sigma1)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    middle = root @ sigma2 @ root
    middle = (middle + middle.T) / 2  # symmetric up to rounding; eigvalsh reads one triangle
    trace_root = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_root
    return distance.clamp(min=0)  # a squared distance; below 0 only by rounding


class _FrechetDistance(FrechetInceptionDistance):
    """torchmetrics' FID accumulation (float64 sums) with the faster symmetric matrix square root."""

    def compute(self) -> Tensor:
        """FID from the accumulated feature means and covariances, as torchmetrics computes them."""
        if self.real_features_num_samples < 2 or self.fake_features_num_samples < 2:
            raise ValueError("FID needs at least 2 real and 2 translated images")
        n_real, n_fake = self.real_features_num_samples, self.fake_features_num_samples
        mean_real = (self.real_features_sum / n_real).unsqueeze(0)
        mean_fake = (self.fake_features_sum / n_fake).unsqueeze(0)
        cov_real = (self.real_features_cov_sum - n_real * mean_real.t().mm(mean_real)) / (n_real - 1)
        cov_fake = (self.fake_features_cov_sum - n_fake * mean_fake.t().mm(mean_fake)) / (n_fake - 1)
        return frechet_distance(mean_real.squeeze(0), cov_real, mean_fake.squeeze(0), cov_fake)


class _Given(nn.Module):
    """Features passed straight through: they are computed once and fed to both FID and KID."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        if features.ndim != 2:  # torchmetrics versions that ignore num_features probe with a dummy image
            return features.new_zeros(features.shape[0], self.num_features, dtype=torch.float32)
        return features


class DistributionScores:
    """FID and KID between real and translated images, on the features `feature` maps [0, 1] images to."""

    def __init__(self, feature: nn.Module, device: torch.device | str = "cpu", kid_subsets: int = 100,
                 kid_subset_size: int = KID_SUBSET_SIZE) -> None:
        self.feature = feature
        self.device = torch.device(device)
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.num_features = _feature_size(feature, self.device)
        self.fid = _FrechetDistance(feature=_Given(self.num_features), normalize=True, **LOCAL).to(self.device)
        self.real: list[Tensor] = []
        self.fake: list[Tensor] = []

    @torch.inference_mode()
    def update(self, images: Tensor, real: bool) -> None:
        """Add a batch of (N, C, H, W) images in [0, 1] to the real or the translated set."""
        features = self.feature(images.to(self.device)).float().reshape(images.shape[0], -1)
        self.fid.update(features, real=real)
        (self.real if real else self.fake).append(features.cpu())

    def compute(self) -> dict[str, float]:
        """fid, kid (mean over subsets) and kid_std; I2IError with fewer than 2 images on either side."""
        real, fake = sum(map(len, self.real)), sum(map(len, self.fake))
        if min(real, fake) < 2:
            raise I2IError(f"FID and KID need at least 2 images on each side ({real} real, {fake} translated):"
                           " evaluate on a larger split")
        fid = float(self.fid.compute())
        subset = min(self.kid_subset_size, real, fake)
        with warnings.catch_warnings():  # it keeps every feature in memory, which is what we want here
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            kid = KernelInceptionDistance(feature=_Given(self.num_features), subsets=self.kid_subsets,
                                          subset_size=subset, normalize=True, **LOCAL).to(self.device)
        # float64 as the reference implementations (numpy): the cubic kernel overflows float32 on large features
        kid.update(torch.cat(self.real).to(self.device, torch.float64), real=True)
        kid.update(torch.cat(self.fake).to(self.device, torch.float64), real=False)
        # KID draws random subsets: a fixed seed makes it repeatable without touching the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            kid_mean, kid_std = kid.compute()
        return {"fid": fid, "kid": float(kid_mean), "kid_std": float(kid_std)}


def _feature_size(feature: nn.Module, device: torch.device) -> int:
    """The length of the feature vectors `feature` gives: its num_features, else measured on a blank image."""
    size = getattr(feature, "num_features", None)
    if isinstance(size, int):
        return size
    with torch.inference_mode():
        return int(feature(torch.zeros(1, 3, 64, 64, device=device)).reshape(1, -1).shape[1])


# ---------------------------------------------------------------------------------------------------------
# Inception v3 features from a local weights file: the two FID protocols


class _Frozen(nn.Module):
    """A feature network wrapped to stay in eval mode: batch-norm statistics and dropout must not change features."""

    num_features = 2048

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.eval()

    def train(self, mode: bool = True) -> "_Frozen":
        """Always in eval mode."""
        return super().train(False)


class InceptionFeatures(_Frozen):
    """torchvision's Inception v3 up to its 2048-d average pool, on [0, 1] images resized to 299 x 299."""

    protocol = "torchvision"

    def forward(self, images: Tensor) -> Tensor:
        """(N, 2048) features of (N, 3, H, W) images in [0, 1]."""
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        # The Google weights expect [-1, 1]: what torchvision's transform_input makes of ImageNet-normalised input.
        return self.net(x * 2 - 1)


class StandardInceptionFeatures(_Frozen):
    """The TF-Inception's 2048-d pool features (torch-fidelity's network and resize) of [0, 1] images, as 8-bit."""

    protocol = "standard"

    def forward(self, images: Tensor) -> Tensor:
        """(N, 2048) features of (N, 3, H, W) images in [0, 1]."""
        # The network takes 8-bit images (and resizes them itself, as pytorch-fid and torch-fidelity do): rounded
        # as a saved PNG holds them, so measuring images in memory equals measuring their files.
        pixels = (images.float() * 255).round().clamp(0, 255).to(torch.uint8)
        (features,) = self.net(pixels)
        return features


def inception_protocol(state: dict[str, Tensor]) -> str:
    """The FID protocol a weights state dict is laid out for: "standard" when its classifier has the TF-Inception's
    1008 outputs, else "torchvision" (whose loader then checks the rest)."""
    fc = state.get("fc.weight")
    return "standard" if isinstance(fc, Tensor) and fc.ndim == 2 and fc.shape[0] == TF_CLASSES else "torchvision"


def download_command(protocol: str) -> str:
    """The command that puts the weights of FID `protocol` into the cache."""
    return "i2i download inception" + (" --kind torchvision" if protocol == "torchvision" else "")


def _weights_hint(protocol: str | None) -> str:
    """Which file to pass, and the command that fetches it, for `protocol` (None: either)."""
    standard = f"the TF-Inception {STANDARD_FILE} (`{download_command('standard')}`)"
    torchvision = f"torchvision's {INCEPTION_FILE} (`{download_command('torchvision')}`)"
    wanted = {"standard": standard, "torchvision": torchvision}.get(protocol, f"{standard} or {torchvision}")
    return f"pass {wanted}, as a .pth or .safetensors file"


def load_inception(path: Path | str, protocol: str | None = None, *,
                   source: str = "--inception-weights") -> InceptionFeatures | StandardInceptionFeatures:
    """The Inception feature network of FID `protocol` with the weights in `path`; None: the protocol the file's
    layout is for (see inception_protocol).

    `path` is a .safetensors file or a .pth/.pt read with torch.load(weights_only=True): pytorch-fid's
    pt_inception-2015-12-05-6726825d.pth for "standard", torchvision's inception_v3_google-0cc3c7bd.pth for
    "torchvision". Nothing is ever downloaded. A missing, unreadable or mismatched file is an I2IError naming it
    (as `source`, e.g. the option it came from) and the file that fits.
    """
    if protocol is not None and protocol not in FID_PROTOCOLS:
        raise I2IError(f"FID protocol {protocol!r} is not one of {', '.join(FID_PROTOCOLS)}")
    if protocol == "standard":
        _torch_fidelity_inception()  # without torch-fidelity, fail before reading 100 MB
    path = Path(path).expanduser()
    try:
        state = read_weights(path)
    except I2IError as exc:
        raise I2IError(f"cannot read {source} {exc}; {_weights_hint(protocol)}") from None
    found = inception_protocol(state)
    if (protocol or found) == "standard":
        return _load_standard(path, state, source)
    if found == "standard":  # torchvision asked for, the TF-Inception given
        raise I2IError(f"{source} {path} looks like the TF-Inception of the standard FID protocol ({TF_CLASSES}"
                       f" classes, as in pytorch-fid or torch-fidelity), not torchvision's inception_v3 that the"
                       f" torchvision protocol needs: measure the standard protocol with it, or"
                       f" {_weights_hint('torchvision')}")
    return _load_torchvision(path, state, source, inferred=protocol is None)


def _load_torchvision(path: Path, state: dict[str, Tensor], source: str, inferred: bool) -> InceptionFeatures:
    """torchvision's inception_v3 with `state` loaded (the torchvision protocol)."""
    from torchvision.models import Inception3  # imported here: only FID/KID need it

    # A file of neither layout lands here when the protocol was inferred: name both files then.
    hint = _weights_hint(None if inferred else "torchvision")
    # The classifier and the auxiliary head are not used for features; files may hold them or not.
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    net = Inception3(num_classes=1000, aux_logits=False, transform_input=False, init_weights=False)
    net.fc = nn.Identity()
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise I2IError(f"{source} {path} does not fit torchvision's inception_v3: {first_line(exc)}; {hint}"
                       ) from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        problem = (f"{len(missing)} of its tensors are missing (e.g. {missing[0]})" if missing
                   else f"it holds {len(unexpected)} tensors inception_v3 has not (e.g. {unexpected[0]})")
        raise I2IError(f"{source} {path} is not torchvision's inception_v3 state dict: {problem}; {hint}")
    return InceptionFeatures(net)


def _torch_fidelity_inception() -> type[nn.Module]:
    """torch-fidelity's FeatureExtractorInceptionV3, or an I2IError saying how to install it."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise I2IError('the standard FID protocol needs torch-fidelity: pip install "i2i[fid]" (or measure the'
                       " torchvision protocol: --fid torchvision, or callback.validation.fid=torchvision)") from None
    return FeatureExtractorInceptionV3


@lru_cache(maxsize=1)
def _standard_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor torch-fidelity's TF-Inception holds, by name and shape (built on the meta device: no memory)."""
    base = _torch_fidelity_inception()

    class Skeleton(base):  # type: ignore[misc, valid-type]
        def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
            return None  # only the layout is wanted here

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device("meta"):
        skeleton = Skeleton(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=empty)
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def _load_standard(path: Path, state: dict[str, Tensor], source: str) -> StandardInceptionFeatures:
    """torch-fidelity's TF-Inception with `state` loaded (the standard protocol), after checking its layout."""
    extractor = _torch_fidelity_inception()
    expected = _standard_shapes()
    problem = _standard_layout_problem(state, expected)
    if problem:
        raise I2IError(f"{source} {path} is not the TF-Inception of the standard FID protocol: {problem};"
                       f" {_weights_hint('standard')}")
    # Never unpickle an untrusted file: torch-fidelity reads its weights with an unrestricted torch.load, which
    # runs whatever code a pickle holds. It gets bytes we have just written from the checked tensors instead (read
    # from the user's file by read_weights: safetensors, or torch.load(weights_only=True)).
    checked = io.BytesIO()
    torch.save({k: v for k, v in state.items() if k in expected}, checked)
    checked.seek(0)
    try:
        net = extractor(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=checked)
    except RuntimeError as exc:  # a dtype or value the layout check cannot see
        raise I2IError(f"{source} {path} does not load into torch-fidelity's TF-Inception: {first_line(exc)};"
                       f" {_weights_hint('standard')}") from None
    return StandardInceptionFeatures(net)


def _standard_layout_problem(state: dict[str, Tensor], expected: dict[str, tuple[int, ...]]) -> str:
    """What keeps `state` from being the TF-Inception's weights ("" if nothing): the classifier first, as it tells
    torchvision's inception_v3 apart."""
    size = lambda shape: "x".join(map(str, shape))  # noqa: E731
    fc = state.get("fc.weight")
    if isinstance(fc, Tensor) and tuple(fc.shape) != expected["fc.weight"]:
        torchvision = " (torchvision's inception_v3 has 1000: measure the torchvision protocol with it)"
        return (f"its classifier fc.weight is {size(fc.shape)}, not {size(expected['fc.weight'])}"
                + (torchvision if fc.ndim == 2 and fc.shape[0] == 1000 else ""))
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        return f"{len(missing)} of its tensors are missing (e.g. {missing[0]})"
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        return f"it holds {len(unexpected)} tensors the TF-Inception has not (e.g. {unexpected[0]})"
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if wrong:
        return f"{wrong[0]} is {size(state[wrong[0]].shape)}, not {size(expected[wrong[0]])}"
    return ""


def fid_protocol_note(protocol: str, weights: Path | str, sha256: str | None = None) -> str:
    """What metrics.json's "features" and `i2i evaluate` say about the FID measured: the protocol, the weights and
    whether the numbers compare with published FIDs (the standard protocol with pytorch-fid's published file,
    recognised by its sha256; `sha256` None: read from `weights`)."""
    if protocol != "standard":
        return (f"FID protocol: torchvision (ImageNet Inception v3 of torchvision, weights {weights}): NOT comparable"
                " with published FIDs")
    published = re.search(r"-([0-9a-f]{8,})\.pth$", STANDARD_FILE).group(1)  # hub style: name-<sha256 prefix>.pth
    sha256 = file_sha256(weights) if sha256 is None else sha256
    where = f"FID protocol: standard (TF-Inception of pytorch-fid/torch-fidelity, weights {weights})"
    if sha256.startswith(published):
        return f"{where}: comparable with published FIDs"
    # Random or retrained weights of the same layout give numbers of another scale: say so rather than mislead.
    return (f"{where}: NOT comparable with published FIDs, as the file is not pytorch-fid's {STANDARD_FILE} (its"
            f" sha256 starts {sha256[:8]}, not {published}; `{download_command('standard')}` fetches that one)")


# ---------------------------------------------------------------------------------------------------------
# Evaluating a run


def measure(generators: dict[str, nn.Module], items: torch.utils.data.Dataset, paired: bool, batch_size: int = 8,
            device: torch.device | str = "cpu", feature: nn.Module | None = None, workers: int = 0,
            on_progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """Metrics per direction of `generators` ({"AtoB": G, ...}) on dataset `items` (dicts with "A", "B").

    Paired: l1, psnr, ssim of G(source) against the target. Both directions: cycle_l1, the mean absolute
    error of G'(G(x)) against x in [0, 1] units. With `feature`: fid, kid and kid_std of G(source) against
    the target domain's images.
    """
    device = torch.device(device)
    both = all(d in generators for d in DIRECTIONS)
    paired_scores = {d: PairedScores(device) for d in generators} if paired else {}
    cycle: dict[str, list[Tensor]] = {d: [] for d in generators} if both else {}
    distribution = {d: DistributionScores(feature, device) for d in generators} if feature is not None else {}
    # A generator of its own: the loader's base seed is drawn from it, not from torch's global RNG (training's)
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=device.type == "cuda", generator=torch.Generator())
    # An unpaired split pairs image i of A with image i mod |B| of B: count each file once per domain.
    seen: dict[str, set[str]] = {"A": set(), "B": set()}
    counts = {"A": 0, "B": 0}
    total, done = len(items), 0
    for batch in loader:
        fresh = {}
        for domain in "AB":
            keep = []
            for path in batch[f"{domain}_path"]:  # one at a time: a batch can repeat a file
                keep.append(paired or path not in seen[domain])
                seen[domain].add(path)
            fresh[domain] = batch[domain][torch.tensor(keep, dtype=torch.bool)].to(device)
            counts[domain] += len(fresh[domain])
        for direction, generator in generators.items():
            source, target = DIRECTIONS[direction]
            if len(fresh[source]):
                translated = run_generator(generator, fresh[source])
                if direction in paired_scores:
                    paired_scores[direction].update(translated, fresh[target])
                if direction in cycle:
                    back = run_generator(generators["BtoA" if direction == "AtoB" else "AtoB"], translated)
                    cycle[direction].append((to_unit(back) - to_unit(fresh[source])).abs().flatten(1).mean(1)
                                            .double().cpu())
                if direction in distribution:
                    distribution[direction].update(to_unit(translated), real=False)
            if direction in distribution and len(fresh[target]):
                distribution[direction].update(to_unit(fresh[target]), real=True)
        done += len(batch["A"])
        if on_progress is not None:
            on_progress(done, total)
    if not counts["A"] and not counts["B"]:
        raise I2IError("the evaluation split has no images")
    results: dict[str, dict[str, float]] = {}
    for direction in generators:
        found: dict[str, float] = {"images": counts[DIRECTIONS[direction][0]]}
        if direction in paired_scores:
            found.update(paired_scores[direction].compute())
        if cycle.get(direction):
            found["cycle_l1"] = float(torch.cat(cycle[direction]).mean())
        if direction in distribution:
            found.update(distribution[direction].compute())
        results[direction] = found
    return results


def measure_held_out(generators: dict[str, nn.Module], dataset: Dataset, split: str = "test", batch_size: int = 8,
                     device: torch.device | str = "cpu", feature: nn.Module | None = None, workers: int = 0,
                     images: int = 0, on_progress: Callable[[int, int], None] | None = None
                     ) -> dict[str, dict[str, float | None]]:
    """What `i2i evaluate` measures: `generators` ({"AtoB": G, ...}) on the dataset part's `split`, unaugmented
    (its first `images` items when given, else all); a value that is not finite (a diverged generator) is None."""
    check_measurable(dataset, split, list(generators), feature is not None)
    items = dataset.load(split, augment=False)
    if images:
        items = torch.utils.data.Subset(items, range(min(images, len(items))))
    metrics = measure(generators, items, dataset.paired, batch_size, device, feature, workers, on_progress)
    return {d: {k: _finite(v) for k, v in m.items()} for d, m in metrics.items()}


def check_measurable(dataset: Dataset, split: str, directions: list[str], features: bool,
                     fix: str = "pass --inception-weights for FID and KID, or evaluate on paired data") -> None:
    """I2IError when the dataset lacks `split`, or when nothing can be measured (unpaired data, one direction, no
    features); `fix` says what to do about the latter."""
    if not dataset.has_split(split):
        raise I2IError(_missing_split(dataset, split))
    if not metric_names(directions, dataset.paired, features):
        raise I2IError(f"nothing to measure on unpaired data with one generator ({', '.join(directions)}): {fix}")


def evaluate(run: Path | str, data: Path | str | None = None, split: str = "test",
             inception_weights: Path | str | None = None, batch_size: int = 8, device: str = "auto",
             size: int | None = None, *, feature: nn.Module | None = None,
             on_progress: Callable[[int, int], None] | None = None, which: str | None = None,
             raw: bool = False, fid: str | None = None) -> dict[str, Any]:
    """Metrics of RUN's checkpoint `which` (default the newest; "best", "step-N") on the held-out `split`, written
    atomically to run/metrics.json.

    The dataset is the run's recipe [data] table with root = `data` when given (a run trained on synthetic data
    reads an aligned or unpaired folder, judged by its layout), loaded without augmentation: resized to
    load_size and centre-cropped to crop_size as in training, or resized to `size` x `size` when given.
    FID and KID use the protocol `fid` ("standard" or "torchvision"; None: what `inception_weights` is laid out
    for, else standard) with the weights `inception_weights`, else with the file `i2i download inception` put in
    the cache for that protocol; neither: no FID/KID. `feature`, any module mapping [0, 1] images to (N, d)
    features, replaces Inception. The checkpoint's EMA averages of the generators are measured when it has them,
    unless `raw`. Returns what metrics.json holds.
    """
    run = Path(run).expanduser()
    if batch_size < 1:
        raise I2IError(f"--batch-size {batch_size} must be at least 1")
    if size is not None and size < 1:
        raise I2IError(f"--size {size} must be at least 1")
    if fid is not None and fid not in FID_PROTOCOLS:
        raise I2IError(f"--fid {fid!r} is not one of {', '.join(FID_PROTOCOLS)}")
    folder = RunFolder(run)
    recipe_file = folder.recipe_file
    if not run.is_dir() or not recipe_file.is_file():
        raise I2IError(f"{run} is not a run folder (no {RECIPE_FILE} in it): pass the folder `i2i run` trained"
                       " into, e.g. runs/NAME")
    checkpoint = folder.checkpoint(which)  # a run without a complete checkpoint fails here with the fix
    target = resolve_device(device, "--device")
    features_used = None if feature is None else type(feature).__name__
    table = folder.read_recipe().get("data", {})
    rgb = _rgb_data(table)
    if not rgb and (inception_weights is not None or feature is not None):
        # Inception takes RGB photos: grayscale or multispectral data has no meaningful FID
        raise I2IError(f"FID and KID take RGB images, but this run's data is not 3-channel (data.channels ="
                       f" {table.get('channels')}, data.channels_b = {table.get('channels_b')}): evaluate without"
                       " --inception-weights (L1, PSNR and SSIM are measured on the data's own value range)")
    fix = "pass --inception-weights for FID and KID, or evaluate on paired data"
    if feature is None:
        given = inception_weights is not None
        weights = Path(inception_weights).expanduser() if given else inception_path(fid or "standard")
        if rgb and (given or weights.is_file()):  # downloaded weights serve RGB runs only
            source = "--inception-weights" if given else "the downloaded Inception weights"
            feature = load_inception(weights, fid, source=source)  # before anything slow: a bad file fails at once
            features_used = fid_protocol_note(feature.protocol, weights)
        else:
            fix = (f"no Inception weights for FID and KID in {weights}: get them with"
                   f" `{download_command(fid or 'standard')}` (or pass --inception-weights FILE), or evaluate on"
                   " paired data")
    if feature is not None:
        feature = feature.to(target).eval()
    dataset = _dataset(table, data, split, size, recipe_file)
    directions = _directions(checkpoint)
    check_measurable(dataset, split, directions, feature is not None, fix)  # before the generators load
    generators = {d: load_generator(checkpoint, d, target, raw=raw) for d in directions}
    paired = bool(dataset.paired)
    workers = min(int(table.get("workers", 0) or 0), max(0, usable_cpus() - 1))
    metrics = measure_held_out(generators, dataset, split, batch_size, target, feature, workers,
                               on_progress=on_progress)
    report = {
        "run": str(run),
        "checkpoint": checkpoint.name,
        "step": _step(checkpoint),
        "data": {"dataset": dataset.name, "root": str(getattr(dataset, "root", "")) or None, "split": split,
                 "paired": paired, "load_size": getattr(dataset, "load_size", None),
                 "crop_size": getattr(dataset, "crop_size", None)},
        "features": features_used,
        "generators": {d: generator_file(checkpoint, d, raw=raw).name for d in directions},  # e.g. G_A.ema.safetensors
        "metrics": metrics,
    }
    values = dataset.value_map()
    if values is not None:
        # the scores are on the [0, 1] scale of this mapping: with it, L1 converts to the data's units (times high -
        # low) and PSNR/SSIM are already the data-unit values for that data range
        report["data"]["values"] = json.loads(values.to_json())
    with atomic_file(folder.evaluation_file, "w") as f:
        json.dump(report, f, indent=2, allow_nan=False)
        f.write("\n")
    return report


def _rgb_data(table: dict[str, Any]) -> bool:
    """Whether a run's [data] table describes 3-channel images in both domains (the default)."""
    a = table.get("channels", 3)
    b = table.get("channels_b", 0) or a
    return a == 3 and b == 3


def _finite(value: float) -> float | int | None:
    """JSON has no NaN or infinity: such a value (a diverged generator) is written as null."""
    return value if math.isfinite(value) else None


def _step(checkpoint: Path) -> int:
    """The step of a checkpoint folder: its training.json's, else its step-N name (checkpoints/best has none)."""
    step = RunFolder.read_state(checkpoint).get("step")
    return step if isinstance(step, int) else int(STEP_DIR.match(checkpoint.name).group(1))


def _directions(checkpoint: Path) -> list[str]:
    """The directions a checkpoint folder has generators for, as its training.json records them."""
    generators = RunFolder.read_state(checkpoint).get("generators")
    found = [d for d in DIRECTIONS if isinstance(generators, dict) and d in generators]
    if not found:
        raise I2IError(f"{checkpoint / STATE_FILE} names no generator (an older i2i wrote it): evaluate"
                       " needs a checkpoint of this version; retrain or resume the run")
    return found


def _dataset(table: dict[str, Any], data: Path | str | None, split: str, size: int | None,
             recipe_file: Path) -> Dataset:
    """The run's dataset from its [data] table, rooted at `data` when given, at `size` when given."""
    registry = default_registry()
    name = table.get("name")
    if not isinstance(name, str):
        raise I2IError(f"{recipe_file} has no [data] name: is it a {RECIPE_FILE} written by `i2i run`?")
    options = {k: v for k, v in table.items() if k != "name" and k not in LOADER.names()}
    if data is not None:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise I2IError(f"--data {root} is not a folder: pass the dataset folder (e.g. with testA/ and testB/,"
                           " or test/ of A|B pairs)")
        if "root" not in {o.name for o in registry.info("dataset", name).options}:
            # e.g. a run on built-in synthetic data, evaluated on real folders: their layout says which kind
            name = _layout(root, split)
            takes = {o.name for o in registry.info("dataset", name).options}
            options = {k: v for k, v in options.items() if k in takes}
        options["root"] = str(root)
    if size is not None:
        options["load_size"] = options["crop_size"] = size
    try:
        return registry.create("dataset", name, **options)
    except I2IError as exc:
        raise I2IError(f"{exc} (dataset from {recipe_file}{', --data ' + str(data) if data is not None else ''})"
                       ) from None


def _layout(root: Path, split: str) -> str:
    """The stock dataset a folder's layout fits: unpaired (trainA/, <split>A/, ...) or aligned (train/, <split>/)."""
    if any((root / f"{s}{d}").is_dir() for s in ("train", split) for d in "AB"):
        return "unpaired"
    if any((root / s).is_dir() for s in ("train", split, "val")):
        return "aligned"
    raise I2IError(f"--data {root} has neither {split}A/ and {split}B/ (unpaired) nor {split}/ (aligned A|B pairs)"
                   " folders")


def _missing_split(dataset: Dataset, split: str) -> str:
    """The error for a dataset without `split`, naming the folders it looked for."""
    root = getattr(dataset, "root", None)
    if dataset.name == "unpaired":  # the stock datasets, by their registry names
        wanted = f"{root / (split + 'A')}/ and {root / (split + 'B')}/ with images"
    elif dataset.name == "aligned":
        wanted = f"{root / split}/" + (f" (or {root / 'val'}/)" if split == "test" else "") + " with A|B images"
    else:
        return f"dataset {dataset.name!r} has no {split!r} split: pass another --split"
    return f"{root} has no {split} split to evaluate on: expected {wanted}; pass --split or another --data"
