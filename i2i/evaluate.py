"""Metrics of a trained run on held-out images, saved as the run's metrics.json.

Paired data (item i's A and B correspond): L1, PSNR and SSIM of each direction's translations against the
true counterparts. Both generators present: the cycle-reconstruction L1. Local Inception weights given: FID
and KID between translated images and the real images of the target domain.

Conventions (also in the README): images are compared in [0, 1] (generator outputs clamped, as when saved);
L1 is the mean absolute error in those units (half the training losses' [-1, 1] units); PSNR uses data range 1,
is computed per image, capped at PSNR_CAP dB (identical images would give infinity, which JSON cannot hold)
and averaged; SSIM is torchmetrics' (Gaussian window 11, sigma 1.5) averaged over images.
"""

from __future__ import annotations

import json
import math
import warnings
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

from i2i.atomic import atomic_file
from i2i.checkpoint import STATE_FILE, STEP_DIR
from i2i.devices import resolve_device, usable_cpus
from i2i.errors import I2IError, first_line
from i2i.inference import generator_file, load_generator, run_generator
from i2i.parts import Dataset
from i2i.recipe import LOADER
from i2i.registry import default_registry
from i2i.rundir import RECIPE_FILE, RunFolder
from i2i.weights import read_weights

__all__ = ["LOWER_IS_BETTER", "PSNR_CAP", "DistributionScores", "InceptionFeatures", "PairedScores", "evaluate",
           "frechet_distance", "improves", "load_inception", "measure", "measure_held_out", "metric_names",
           "paired_metrics"]

#: PSNR of an image reproduced exactly (an MSE of 0 gives infinity); also the most any one image counts for.
PSNR_CAP = 100.0
#: torchvision's ImageNet Inception v3 (Inception_V3_Weights.IMAGENET1K_V1), the weights --inception-weights takes
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
INCEPTION_URL = f"https://download.pytorch.org/models/{INCEPTION_FILE}"
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
# Inception v3 features from a local weights file


class InceptionFeatures(nn.Module):
    """torchvision's Inception v3 up to its 2048-d average pool, on [0, 1] images resized to 299 x 299."""

    num_features = 2048

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.eval()

    def train(self, mode: bool = True) -> "InceptionFeatures":
        """Always in eval mode: batch-norm statistics and dropout must not change the features."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """(N, 2048) features of (N, 3, H, W) images in [0, 1]."""
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        # The Google weights expect [-1, 1]: what torchvision's transform_input makes of ImageNet-normalised input.
        return self.net(x * 2 - 1)


def load_inception(path: Path | str) -> InceptionFeatures:
    """The Inception v3 feature network with the weights in `path` (torchvision's inception_v3 state dict).

    `path` is a .safetensors file or a .pth/.pt read with torch.load(weights_only=True), e.g. torchvision's
    inception_v3_google-0cc3c7bd.pth. Nothing is ever downloaded. A missing, unreadable or mismatched file is
    an I2IError naming it.
    """
    from torchvision.models import Inception3  # imported here: only FID/KID need it

    path = Path(path).expanduser()
    hint = f"pass torchvision's inception_v3 weights ({INCEPTION_FILE}) as a .pth or .safetensors file"
    try:
        state = read_weights(path)
    except I2IError as exc:
        raise I2IError(f"cannot read --inception-weights {exc}; {hint}") from None
    fc = state.get("fc.weight")
    if isinstance(fc, Tensor) and fc.ndim == 2 and fc.shape[0] == 1008:
        raise I2IError(f"--inception-weights {path} looks like the TF FID Inception (1008 classes, as in pytorch-fid"
                       f" or torch-fidelity), which i2i does not rebuild: pass torchvision's inception_v3 weights"
                       f" ({INCEPTION_URL})")
    # The classifier and the auxiliary head are not used for features; files may hold them or not.
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    net = Inception3(num_classes=1000, aux_logits=False, transform_input=False, init_weights=False)
    net.fc = nn.Identity()
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise I2IError(f"--inception-weights {path} does not fit torchvision's inception_v3: {first_line(exc)}"
                       f" (expected {INCEPTION_FILE}, {INCEPTION_URL})") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        problem = (f"{len(missing)} of its tensors are missing (e.g. {missing[0]})" if missing
                   else f"it holds {len(unexpected)} tensors inception_v3 has not (e.g. {unexpected[0]})")
        raise I2IError(f"--inception-weights {path} is not torchvision's inception_v3 state dict: {problem};"
                       f" pass {INCEPTION_FILE} ({INCEPTION_URL})")
    return InceptionFeatures(net)


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
             raw: bool = False) -> dict[str, Any]:
    """Metrics of RUN's checkpoint `which` (default the newest; "best", "step-N") on the held-out `split`, written
    atomically to run/metrics.json.

    The dataset is the run's recipe [data] table with root = `data` when given (a run trained on synthetic data
    reads an aligned or unpaired folder, judged by its layout), loaded without augmentation: resized to
    load_size and centre-cropped to crop_size as in training, or resized to `size` x `size` when given.
    `inception_weights` (torchvision's inception_v3 state dict) adds FID and KID; `feature`, any module
    mapping [0, 1] images to (N, d) features, replaces Inception. The checkpoint's EMA averages of the generators
    are measured when it has them, unless `raw`. Returns what metrics.json holds.
    """
    run = Path(run).expanduser()
    if batch_size < 1:
        raise I2IError(f"--batch-size {batch_size} must be at least 1")
    if size is not None and size < 1:
        raise I2IError(f"--size {size} must be at least 1")
    folder = RunFolder(run)
    recipe_file = folder.recipe_file
    if not run.is_dir() or not recipe_file.is_file():
        raise I2IError(f"{run} is not a run folder (no {RECIPE_FILE} in it): pass the folder `i2i run` trained"
                       " into, e.g. runs/NAME")
    checkpoint = folder.checkpoint(which)  # a run without a complete checkpoint fails here with the fix
    target = resolve_device(device, "--device")
    features_used = None if feature is None else type(feature).__name__
    if inception_weights is not None and feature is None:
        feature = load_inception(inception_weights)  # before anything slow, so a bad file fails at once
        features_used = f"torchvision inception_v3, weights {Path(inception_weights).expanduser()}"
    if feature is not None:
        feature = feature.to(target).eval()
    table = folder.read_recipe().get("data", {})
    dataset = _dataset(table, data, split, size, recipe_file)
    directions = _directions(checkpoint)
    check_measurable(dataset, split, directions, feature is not None)  # before the generators load
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
    with atomic_file(folder.evaluation_file, "w") as f:
        json.dump(report, f, indent=2, allow_nan=False)
        f.write("\n")
    return report


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
