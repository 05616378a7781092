"""`i2i translate`: image files and folders in, translated images out (the input's name, format and size), and an
index.html showing input | output. Finding and running the generator is i2i.tools.generators.

Images keep their full resolution: each is reflect-padded to the generator's `size_multiple`, translated and
cropped back. Images over the tile size (--tile) or the memory budget go through i2i.tools.large instead: in
tiles, TIFFs read and written window by window.
"""

from __future__ import annotations

import html
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from i2i.contract.parts import Generator, declared_sizes
from i2i.data.images import (ARRAY_EXTENSIONS, ARRAY_FORMATS, image_size, list_images, read_array, read_image,
                             write_array)
from i2i.data.values import ValueMap
from i2i.data.windows import WindowSource, is_geotiff, open_windows, streams
from i2i.engine.devices import resolve_device
from i2i.errors import I2IError, OutOfMemory, first_line, is_out_of_memory, out_of_memory, out_of_memory_error
from i2i.storage.atomic import atomic_file
from i2i.tiles.engine import TileInput, choose_tile, tensor_input
from i2i.tiles.plan import Tiling, check_tile_side
from i2i.tools.generators import (generator_file, generator_values, in_channels, load_generator, prepare_image,
                                  round_to, run_generator, takes_gray, to_image, to_tensor, weights_note)
from i2i.tools.large import THUMBNAILS_DIR, source_input, translate_large

__all__ = ["TranslateResult", "load_generator", "output_format", "translate", "write_index"]

# Output format by input extension: the name (extension included) stays the input's, the encoding fits it.
_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95}),
    ".jpeg": ("JPEG", {"quality": 95}),
    ".bmp": ("BMP", {}),
    ".tif": ("TIFF", {}),
    ".tiff": ("TIFF", {}),
    ".webp": ("WEBP", {"lossless": True}),
    ".ppm": ("PPM", {}),
}
#: --format of translate: the suffix outputs then get
_FORMAT_SUFFIXES = {"png": ".png", "tiff": ".tif", "npy": ".npy", "jpeg": ".jpg"}
_PENDING_BATCHES = 4  # decoded images waiting for a full batch are capped at this many batches' worth


@dataclass
class TranslateResult:
    """What `translate` did: (input, output) pairs written, (input, reason) pairs skipped, and where."""

    out: Path
    index: Path
    written: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    weights: str = ""  # which weights translated, e.g. "EMA weights (G_A.ema)" (see generators.weights_note)
    notes: list[str] = field(default_factory=list)  # e.g. which images were tiled because of the memory budget
    thumbnails: dict[Path, tuple[Path, Path]] = field(default_factory=dict)  # input: its and its output's pictures


# ---------------------------------------------------------------------------------------------------------
# Inputs and output names


@dataclass
class _Job:
    source: Path
    target: Path  # relative to the output folder


def output_format(path: Path) -> tuple[Path, str, dict[str, Any]]:
    """The output name and PIL format for an input name: same name and format, JPEG at quality 95.

    Extensions without an RGB writer here (.pgm is gray only; a file named with another extension) become .png.
    """
    known = _FORMATS.get(path.suffix.lower())
    if known is None:
        return path.with_suffix(".png"), "PNG", {}
    return path, known[0], known[1]


def _jobs(inputs: list[Path | str], out: Path, arrays: bool = False, fmt: str | None = None) -> list[_Job]:
    """Every input image with its output name; folders keep their relative subpaths; names never collide.

    `arrays`: inputs of any depth and channels (.npy too) keep their extension; `fmt` replaces it.
    """
    if not inputs:
        raise I2IError("no inputs: pass image files or folders of images")
    out_real = Path(os.path.realpath(out))
    jobs: list[_Job] = []
    seen_sources: set[Path] = set()
    for given in map(lambda p: Path(p).expanduser(), inputs):
        if not given.exists():
            raise I2IError(f"input {given} does not exist: pass image files or folders of images")
        if given.is_dir():
            if Path(os.path.realpath(given)) == out_real:
                raise I2IError(f"--out {out} is the input folder {given}: the outputs (same names) would replace"
                               " the inputs; choose another --out folder")
            # Earlier outputs in an --out folder inside the input folder are not inputs.
            extensions = ARRAY_EXTENSIONS if arrays else None
            found = [p for p in list_images(given, **({"extensions": extensions} if arrays else {}))
                     if not _inside(p, out_real)]
            if not found:
                warnings.warn(f"{given} has no images (looked for common image extensions, also in subfolders)",
                              stacklevel=3)
            pairs = [(p, p.relative_to(given)) for p in found]
        else:
            pairs = [(given, Path(given.name))]
        for source, relative in pairs:
            real = Path(os.path.realpath(source))
            if real in seen_sources:  # the same file given twice (e.g. a file and its folder) is done once
                continue
            seen_sources.add(real)
            if fmt is not None:
                target = relative.with_suffix(_FORMAT_SUFFIXES[fmt])
            else:
                target = relative if arrays else output_format(relative)[0]
            jobs.append(_Job(source, target))
    _disambiguate(jobs)
    for job in jobs:
        if Path(os.path.realpath(out / job.target)) in seen_sources:
            raise I2IError(f"the output for {job.source} would replace an input ({out / job.target}): choose an"
                           " --out folder that holds no inputs")
    return jobs


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(folder)


