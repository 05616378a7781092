"""Tiled translation of large images (issue 27): fidelity and seams against whole-image translation, a picture,
throughput, and peak memory on images far larger than memory.

    python benchmarks/large_images.py [--only fidelity,seams,picture,throughput] [--scale] [--size 2048]
        [--tile 512] [--overlaps 64 128] [--weights FILE_OR_RUN] [--image PATH] [--scale-sizes 20000 8192]

Parts (`--only`, comma-separated; `--scale` adds the last):
  fidelity    an image that also fits whole, translated whole and in tiles (each overlap x norm statistics x
              blend): mean and max absolute difference in 0..255 units, and the time of each mode
  seams       for the same outputs: the mean jump between adjacent pixels across tile borders over the same jump
              elsewhere (1.0: no visible seam), with the whole-image output on the same borders as the baseline
  picture     docs/large_images.png: a crop around a tile corner, each statistics mode, amplified differences
  throughput  pixels/s of tiled (default options) against whole-image translation, alternated, best of --repeats
  scale       tiled RGB TIFFs (--scale-sizes: quick start generator, then ResNet-9) through `i2i translate` in a
              child process: its peak RSS, wall time and pixels/s; the output checked window by window

The generator is the paper's ResNet-9 (9 blocks x 64, instance norm): --weights, else the init seeded with --seed.
The image is --image, else a mosaic of the maps dataset's aerial halves (../shared/data/maps/val), else of synthetic
drawings. Each (overlap, statistics) pair is translated once and blended each way (see Replayed). Run by hand.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import describe_device, sync  # noqa: E402

from i2i.api import create  # noqa: E402
from i2i.data.images import read_image  # noqa: E402
from i2i.tiles.engine import TiledTranslation, tensor_input, translate_tensor  # noqa: E402
from i2i.tiles import BLENDS, NORM_STATS  # noqa: E402
from i2i.tiles.plan import Tiling, seam_borders  # noqa: E402
from i2i.tools.generators import load_generator, run_generator, to_tensor  # noqa: E402

PARTS = ("fidelity", "seams", "picture", "throughput", "scale")
MAPS = ROOT.parent / "shared" / "data" / "maps" / "val"
PATCH = 512  # side of each mosaic patch
QUICK_START = {"blocks": 3, "channels": 16}  # recipes/quickstart.toml's generator
ACCEPT_DIFF = 0.5  # mean abs difference (0..255) allowed with whole-image statistics
ACCEPT_SLOWDOWN = 1.3  # tiled time over whole-image time
ACCEPT_RSS_MIB = 2048  # peak RSS of `i2i translate` at scale
PICTURE_BYTES = 400_000


# Inputs: the generator and the image


def build_generator(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The generator the fidelity and throughput parts translate with, and words saying which weights it has."""
    if args.weights:
        return load_generator(args.weights, device=device), f"weights {args.weights}"
    options = {"blocks": args.blocks, "channels": args.channels}
    torch.manual_seed(args.seed)  # create() draws the init from torch's global generator
    net = create("generator", "resnet", **options).to(device).eval()
    return net, (f"random init (torch.manual_seed({args.seed}); create('generator', 'resnet', blocks={args.blocks},"
                 f" channels={args.channels}))")


def generator_words(args: argparse.Namespace) -> str:
    """A short name of the generator for the picture's title."""
    if args.weights:
        return f"resnet from {Path(args.weights).name}"
    return f"resnet {args.blocks} blocks x {args.channels}, random init (seed {args.seed})"


