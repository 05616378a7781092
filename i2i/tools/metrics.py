"""Image-quality metrics on tensors: L1, PSNR and SSIM against targets, FID and KID between image sets.

Conventions (also in the README): images are compared in [0, 1] (generator outputs clamped, as when saved);
L1 is the mean absolute error in those units (half the training losses' [-1, 1] units); PSNR uses data range 1,
is computed per image, capped at PSNR_CAP dB (identical images would give infinity, which JSON cannot hold)
and averaged; SSIM is torchmetrics' (Gaussian window 11, sigma 1.5) averaged over images. FID and KID are
computed on the features a given network maps [0, 1] images to (i2i.tools.inception: the FID protocols).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

# From their modules: torchmetrics.image exports these two only when torch-fidelity is installed, which the
# default Inception needs but a feature module of our own does not.
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from i2i.errors import I2IError

__all__ = ["KID_SUBSET_SIZE", "PSNR_CAP", "DistributionScores", "PairedScores", "frechet_distance", "paired_metrics",
           "to_unit"]

#: PSNR of an image reproduced exactly (an MSE of 0 gives infinity); also the most any one image counts for.
PSNR_CAP = 100.0
#: torchmetrics' metrics sync over the process group when one is running (torchrun); ours measure the images the
#: calling process saw (validation runs on rank 0 alone), so they never wait for the other processes
LOCAL = {"sync_on_compute": False}
KID_SUBSET_SIZE = 1000  # torch-fidelity's and torchmetrics' default; fewer images use them all


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