def _disambiguate(jobs: list[_Job]) -> None:
    """Rename later outputs that would overwrite an earlier one (e.g. a/1.png and b/1.png) to 1-2.png, ..."""
    # Compared case-folded: on macOS and Windows X.png and x.png are the same file.
    taken = {job.target.as_posix().casefold() for job in jobs}
    used: dict[str, Path] = {}
    for job in jobs:
        key = job.target.as_posix().casefold()
        if key not in used:
            used[key] = job.source
            continue
        n = 2
        while (candidate := job.target.with_stem(f"{job.target.stem}-{n}")).as_posix().casefold() in taken:
            n += 1
        warnings.warn(f"{job.source} and {used[key]} would both be written as {job.target}; writing"
                      f" {job.source} as {candidate}", stacklevel=4)
        taken.add(candidate.as_posix().casefold())
        used[candidate.as_posix().casefold()] = job.source
        job.target = candidate


# ---------------------------------------------------------------------------------------------------------
# Translating


def translate(checkpoint: Path | str, inputs: list[Path | str], out: Path | str, direction: str = "AtoB",
              size: int | None = None, batch_size: int = 1, device: str = "auto",
              on_progress: Callable[[int, int], None] | None = None, *, raw: bool = False,
              which: str | None = None, fmt: str | None = None, tiling: Tiling | None = None,
              on_tiles: Callable[[str, int, int], None] | None = None,
              on_note: Callable[[str], None] | None = None) -> TranslateResult:
    """Translate image files and folders of images into `out` with the generator CHECKPOINT holds.

    Outputs keep each input's name (and its subpath inside a folder input) and, by default, its size. With
    `size`, images are scaled so the shorter side is `size` (rounded to the generator's size multiple) and
    outputs have that size. Undecodable images are skipped with a warning; running out of memory is not a skip but
    an OutOfMemory error naming the image, its size and what to change. `on_progress(done, total)` is
    called as images finish. An index.html in `out` shows every input beside its output. The weights variant a
    checkpoint's callbacks declared for inference (e.g. an EMA average) translates when it has one, unless `raw`.
    `which` picks a run folder's checkpoint ("latest", "best", "step-N").

    A generator trained on data other than 8-bit RGB (its file records the run's value mapping) reads each input
    in its own depth and channels (.npy too) and writes the output in the input's dtype and format, through the
    inverse of the same mapping. `fmt` ("png", "tiff", "npy", "jpeg") picks another output format.

    Images larger than `tiling.tile` (default: those over the memory budget) are translated in tiles, blended
    without seams and with the whole image's instance-norm statistics (see i2i.tiles); TIFFs are then read and
    written window by window, GeoTIFFs keeping their georeference. `on_tiles(name, done, total)` follows their
    tiles; `on_note(text)` gets one line per image the budget made tiled (also kept in `result.notes`).
    """
    if fmt is not None and fmt not in _FORMAT_SUFFIXES:
        raise I2IError(f"--format {fmt!r} is not one of {', '.join(_FORMAT_SUFFIXES)}")
    if size is not None and size < 1:
        raise I2IError(f"--size {size} must be at least 1")
    if batch_size < 1:
        raise I2IError(f"--batch-size {batch_size} must be at least 1")
    tiling = replace(tiling or Tiling(), batch_size=batch_size).check()
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise I2IError(f"--out {out} is a file: pass a folder for the translated images")
    file = generator_file(checkpoint, direction, raw=raw, which=which)
    target_device = resolve_device(device, "--device")
    generator = load_generator(file, direction, target_device)
    values = generator_values(file)
    jobs = _jobs(inputs, out, arrays=values is not None, fmt=fmt)
    if not jobs:
        raise I2IError(f"no images found in {', '.join(map(str, inputs))}")
    gray = takes_gray(generator) if values is None else False
    if tiling.tile:  # a tile side the generator cannot take is refused before any image is read
        check_tile_side(tiling.tile, *declared_sizes(generator), tiling.overlap)
    dtypes: dict[Path, Any] = {}  # array inputs: their dtype, which their outputs keep
    multiple = max(1, generator.size_multiple)
    result = TranslateResult(out=out, index=out / "index.html", weights=weights_note([file], raw))
    out.mkdir(parents=True, exist_ok=True)
    done = 0
    pending: dict[tuple[int, int], list[tuple[_Job, Tensor]]] = {}

    def memory_fixes(tile: int | None = None) -> str:
        return _memory_fixes(tiling, batch_size, multiple, tile)

    def flush(key: tuple[int, int]) -> None:
        nonlocal done
        group = pending.pop(key)
        try:
            translated = run_generator(generator, torch.stack([t for _, t in group]))
        except (RuntimeError, ValueError) as exc:
            if is_out_of_memory(exc):  # the same flags would fail again: stop with what to change
                doing = f"translating {_names([job.source for job, _ in group])} ({key[1]}x{key[0]} px) on" \
                        f" {target_device}"
                raise out_of_memory_error(exc, doing, memory_fixes()) from exc
            # Typically an image too small for the generator's padding after its downsamplings.
            reason = f"cannot translate a {key[1]}x{key[0]} image: {first_line(exc)}"
            for job, _ in group:
                warnings.warn(f"skipping {job.source}: {reason}", stacklevel=3)
                result.skipped.append((job.source, reason))
        else:
            for (job, _), tensor in zip(group, translated):
                target = out / job.target
                try:
                    _write_output(target, tensor, values, dtypes.get(job.source))
                except I2IError as exc:
                    warnings.warn(f"skipping {job.source}: {exc}", stacklevel=3)
                    result.skipped.append((job.source, str(exc)))
                    continue
                result.written.append((job.source, target))
        done += len(group)
        if on_progress:
            on_progress(done, len(jobs))

    def skip(job: _Job, exc: I2IError) -> None:
        nonlocal done
        if isinstance(exc, OutOfMemory):
            raise exc
        warnings.warn(f"{exc}; skipped it", stacklevel=3)
        result.skipped.append((job.source, str(exc).removeprefix(f"cannot read image {job.source}: ")))
        done += 1
        if on_progress:
            on_progress(done, len(jobs))

    def note(text: str) -> None:
        result.notes.append(text)
        if on_note is not None:
            on_note(text)

    def large(job: _Job, image: TileInput, tile: int, source: WindowSource | None = None) -> None:
        """Translate one image in tiles straight to its output; a failure skips it as any unreadable image."""
        nonlocal done
        target = out / job.target
        progress = (lambda d, t: on_tiles(str(job.source), d, t)) if on_tiles is not None else None
        try:
            with out_of_memory(f"translating {job.source} ({image.width}x{image.height} px) in {tile} px tiles on"
                               f" {target_device}", memory_fixes(tile)):
                written = translate_large(generator, image, target, tiling, tile, values=values,
                                          dtype=dtypes.get(job.source, source.dtype if source else None),
                                          source=source, thumbnails=out / THUMBNAILS_DIR / job.target,
                                          on_progress=progress)
        except OutOfMemory:
            raise  # not a skip: the next image of that size would fail the same way
        except I2IError as exc:
            warnings.warn(f"skipping {job.source}: {exc}", stacklevel=3)
            result.skipped.append((job.source, str(exc)))
        else:
            result.written.append((job.source, target))
            if written.thumbnails is not None:
                result.thumbnails[job.source] = written.thumbnails
        done += 1
        if on_progress:
            on_progress(done, len(jobs))

    if on_progress:
        on_progress(0, len(jobs))
    for job in jobs:
        if size is None and (source := _streamed(job.source)) is not None:
            # a TIFF read window by window: its size decides before anything is decoded
            with source:
                tile, why = choose_tile(generator, tiling, source.height, source.width, in_channels(generator),
                                        target_device)
                if tile is not None or source.geo is not None:
                    try:
                        image = source_input(source, values, generator)
                    except I2IError as exc:
                        skip(job, exc)
                        continue
                    if why:
                        note(f"{job.source}: {why}")
                    large(job, image, tile or max(source.height, source.width) + generator.size_multiple, source)
                    continue
            # small enough to translate whole: read as before (a float or signed TIFF is rescaled as read_image does)
        try:
            with out_of_memory(lambda: _reading(job.source, target_device), memory_fixes):
                if values is None:
                    image = read_image(job.source)
                    tensor = to_tensor(prepare_image(image.convert("L") if gray else image, size, multiple))
                else:
                    array = read_array(job.source)
                    tensor = _array_input(array, values, generator, size, multiple, job.source)
                    dtypes[job.source] = array.dtype
        except I2IError as exc:
            skip(job, exc)
            continue
        tile, why = choose_tile(generator, tiling, tensor.shape[1], tensor.shape[2], tensor.shape[0], target_device)
        if tile is not None:
            if why:
                note(f"{job.source}: {why}")
            large(job, tensor_input(tensor), tile)
            continue
        key = (tensor.shape[1], tensor.shape[2])
        pending.setdefault(key, []).append((job, tensor))
        if len(pending[key]) >= batch_size:
            flush(key)
        elif sum(map(len, pending.values())) >= batch_size * _PENDING_BATCHES:
            # Many different sizes: translate the oldest group now rather than hold every image in memory.
            flush(next(iter(pending)))
    for key in list(pending):
        flush(key)
    # Batching by size finishes images out of order; the page and the result list them as given.
    order = {job.source: i for i, job in enumerate(jobs)}
    result.written.sort(key=lambda pair: order[pair[0]])
    result.skipped.sort(key=lambda pair: order[pair[0]])
    write_index(result)
    return result