def mosaic(side: int) -> tuple[np.ndarray, str]:
    """A side x side uint8 RGB mosaic of 512 px patches: the maps dataset's aerial halves, else synthetic shapes."""
    from PIL import Image

    files = sorted(MAPS.glob("*.jpg"))
    grid = math.ceil(side / PATCH)
    canvas = np.zeros((grid * PATCH, grid * PATCH, 3), np.uint8)
    for index in range(grid * grid):
        if files:
            with Image.open(files[index % len(files)]) as pair:
                half = pair.convert("RGB").crop((0, 0, pair.width // 2, pair.height))  # A|B: the aerial half
            patch = half.resize((PATCH, PATCH), Image.BICUBIC)
        else:
            from i2i_stock.datasets import draw_synthetic
            patch = draw_synthetic(0, "val", "A", index, PATCH)
        row, column = divmod(index, grid)
        canvas[row * PATCH:(row + 1) * PATCH, column * PATCH:(column + 1) * PATCH] = np.asarray(patch)
    what = (f"{grid}x{grid} mosaic of the aerial halves of {min(len(files), grid * grid)} maps/val images"
            if files else f"{grid}x{grid} mosaic of synthetic drawings (draw_synthetic, domain A; no {MAPS})")
    return canvas[:side, :side], f"{what}, {PATCH} px each, cropped to {side}x{side}"


def load_image(args: argparse.Namespace) -> tuple[Tensor, str]:
    """The (3, H, W) image in [-1, 1] the fidelity and throughput parts translate, and words saying which."""
    if args.image:
        image = read_image(Path(args.image)).convert("RGB")
        return to_tensor(image), f"{args.image} ({image.width}x{image.height})"
    pixels, what = mosaic(args.size)
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div(127.5).sub(1), what


# Measures


def to_255(image: Tensor) -> Tensor:
    """Network values in [-1, 1] as the 0..255 intensities an 8-bit output gets (clamped, not rounded)."""
    return ((image.float() + 1) * 127.5).clamp(0, 255)


def difference(a: Tensor, b: Tensor) -> tuple[float, float]:
    """Mean and max absolute difference of two (C, H, W) outputs, in 0..255 units."""
    diff = (to_255(a) - to_255(b)).abs()
    return diff.mean().item(), diff.max().item()


def seam_ratio(image: Tensor, rows: Sequence[int], columns: Sequence[int]) -> float:
    """Mean absolute intensity jump between adjacent pixels across tile borders, over the same mean elsewhere.

    `image` is (C, H, W) in 0..255; a border at row r (column c) is where one tile's owned pixels end and the
    next one's begin (plan.seam_borders): the pairs (r - 1, r) straddle it. Every other pair of vertically or
    horizontally adjacent pixels is interior. 1.0: the borders are no rougher than the picture itself.
    """
    height, width = image.shape[-2:]
    down = (image[:, 1:] - image[:, :-1]).abs().mean(0)  # (H - 1, W): row i against row i + 1
    across = (image[:, :, 1:] - image[:, :, :-1]).abs().mean(0)  # (H, W - 1)
    seam_rows = torch.zeros(height - 1, dtype=torch.bool)
    seam_rows[[r - 1 for r in rows if 0 < r < height]] = True
    seam_columns = torch.zeros(width - 1, dtype=torch.bool)
    seam_columns[[c - 1 for c in columns if 0 < c < width]] = True
    seam_sum = down[seam_rows].sum() + across[:, seam_columns].sum()
    seam_count = down[seam_rows].numel() + across[:, seam_columns].numel()
    interior = (down.sum() + across.sum() - seam_sum) / (down.numel() + across.numel() - seam_count)
    return (seam_sum / max(seam_count, 1) / interior).item()


# Fidelity and seams


class Replayed(TiledTranslation):
    """A TiledTranslation that records its tile outputs, or replays ones recorded by another with the same overlap
    and statistics: the blend changes only how tile outputs are combined, not what the generator computes, and
    translating is nearly all of the time, so each (overlap, statistics) pair is translated once and blended
    four ways through the engine's own blending."""

    def __init__(self, *args: object, recorded: dict[int, list[object]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.recorded = recorded
        if recorded:
            self.control = None  # the statistics are already in the recorded outputs: no passes to fix them

    def _translate_row(self, y: int) -> list[object]:
        """What the engine's own _translate_row gives for the tile row at `y` (its tiles' outputs, in order),
        computed once."""
        if y not in self.recorded:
            self.recorded[y] = list(super()._translate_row(y))
        return self.recorded[y]


def run_tiled(translation: TiledTranslation) -> Tensor:
    """The whole (C, H, W) output of a tiled translation."""
    return torch.cat([rows for _, rows in translation.bands()], 1)


@dataclass
class Mode:
    """One tiled translation compared against the whole image's."""

    overlap: int
    stats: str  # "tile", "image", "thumbnail <side>" or "sample <side>"
    blend: str
    seconds: float
    passes: int
    tiles: str = ""  # how many tiles of which side the plan chose, e.g. "5x5 of 464 px"
    mean: float = 0.0
    max: float = 0.0
    seams: float = 0.0
    crop: Tensor | None = field(default=None, repr=False)


def stats_modes(args: argparse.Namespace) -> list[tuple[str, Tiling]]:
    """(label, Tiling without blend) for each statistics mode asked for."""
    modes = []
    for stats in args.norm_stats:
        if stats in ("thumbnail", "sample"):  # statistics of a picture of --stats-sides px
            modes += [(f"{stats} {side}", Tiling(norm_stats=stats, stats_side=side)) for side in args.stats_sides]
        else:
            modes.append((stats, Tiling(norm_stats=stats)))
    return modes


def corner_crop(rows: Sequence[int], columns: Sequence[int], height: int, width: int, side: int) -> tuple[slice, slice]:
    """A side x side window centred on the tile corner nearest the image's centre."""
    def centred(borders: Sequence[int], length: int) -> slice:
        middle = min(borders, key=lambda b: abs(b - length / 2)) if borders else length // 2
        start = min(max(0, middle - side // 2), max(0, length - side))
        return slice(start, start + side)
    return centred(rows, height), centred(columns, width)


def warm_up(generator: torch.nn.Module, side: int, device: torch.device) -> None:
    """One untimed pass at tile size: the first call of a fresh process pays for the kernels' set-up."""
    run_generator(generator, torch.zeros(1, 3, side, side, device=device))


@dataclass
class Window:
    """Where the picture's crop lies, and the tile borders inside it (crop coordinates)."""

    rows: slice
    columns: slice
    row_borders: list[int]
    column_borders: list[int]
    tile: int  # the side of the tiles (the plan may take them smaller than --tile)


def fidelity(generator: torch.nn.Module, image: Tensor, args: argparse.Namespace, device: torch.device,
             want_picture: bool) -> tuple[list[Mode], Window | None]:
    """Translate `image` whole and in every tiled mode; print a table row per mode as it finishes.

    Returns the modes (with the picture's crops for the first overlap and blend, and the whole image's and the
    input's as modes "whole" and "input") and where the crop lies."""
    warm_up(generator, args.tile, device)
    sync(device)
    start = time.perf_counter()
    whole = run_generator(generator, image[None].to(device))[0].float().cpu()
    sync(device)
    whole_seconds = time.perf_counter() - start
    height, width = image.shape[-2:]
    print(f"\nwhole image: {whole_seconds:.1f} s ({height * width / whole_seconds / 1e6:.3f} Mpx/s)")
    print("\n| overlap | tiles | norm stats | blend | mean abs diff (0..255) | max abs diff | seam ratio | time s |"
          " vs whole | passes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    modes: list[Mode] = []
    borders: dict[int, tuple[list[int], list[int]]] = {}
    window: Window | None = None
    for overlap in args.overlaps:
        for label, base in stats_modes(args):
            recorded: dict[int, list[object]] = {}
            first_seconds = first_replay = 0.0
            for index, blend in enumerate(args.blends):
                tiling = Tiling(tile=args.tile, overlap=overlap, blend=blend, norm_stats=base.norm_stats,
                                stats_side=base.stats_side, batch_size=args.batch_size).check()
                if index == 0:  # the recording run: statistics, every tile, this blend; timed as a user would see
                    translation = Replayed(generator, tensor_input(image), tiling, args.tile, recorded=recorded)
                    passes = translation.passes
                    sync(device)
                    start = time.perf_counter()
                    run_tiled(translation)
                    sync(device)
                    first_seconds = time.perf_counter() - start
                translation = Replayed(generator, tensor_input(image), tiling, args.tile, recorded=recorded)
                start = time.perf_counter()
                output = run_tiled(translation)
                replay = time.perf_counter() - start
                if index == 0:
                    first_replay = replay
                # what a run with this blend takes: the recording run less its blending, plus this blending
                mode = Mode(overlap, label, blend, first_seconds - first_replay + replay, passes,
                            f"{len(translation.rows.starts)}x{len(translation.columns.starts)} of"
                            f" {translation.rows.size} px")
                mode.mean, mode.max = difference(output, whole)
                rows, columns = seam_borders(translation.rows), seam_borders(translation.columns)
                borders[overlap] = (rows, columns)
                mode.seams = seam_ratio(to_255(output), rows, columns)
                if want_picture and overlap == args.overlaps[0] and blend == args.blends[0]:
                    if window is None:
                        span = corner_crop(rows, columns, height, width, args.crop)
                        window = Window(*span, [r - span[0].start for r in rows if span[0].start < r < span[0].stop],
                                        [c - span[1].start for c in columns if span[1].start < c < span[1].stop],
                                        translation.rows.size)
                    mode.crop = output[:, window.rows, window.columns].clone()
                modes.append(mode)
                print(f"| {overlap} | {mode.tiles} | {label} | {blend} | {mode.mean:.3f} | {mode.max:.1f} |"
                      f" {mode.seams:.3f} | {mode.seconds:.1f} | {mode.seconds / whole_seconds:.2f}x | {passes} |",
                      flush=True)
    print("\nwhole-image output, same borders (the baseline): " + ", ".join(
        f"overlap {overlap}: seam ratio {seam_ratio(to_255(whole), *borders[overlap]):.3f}" for overlap in borders))
    verdicts = []
    for blend in args.blends:  # each blend on its own: the plain average is expected to fail where others pass
        exact = [m for m in modes if m.stats == "image" and m.blend == blend]
        if exact:
            worst = max(exact, key=lambda m: m.mean)
            verdicts.append(f"{blend} {'yes' if worst.mean <= ACCEPT_DIFF else 'NO'} ({worst.mean:.3f} at overlap"
                            f" {worst.overlap})")
    if verdicts:
        print(f"acceptance (mean abs diff <= {ACCEPT_DIFF} of 255 with whole-image statistics, worst over the"
              f" overlaps): {'; '.join(verdicts)}")
    print("times: the recording run (statistics, every tile, the first blend) is timed whole; the other blends"
          " replay its tile outputs, and their time is the recording run's less its blending plus their own")
    if window is not None:
        modes.append(Mode(0, "whole", "", whole_seconds, 1, crop=whole[:, window.rows, window.columns].clone()))
        modes.append(Mode(0, "input", "", 0.0, 0, crop=image[:, window.rows, window.columns].clone()))
    return modes, window


# The picture


def picture(modes: list[Mode], window: Window, args: argparse.Namespace, size: tuple[int, int],
            generator: str) -> None:
    """Write the crops around a tile corner and their amplified differences against whole to --picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    cropped = {m.stats: m for m in modes if m.crop is not None}
    shown = [("whole", "whole image"), ("tile", "per-tile statistics"), ("image", "whole-image statistics (exact)")]
    for kind, words in (("thumbnail", "statistics of a {} px thumbnail"), ("sample", "statistics of {} px of crops")):
        key = next((k for k in cropped if k.startswith(kind)), None)
        if key:
            shown.append((key, words.format(key.split()[1])))
    shown = [(key, title) for key, title in shown if key in cropped]
    if "whole" not in cropped or len(shown) < 2:
        print("picture: needs the whole image and at least one tiled mode; not written")
        return
    whole = to_255(cropped["whole"].crop)
    fig, axes = plt.subplots(2, len(shown), figsize=(2.9 * len(shown), 6.6), squeeze=False, layout="constrained")
    for column, (key, title) in enumerate(shown):
        mode = cropped[key]
        top, bottom = axes[0][column], axes[1][column]
        top.imshow(to_255(mode.crop).permute(1, 2, 0).byte().numpy(), interpolation="nearest")
        if key == "whole":
            top.set_title(f"{title}\n{size[1]}x{size[0]} translated whole", fontsize=8)
            bottom.imshow(to_255(cropped["input"].crop).permute(1, 2, 0).byte().numpy(), interpolation="nearest")
            bottom.set_title("input", fontsize=8)
        else:
            top.set_title(f"{title}\nmean |diff| {mode.mean:.2f}/255 (max {mode.max:.0f})", fontsize=8)
            diff = (to_255(mode.crop) - whole).abs().mean(0)
            bottom.imshow((diff * args.amplify).clamp(0, 255).numpy(), cmap="magma", vmin=0, vmax=255,
                          interpolation="nearest")
            bottom.set_title(f"|{key} - whole| x{args.amplify:g}, here mean {diff.mean():.2f}", fontsize=8)
        for ax in (top, bottom):
            # tick marks, unlabelled, where tiles meet: the seams to look for
            ax.set_xticks([c - 0.5 for c in window.column_borders], labels=[])
            ax.set_yticks([r - 0.5 for r in window.row_borders], labels=[])
            ax.tick_params(length=6, width=1.5, color="tab:cyan", top=True, right=True)
    first = next(m for m in modes if m.crop is not None and m.stats not in ("whole", "input"))
    fig.suptitle(f"{generator}; {window.tile} px tiles, overlap {first.overlap}, {first.blend} blend: a {args.crop} px"
                 " crop around a tile corner (ticks: the tile borders)", fontsize=8)
    for dpi in (100, 90, 80, 70):  # noisy outputs compress badly: fewer pixels until the picture is small enough
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        data = buffer.getvalue()
        if len(data) > PICTURE_BYTES:  # a 256-colour palette first: it keeps the panels' own pixels
            quantized = io.BytesIO()
            Image.open(io.BytesIO(data)).convert("RGB").quantize(256).save(quantized, format="PNG", optimize=True)
            data = quantized.getvalue()
        if len(data) <= PICTURE_BYTES:
            break
    plt.close(fig)
    Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
    Path(args.picture).write_bytes(data)
    print(f"\npicture: {args.picture} ({len(data) / 1000:.0f} KB)")


# Throughput


def throughput(generator: torch.nn.Module, image: Tensor, args: argparse.Namespace, device: torch.device) -> None:
    """Pixels/s of whole-image and tiled translation (default blend and statistics), alternated, best of N."""
    height, width = image.shape[-2:]
    runs: dict[str, Callable[[], object]] = {"whole": lambda: run_generator(generator, image[None].to(device))}
    for tile in args.throughput_tiles:
        tiling = Tiling(tile=tile, overlap=args.overlaps[0], batch_size=args.batch_size).check()
        runs[f"tile {tile}"] = lambda t=tiling, s=tile: translate_tensor(generator, image, t, s)
    warm_up(generator, min(args.throughput_tiles), device)
    # pixels the generator is given (tiles, and the picture statistics come from), per image pixel: what the
    # slow-down cannot go below when time is proportional to pixels
    given = [0]
    hook = generator.register_forward_pre_hook(
        lambda _module, inputs: given.__setitem__(0, given[0] + inputs[0].shape[0] * inputs[0][0, 0].numel()))
    best, overhead = {name: math.inf for name in runs}, {}
    try:
        for _ in range(args.repeats):
            for name, run in runs.items():
                given[0] = 0
                sync(device)
                start = time.perf_counter()
                run()
                sync(device)
                best[name] = min(best[name], time.perf_counter() - start)
                overhead[name] = given[0] / (height * width)
    finally:
        hook.remove()
    print(f"\nthroughput at {width}x{height} (overlap {args.overlaps[0]}, {Tiling().blend} blend,"
          f" {Tiling().norm_stats} {Tiling().stats_side} statistics), runs alternated, best of {args.repeats}:\n")
    print("| translation | best s | Mpx/s | time vs whole | generator pixels per image pixel |")
    print("| --- | --- | --- | --- | --- |")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.1f} | {height * width / seconds / 1e6:.3f} | {seconds / best['whole']:.2f}x |"
              f" {overhead[name]:.2f} |")
    slowest = max(seconds / best["whole"] for name, seconds in best.items() if name != "whole")
    print(f"acceptance (tiled within {ACCEPT_SLOWDOWN}x of whole): {'yes' if slowest <= ACCEPT_SLOWDOWN else 'NO'},"
          f" slowest {slowest:.2f}x")


# Scale: TIFFs larger than memory through `i2i translate`


def save_generator(net: torch.nn.Module, options: dict[str, object], path: Path) -> Path:
    """Write `net` as a generator file `i2i translate` can rebuild (the metadata i2i convert writes)."""
    from safetensors.torch import save_file

    from i2i.contract.registry import default_registry
    from i2i.storage.checkpoint import part_metadata

    resolved = default_registry().resolve_options("generator", "resnet", options)
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(tensors, str(path), metadata=part_metadata("generator", "resnet", resolved))
    return path


def pattern_tiles(pattern: np.ndarray, side: int, tile: int) -> Iterator[np.ndarray]:
    """The tiles, row-major, of a side x side image that mirrors `pattern` (H, W, 3) over and over, darkening
    it towards the bottom right so no two repeats are alike; computed one tile row at a time."""
    period = pattern.shape[0]
    across = math.ceil(side / tile)

    def mirrored(positions: np.ndarray) -> np.ndarray:  # 0..p-1, p-1..0, 0..: no jump where repeats meet
        folded = positions % (2 * period)
        return np.where(folded < period, folded, 2 * period - 1 - folded)

    columns = mirrored(np.arange(across * tile))
    for top in range(0, side, tile):
        rows = mirrored(np.arange(top, top + tile))
        band = pattern[rows][:, columns].astype(np.float32)
        shade = 1 - 0.4 * (np.arange(top, top + tile)[:, None] + np.arange(across * tile)[None, :]) / (2 * side)
        band = (band * shade[..., None]).astype(np.uint8)
        for left in range(0, across * tile, tile):
            yield band[:, left:left + tile].copy()  # tifffile may hold a few tiles while the next are made


def write_tiff(path: Path, side: int, pattern: np.ndarray, tile: int = 256) -> None:
    """A side x side tiled RGB BigTIFF written tile row by tile row (never the whole image in memory)."""
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        writer.write(pattern_tiles(pattern, side, tile), shape=(side, side, 3), dtype=np.uint8, tile=(tile, tile),
                     photometric="rgb", planarconfig="contig", metadata=None,
                     buffersize=tile * math.ceil(side / tile) * tile * 3)


def check_output(path: Path, side: int) -> str:
    """Words on the output TIFF: its shape, and a few of its tiles decoded alone (a corner, the centre, the
    opposite corner) to show it is readable and not constant, without reading the whole image."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        if page.shape[:2] != (side, side):
            return f"WRONG: shape {page.shape}"
        if not page.is_tiled:  # translated whole (it fitted the memory budget): small enough to read whole
            pixels = page.asarray()
            return f"{side}x{side} {page.dtype}, not tiled: mean {pixels.mean():.0f} std {pixels.std():.1f}"
        across = math.ceil(side / page.tilewidth)
        found = []
        for y, x in ((0, 0), (side // 2, side // 2), (side - 1, side - 1)):
            index = (y // page.tilelength) * across + x // page.tilewidth
            tiff.filehandle.seek(page.dataoffsets[index])
            data = tiff.filehandle.read(page.databytecounts[index])
            pixels = page.decode(data, index, jpegtables=page.jpegtables)[0]
            pixels = pixels.reshape(page.tilelength, page.tilewidth, -1)  # edge tiles: only the image's part
            pixels = pixels[:side - y + y % page.tilelength, :side - x + x % page.tilewidth]
            found.append(f"({x},{y}): mean {pixels.mean():.0f} std {pixels.std():.1f}")
    return f"{side}x{side}x{page.shape[2]} {page.dtype}, tiles {page.tilewidth}; " + "; ".join(found)


def translate_child(generator: Path, tiff: Path, out: Path, args: argparse.Namespace) -> tuple[int, float, int]:
    """Run `i2i translate` on one file in a child process: its exit status, wall seconds and peak RSS (KiB)."""
    command = [sys.executable, "-m", "i2i", "translate", str(generator), str(tiff), "--out", str(out),
               "--device", args.device, "--batch-size", str(args.batch_size)]
    if args.scale_tile is not None:
        command += ["--tile", str(args.scale_tile)]
    print("  $ i2i " + " ".join(command[3:]), flush=True)
    start = time.perf_counter()
    child = subprocess.Popen(command)
    # wait4 rather than Popen.wait: it hands back this child's own resource usage, ru_maxrss its peak RSS
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
    return child.returncode, seconds, usage.ru_maxrss


def scale(args: argparse.Namespace, pattern: np.ndarray) -> None:
    """Translate --scale-sizes TIFFs through `i2i translate` and report its peak memory and speed."""
    runs = [(side, "quick start generator (resnet, 3 blocks x 16)", QUICK_START)
            for side in args.scale_sizes[:1] if side]
    runs += [(side, "paper's ResNet-9 (9 blocks x 64)", None) for side in args.scale_sizes[1:2] if side]
    work = Path(tempfile.mkdtemp(prefix="large_images_", dir=args.scratch))
    print(f"\nscale: i2i translate in a child process, files in {work}\n")
    lines = []
    for side, what, options in runs:
        if options is None and args.weights:
            generator = Path(args.weights)
        else:
            options = options or {"blocks": 9, "channels": 64}
            torch.manual_seed(args.seed)
            generator = save_generator(create("generator", "resnet", **options), options,
                                       work / f"resnet_{options['blocks']}x{options['channels']}.safetensors")
        tiff = work / f"input_{side}.tif"
        start = time.perf_counter()
        write_tiff(tiff, side, pattern)
        print(f"  wrote {tiff.name} ({tiff.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
        code, seconds, peak = translate_child(generator, tiff, work / f"out_{side}", args)
        output = work / f"out_{side}" / tiff.name
        check = check_output(output, side) if code == 0 and output.exists() else f"FAILED (exit status {code})"
        peak_mib = peak / 1024
        lines.append(f"| {side}x{side} | {what} | {peak_mib:.0f} | {'yes' if peak_mib <= ACCEPT_RSS_MIB else 'NO'} |"
                     f" {seconds:.0f} | {side * side / seconds / 1e6:.3f} | {check} |")
        print(lines[-1], flush=True)
        for file in (tiff, output):  # 1.2 GB each at 20000 px: free the disk before the next run
            file.unlink(missing_ok=True)
    print(f"\n| image | generator | peak RSS MiB | <= {ACCEPT_RSS_MIB} MiB | wall s | Mpx/s | output |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(this script's own peak RSS, writing the inputs band by band: {own:.0f} MiB)")




def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="fidelity,seams,picture,throughput",
                        help=f"comma-separated parts, of {', '.join(PARTS)}")
    parser.add_argument("--scale", action="store_true", help="also run the scale part")
    parser.add_argument("--size", type=int, default=2048, help="side of the default mosaic image")
    parser.add_argument("--image", help="image to translate instead of the mosaic")
    parser.add_argument("--weights", help="generator .safetensors or run folder (default: seeded random init)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blocks", type=int, default=9, help="of the random-init resnet (9 as in the paper)")
    parser.add_argument("--channels", type=int, default=64, help="of the random-init resnet (64 as in the paper)")
    parser.add_argument("--tile", type=int, default=512, help="tile side of the fidelity and seam modes")
    parser.add_argument("--overlaps", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--blends", nargs="+", default=list(BLENDS), choices=BLENDS)
    parser.add_argument("--norm-stats", nargs="+", default=["tile", "image", "thumbnail", "sample"],
                        choices=NORM_STATS)
    parser.add_argument("--stats-sides", type=int, nargs="+", default=[1024, 512],
                        help="sides of the pictures thumbnail and sample statistics come from")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles translated together")
    parser.add_argument("--crop", type=int, default=256, help="side of the picture's crop")
    parser.add_argument("--amplify", type=float, default=10.0, help="of the picture's difference maps")
    parser.add_argument("--picture", default=str(ROOT / "docs" / "large_images.png"))
    parser.add_argument("--throughput-tiles", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=2, help="throughput runs of each (best is kept)")
    parser.add_argument("--scale-sizes", type=int, nargs="+", default=[20000, 8192],
                        help="sides of the scale TIFFs: the quick start generator's, the ResNet-9's (0 skips)")
    parser.add_argument("--scale-tile", type=int, help="--tile for i2i translate (default: the memory budget picks)")
    parser.add_argument("--scratch", help="folder for the scale part's files (default: the system's temp folder)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.parts = {p.strip() for p in args.only.split(",") if p.strip()} | ({"scale"} if args.scale else set())
    unknown = args.parts - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}")
    return args


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}; parts: {', '.join(sorted(args.parts))}")
    image = None
    if args.parts & {"fidelity", "seams", "picture", "throughput"}:
        generator, weights = build_generator(args, device)
        image, what = load_image(args)
        print(f"generator: resnet, {weights}\nimage: {what}")
        if args.parts & {"fidelity", "seams", "picture"}:
            if not args.parts & {"fidelity", "seams"}:  # the picture alone: only its modes
                args.overlaps, args.blends, args.stats_sides = args.overlaps[:1], ["cosine"], args.stats_sides[:1]
            print(f"tiles {args.tile} px, overlaps {args.overlaps}, blends {args.blends}, statistics"
                  f" {[label for label, _ in stats_modes(args)]}")
            modes, window = fidelity(generator, image, args, device, want_picture="picture" in args.parts)
            if window is not None:
                picture(modes, window, args, tuple(image.shape[-2:]), generator_words(args))
        if "throughput" in args.parts:
            throughput(generator, image, args, device)
    if "scale" in args.parts:
        pattern = mosaic(2048)[0] if image is None or args.image else \
            to_255(image).round().byte().permute(1, 2, 0).numpy()
        scale(args, pattern)


if __name__ == "__main__":
    main()
