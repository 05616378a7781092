"""Scoring generators on a dataset's held-out split: what `i2i evaluate` and the validation callback measure.

Which scores there are (metric_names), which way each is better (LOWER_IS_BETTER, improves), and the loop that
feeds a split through the generators into the metrics of i2i.tools.metrics (measure, measure_held_out).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from i2i.contract.domains import route
from i2i.contract.parts import Dataset
from i2i.errors import I2IError
from i2i.tiles.plan import Tiling
from i2i.tools.generators import run_generator
from i2i.tools.metrics import DistributionScores, PairedScores, to_unit

__all__ = ["DIRECTIONS", "LOWER_IS_BETTER", "check_measurable", "improves", "measure", "measure_domains",
           "measure_held_out", "metric_names"]

#: the two-domain directions a generator translates: {direction: (source domain, target domain)}
DIRECTIONS = {"AtoB": ("A", "B"), "BtoA": ("B", "A")}
#: every score `measure` gives, and whether lower is better (for keeping the best checkpoint); images and kid_std
#: are counts and spreads, not scores
LOWER_IS_BETTER = {"l1": True, "psnr": False, "ssim": False, "cycle_l1": True, "fid": True, "kid": True}


def metric_names(directions: list[str] | dict[str, Any], paired: bool, features: bool) -> list[str]:
    """The scores `measure` gives each of `directions`: on paired data, with both generators (or, for a method of N
    domains, a direction to every domain: "to_<domain>"), with features."""
    names = ["l1", "psnr", "ssim"] if paired else []
    if all(d in directions for d in DIRECTIONS) or _all_return(list(directions)):
        names.append("cycle_l1")
    return names + (["fid", "kid"] if features else [])


def _all_return(directions: list[str]) -> bool:
    """Whether, for directions of N domains ("to_<target>", "<source>_to_<target>"), every one has a way back from
    its target to its source(s), so cycle_l1 can be measured."""
    routes = [route(d) for d in directions if d not in DIRECTIONS]
    if not routes or None in routes or len(routes) != len(directions):
        return False
    return all(_back(routes, target, source) for source, target in routes)


def _back(routes: list[tuple[str | None, str]], start: str, end: str | None) -> bool:
    """Whether a direction goes from `start` to `end` (None: to any domain, i.e. a conditioned generator's)."""
    return any(target == end or (end is None and source is None) for source, target in routes
               if source in (None, start))


def improves(metric: str, value: float | None, best: float | None) -> bool:
    """Whether `value` of `metric` beats `best` (None: nothing yet); a missing or non-finite value never does."""
    if value is None or not math.isfinite(value):
        return False
    return best is None or (value < best if LOWER_IS_BETTER[metric] else value > best)


def measure(generators: dict[str, nn.Module], items: torch.utils.data.Dataset, paired: bool, batch_size: int = 8,
            device: torch.device | str = "cpu", feature: nn.Module | None = None, workers: int = 0,
            on_progress: Callable[[int, int], None] | None = None,
            tiling: Tiling | None = None) -> dict[str, dict[str, float]]:
    """Metrics per direction of `generators` ({"AtoB": G, ...}) on dataset `items` (dicts with "A", "B").

    Paired: l1, psnr, ssim of G(source) against the target. Both directions: cycle_l1, the mean absolute
    error of G'(G(x)) against x in [0, 1] units. With `feature`: fid, kid and kid_std of G(source) against
    the target domain's images. With `tiling`, images over its tile side or memory budget are translated in tiles
    (as `i2i translate` does).
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
                translated = run_generator(generator, fresh[source], tiling=tiling)
                if direction in paired_scores:
                    paired_scores[direction].update(translated, fresh[target])
                if direction in cycle:
                    back = run_generator(generators["BtoA" if direction == "AtoB" else "AtoB"], translated,
                                         tiling=tiling)
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


def measure_domains(generators: dict[str, nn.Module], items: torch.utils.data.Dataset, domains: tuple[str, ...],
                    batch_size: int = 8, device: torch.device | str = "cpu", feature: nn.Module | None = None,
                    workers: int = 0, on_progress: Callable[[int, int], None] | None = None,
                    tiling: Tiling | None = None) -> dict[str, dict[str, float]]:
    """Metrics per direction of a method of N domains: `generators` {"to_<target>" or "<source>_to_<target>": G}
    on items {"image", "domain"}. Each direction translates the images of its source domain (every other domain for
    "to_<target>"); cycle_l1 is the mean absolute error (in [0, 1] units) of translating them back to their own
    domain, where a direction does; with `feature`, fid/kid of the translations against the target domain's
    images."""
    device = torch.device(device)
    routes = {}
    for direction in generators:
        found = route(direction)
        if found is None or found[1] not in domains or (found[0] is not None and found[0] not in domains):
            raise I2IError(f"direction {direction!r} names no domains of the data ({', '.join(domains)})")
        routes[direction] = (None if found[0] is None else domains.index(found[0]), domains.index(found[1]))
    cycle: dict[str, list[Tensor]] = {d: [] for d in generators}
    distribution = {d: DistributionScores(feature, device) for d in generators} if feature is not None else {}
    counts = {d: 0 for d in generators}
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=device.type == "cuda", generator=torch.Generator())
    total, done = len(items), 0
    for batch in loader:
        images, own = batch["image"].to(device), torch.as_tensor(batch["domain"]).to(device)
        for direction, generator in generators.items():
            source, target = routes[direction]
            chosen = own != target if source is None else own == source
            sources, source_domains = images[chosen], own[chosen]
            if len(sources):
                translated = run_generator(generator, sources, tiling=tiling)
                counts[direction] += len(sources)
                for index in source_domains.unique().tolist():
                    way_back = _way(generators, routes, target, index)
                    if way_back is not None:
                        mine = source_domains == index
                        returned = run_generator(way_back, translated[mine], tiling=tiling)
                        cycle[direction].append((to_unit(returned) - to_unit(sources[mine])).abs().flatten(1)
                                                .mean(1).double().cpu())
                if direction in distribution:
                    distribution[direction].update(to_unit(translated), real=False)
            if direction in distribution and bool((own == target).any()):
                distribution[direction].update(to_unit(images[own == target]), real=True)
        done += len(images)
        if on_progress is not None:
            on_progress(done, total)
    if not total:
        raise I2IError("the evaluation split has no images")
    results: dict[str, dict[str, float]] = {}
    for direction in generators:
        found: dict[str, float] = {"images": counts[direction]}
        if cycle[direction]:
            found["cycle_l1"] = float(torch.cat(cycle[direction]).mean())
        if direction in distribution:
            found.update(distribution[direction].compute())
        results[direction] = found
    return results


def _way(generators: dict[str, nn.Module], routes: dict[str, tuple[int | None, int]], start: int,
         end: int) -> nn.Module | None:
    """The generator translating domain `start` to domain `end`, if a direction does."""
    return next((generators[d] for d, (source, target) in routes.items()
                 if target == end and source in (None, start)), None)


def measure_held_out(generators: dict[str, nn.Module], dataset: Dataset, split: str = "test", batch_size: int = 8,
                     device: torch.device | str = "cpu", feature: nn.Module | None = None, workers: int = 0,
                     images: int = 0, on_progress: Callable[[int, int], None] | None = None,
                     tiling: Tiling | None = None) -> dict[str, dict[str, float | None]]:
    """What `i2i evaluate` measures: `generators` ({"AtoB": G, ...}) on the dataset part's `split`, unaugmented
    (its first `images` items when given, else all); a value that is not finite (a diverged generator) is None.
    `tiling`: as `measure`'s."""
    check_measurable(dataset, split, list(generators), feature is not None)
    items = dataset.load(split, augment=False)
    if images:
        items = torch.utils.data.Subset(items, range(min(images, len(items))))
    if dataset.domains() != ("A", "B"):
        metrics = measure_domains(generators, items, dataset.domains(), batch_size, device, feature, workers,
                                  on_progress, tiling)
    else:
        metrics = measure(generators, items, dataset.paired, batch_size, device, feature, workers, on_progress,
                          tiling)
    return {d: {k: _finite(v) for k, v in m.items()} for d, m in metrics.items()}


def check_measurable(dataset: Dataset, split: str, directions: list[str], features: bool,
                     fix: str = "pass --inception-weights for FID and KID, or evaluate on paired data") -> None:
    """I2IError when the dataset lacks `split`, or when nothing can be measured (unpaired data, one direction, no
    features); `fix` says what to do about the latter."""
    if not dataset.has_split(split):
        raise I2IError(_missing_split(dataset, split))
    if not metric_names(directions, dataset.paired, features):
        raise I2IError(f"nothing to measure on unpaired data with one generator ({', '.join(directions)}): {fix}")


def _finite(value: float) -> float | int | None:
    """JSON has no NaN or infinity: such a value (a diverged generator) is written as null."""
    return value if math.isfinite(value) else None


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