def _names(sources: list[Path]) -> str:
    """The first of a batch of inputs, and how many more there were."""
    return str(sources[0]) + (f" and {len(sources) - 1} more image{'s' * (len(sources) > 2)} of that size"
                              if len(sources) > 1 else "")


def _reading(source: Path, device: torch.device) -> str:
    """What was being done when reading `source` ran out of memory, with its size from the file's header."""
    size = image_size(source)
    return f"reading {source}" + (f" ({size[0]}x{size[1]} px)" if size else "") + f" for {device}"


def _memory_fixes(tiling: Tiling, batch_size: int, multiple: int, tile: int | None = None) -> str:
    """What shrinks the memory translating an image needs: tiles (smaller ones, on the generator's size `multiple`,
    when it was tiled with `tile`), --size, --batch-size, --device."""
    if tile:
        tiles = f"smaller tiles than {tile} px (--tile {max(multiple, tile // 2 // multiple * multiple)})"
    elif tiling.tile == 0:
        tiles = "tiles instead of whole (--tile 512 rather than --tile 0)"
    else:
        tiles = "tiles (--tile 512, or a smaller --memory-budget GB)"
    batches = f"; a smaller --batch-size than {batch_size}" if batch_size > 1 else ""
    return f"translate it in {tiles}; scale it down first (--size N){batches}; or use a device with more memory" \
           " (--device)"


def _streamed(path: Path) -> WindowSource | None:
    """A window reader for a TIFF that can be read by window (or a GeoTIFF), else None (read whole as before)."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        if not (streams(path) or is_geotiff(path)):
            return None
        return open_windows(path)
    except I2IError:
        return None  # the whole-image reader says what is wrong with it, and the image is skipped


def _array_input(array: Any, values: ValueMap, generator: Generator, size: int | None, multiple: int,
                 source: Path) -> Tensor:
    """An (H, W, C) array input as the (C, H, W) tensor the generator takes: mapped to [-1, 1] as in training,
    scaled to `size` (bicubic, antialiased) when given; an I2IError when its channels are not the generator's."""
    channels = in_channels(generator)
    if array.shape[2] != channels:
        raise I2IError(f"{source} has {array.shape[2]} channel{'s' * (array.shape[2] != 1)} but the generator takes"
                       f" {channels}")
    tensor = values.to_network(array, "A")
    if size is not None:
        h, w = tensor.shape[1:]
        scale = round_to(size, multiple) / min(w, h)
        shape = (round_to(h * scale, multiple), round_to(w * scale, multiple))
        tensor = F.interpolate(tensor[None], size=shape, mode="bicubic", align_corners=False,
                               antialias=True)[0].clamp_(-1, 1)
    return tensor


def _write_output(target: Path, tensor: Tensor, values: ValueMap | None, dtype: Any) -> None:
    """Write one translated (C, H, W) tensor to `target` in the format its suffix names: through the inverse value
    mapping into the target domain's dtype (as its training files held it; else `dtype`, the input's) for array
    inputs, as an 8-bit image otherwise. Nothing is left at `target` on failure."""
    suffix = target.suffix.lower()
    if values is None and suffix != ".npy":
        _, pil_format, params = output_format(target)
        with atomic_file(target) as f:
            to_image(tensor).save(f, format=pil_format, **params)
        return
    if values is None:  # --format npy of an RGB generator: the 8-bit image as an (H, W, C) array
        array = np.asarray(to_image(tensor)).reshape(tensor.shape[1], tensor.shape[2], -1)
    else:
        array = values.from_network(tensor, "B", values.output_dtype("B", dtype))
    fmt = ARRAY_FORMATS.get(suffix, "png")
    with atomic_file(target) as f:
        write_array(f, array, fmt)


# ---------------------------------------------------------------------------------------------------------
# index.html

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#222}
main{max-width:1280px;margin:0 auto;padding:1.5rem}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #e2e4e8;padding:.4rem;vertical-align:top}
th{background:#f0f1f4}td.name{font-size:.85rem;max-width:18rem;word-break:break-all}
img{display:block;max-width:100%;height:auto}img.small{image-rendering:pixelated}
.size{color:#666;font-size:.8rem}
"""


def _href(target: Path, base: Path) -> str:
    """A relative URL from folder `base` to `target`, so the page keeps working when both move together."""
    try:
        relative = Path(os.path.relpath(os.path.realpath(target), os.path.realpath(base)))
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(os.path.realpath(target)).as_uri()
    return "/".join(quote(part) for part in relative.parts)


def _cell(path: Path, base: Path, picture: Path | None = None) -> str:
    """A table cell showing the image at `path` (through `picture`, a thumbnail, for those a browser cannot show)."""
    href = html.escape(_href(path, base), quote=True)
    if picture is not None:
        size = image_size(path)
        label = f'<span class="size">{size[0]}x{size[1]}</span>' if size else ""
        return (f'<td><a href="{href}"><img src="{html.escape(_href(picture, base), quote=True)}" loading="lazy"'
                f' style="width:320px" alt="thumbnail of {html.escape(path.name)}"></a>{label}</td>')
    size = image_size(path)
    if size is None:
        return f'<td><a href="{href}">{html.escape(path.name)}</a></td>'
    w, h = size
    # Upscale small images (pixelated) so a 32 px image is visible; larger ones fit in 320 px.
    longest = max(w, h, 1)
    width = max(1, round(w * min(320, max(longest, 128)) / longest))
    small = ' class="small"' if width > w else ""
    return (f'<td><a href="{href}"><img{small} src="{href}" loading="lazy" style="width:{width}px" alt=""></a>'
            f'<span class="size">{w}x{h}</span></td>')


def write_index(result: TranslateResult) -> Path:
    """Write `result.index`: a table of input | output images and the list of skipped inputs."""
    base = result.out
    rows = "\n".join(
        f'<tr><td class="name">{html.escape(str(source))}<br>&rarr; {html.escape(target.relative_to(base).as_posix())}'
        f"</td>{_cell(source, base, result.thumbnails.get(source, (None, None))[0])}"
        f"{_cell(target, base, result.thumbnails.get(source, (None, None))[1])}</tr>"
        for source, target in result.written)
    parts = [f"<h1>Translated images ({len(result.written)})</h1>"]
    if rows:
        parts.append(f"<table><tr><th>file</th><th>input</th><th>output</th></tr>\n{rows}\n</table>")
    if result.skipped:
        items = "\n".join(f"<li>{html.escape(str(source))}: {html.escape(reason)}</li>"
                          for source, reason in result.skipped)
        parts.append(f"<h2>Skipped ({len(result.skipped)})</h2><ul>\n{items}\n</ul>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>i2i translate: {html.escape(str(base))}</title><style>{_CSS}</style></head>\n"
            "<body><main>\n" + "\n".join(parts) + "\n</main></body></html>\n")
    with atomic_file(result.index) as f:
        f.write(page.encode("utf-8"))
    return result.index
