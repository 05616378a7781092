"""Exporting a trained generator to ONNX or TorchScript, checked against the original module on the way out.

ONNX goes through the torch.export-based exporter (`torch.onnx.export(..., dynamo=True)`, which needs onnx and
onnxscript) at opset `OPSET`; TorchScript through `torch.jit.trace`. The file is written beside `out` under a
temporary name, loaded back (onnxruntime; torch.jit.load) and run on the parity inputs; only if every output is
within `tolerance` of the module's own does it get its name. A failed check leaves nothing at `out`.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2i.storage.atomic import atomic_path
from i2i.errors import I2IError, first_line, is_out_of_memory, out_of_memory
from i2i.storage.rundir import RunFolder

__all__ = ["FORMATS", "OPSET", "TOLERANCE", "ExportReport", "ParityError", "export_generator", "export_module",
           "parity_inputs"]

FORMATS = ("onnx", "torchscript")
# Generator outputs lie in [-1, 1] (tanh); fp32 reorderings in another runtime move them by ~1e-6, while an export
# that lost something (a frozen branch, a wrong layer) moves them by 1e-3 or more.
TOLERANCE = 1e-4
# The opset the exporter's torchlib implements natively (no version conversion); onnxruntime >= 1.14 runs it.
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "output"
INSTALL_HINT = 'pip install "i2i-toolkit[export]"'
_REAL_IMAGES = 3
_DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


@dataclass
class ExportReport:
    """What `export_module` wrote and how far the exported file's outputs are from the module's."""

    out: Path
    format: str
    input_shape: tuple[int, ...]  # the example the file was traced or exported with
    dynamic: bool
    tolerance: float
    differences: dict[str, float]  # max abs difference per parity input, labelled with its shape
    runtime: str  # what ran the exported file in the check
    opset: int | None = None
    generator: str = ""  # the part name, when exported from an i2i generator
    direction: str | None = None  # None for a generator file outside a run, which translates one way only
    notes: list[str] = field(default_factory=list)

    @property
    def max_difference(self) -> float:
        """The largest difference over all parity inputs."""
        return max(self.differences.values(), default=0.0)


class ParityError(I2IError):
    """The exported file's outputs differ from the module's by more than the tolerance."""

    def __init__(self, message: str, differences: dict[str, float]) -> None:
        super().__init__(message)
        self.differences = differences


# ---------------------------------------------------------------------------------------------------------
# From a checkpoint


def export_generator(checkpoint: Path | str, fmt: str, out: Path | str, direction: str = "AtoB",
                     size: int | None = None, dynamic: bool = False, tolerance: float = TOLERANCE, *,
                     raw: bool = False, which: str | None = None) -> ExportReport:
    """Export the generator CHECKPOINT holds for `direction` to `out` (ONNX or TorchScript), parity-checked.

    CHECKPOINT is what `i2i translate` takes: a run, a checkpoint folder or a generator .safetensors file (also
    one from `i2i convert`); the weights variant its callbacks declared for inference (e.g. an EMA average) when
    it has one, unless `raw`. `size` defaults to
    the run's crop size (256 without a run). Held-out images of the run's data, when they load, join the random
    and synthetic parity inputs. `which` picks a run folder's checkpoint ("latest", "best", "step-N").
    """
    from i2i.tools.generators import generator_file, load_generator, weights_note

    fmt = _check_format(fmt)
    if fmt == "onnx":
        _require_onnx()  # before the generator and the held-out images are loaded
    file = generator_file(checkpoint, direction, raw=raw, which=which)
    generator = load_generator(checkpoint, direction, "cpu", raw=raw, which=which)
    run = _run_folder(file)
    if run is not None:
        direction = _file_direction(file) or direction  # a G_B.safetensors passed as CHECKPOINT translates BtoA
    weights = weights_note([file], raw)
    notes: list[str] = [f"exported the {weights}"] if weights else []
    real = _held_out(run, direction, notes) if run is not None else None
    if size is None:
        size = _round_up((_crop_size(run) if run is not None else None) or 256, _size_multiple(generator))
    name = getattr(generator, "name", "") or type(generator).__name__
    with out_of_memory(f"exporting generator {name} at {size}x{size} px on the cpu",
                       "export at a smaller --size N (a file exported with --dynamic then takes any size; TorchScript"
                       " files take other sizes too)"):
        report = export_module(generator, fmt, out, size=size, dynamic=dynamic, tolerance=tolerance, real=real)
    report.generator = name
    report.direction = direction if run is not None or not file.samefile(Path(checkpoint).expanduser()) else None
    if run is None:
        notes.append("no run folder holds this generator, so no held-out images were checked (random and"
                     " synthetic inputs only)")
    report.notes[:0] = notes
    return report


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise I2IError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _size_multiple(module: nn.Module) -> int:
    """What the sides of the module's inputs must divide by (a Generator's `size_multiple`; 1 if it has none)."""
    return max(1, int(getattr(module, "size_multiple", 1)))


def _run_folder(file: Path) -> Path | None:
    """The run folder a generator file sits in (RUN/checkpoints/step-N/G.safetensors), or None."""
    run = RunFolder.containing(file.parent)
    return run.path if run is not None else None


def _file_direction(file: Path) -> str | None:
    """The direction a checkpoint folder's training.json gives the generator `file` (or its variant, e.g. G_B.ema),
    if it names it for one direction only."""
    try:
        generators = RunFolder.read_state(file.parent).get("generators")
    except I2IError:
        return None
    if isinstance(generators, dict):
        named = [d for d, stem in generators.items() if stem == file.stem.partition(".")[0]]
        # a network serving several directions (conditioned on the target) translates the way it was asked
        return named[0] if len(named) == 1 else None
    return None


def _held_out(run: Path, direction: str, notes: list[str]) -> Tensor | None:
    """Up to a few held-out images of the run's source domain for `direction`, (N, C, H, W) in [-1, 1]."""
    from i2i.tools.rundata import held_out_items

    try:
        items = held_out_items(run, _REAL_IMAGES)[0]
        if "image" in items:  # N-domain data: a conditioned generator takes images of any domain
            return items["image"]
        domain = {"AtoB": "A", "BtoA": "B"}.get(direction)
        if domain is None:
            raise I2IError(f"direction {direction!r} names no source domain")
        return items[domain]
    except Exception as exc:  # the check goes on without them: the data may be elsewhere now, or gone
        notes.append(f"no held-out images of {run} were checked ({first_line(exc)})")
        return None


def _crop_size(run: Path) -> int | None:
    """The run's data.crop_size, if its recipe has one."""
    try:
        crop = RunFolder(run).load_recipe().dataset()[1].get("crop_size")
    except Exception:  # only a default size depends on it
        return None
    return crop if isinstance(crop, int) and crop > 0 else None


# ---------------------------------------------------------------------------------------------------------
# Any module


def export_module(module: nn.Module, fmt: str, out: Path | str, size: int = 256, dynamic: bool = False,
                  tolerance: float = TOLERANCE, real: Tensor | None = None, multiple: int | None = None,
                  channels: int | None = None) -> ExportReport:
    """Export an image-to-image `module` (eval mode, on the CPU) to `out` and check the file against it.

    The example input is 1 x channels x size x size (two images with `dynamic`, whose batch, height and width
    axes stay free in ONNX); `size` must divide by `multiple` (default: the module's `size_multiple`, else 1).
    `real` images (N, C, H, W) are resized to `size` and checked too. With `dynamic`, a batch of two at a second
    size is checked as well. Raises ParityError (and writes nothing) when any output differs by more than
    `tolerance`.
    """
    fmt = _check_format(fmt)
    out = Path(out).expanduser()
    if out.is_dir():
        raise I2IError(f"--out {out} is a folder: pass a file name, e.g. {out / ('generator' + _suffix(fmt))}")
    multiple = multiple or _size_multiple(module)
    if size < 1 or size % multiple:
        raise I2IError(f"--size {size} must be a positive multiple of {multiple}, the generator's size multiple:"
                       f" e.g. {_round_up(max(size, 1), multiple)}")
    if not tolerance >= 0:
        raise I2IError(f"--tolerance {tolerance} must be 0 or more")
    if fmt == "onnx":
        _require_onnx()
    module = module.cpu().eval()
    from i2i.tools.generators import in_channels

    channels = channels or in_channels(module)
    notes: list[str] = []
    inputs = parity_inputs(channels, size, real=real, dynamic=dynamic, multiple=multiple, notes=notes)
    example = next(iter(inputs.values()))
    if dynamic and fmt == "onnx":
        # A batch of one would be specialised to 1 by torch.export; two keeps the batch axis free.
        example = torch.cat([example, example.flip(-1)])
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            _export_onnx(module, example, tmp, dynamic)
            run, runtime = _onnx_runner(tmp), "onnxruntime"
        else:
            _export_torchscript(module, example, tmp)
            run, runtime = _torchscript_runner(tmp), "torch.jit.load"
        differences = _parity(module, run, inputs)
        worst = max(differences, key=differences.__getitem__)
        if not differences[worst] <= tolerance:
            raise ParityError(
                f"parity check failed: the exported {fmt} file's output differs from the generator's by up to"
                f" {differences[worst]:.3g} (on {worst}), above the tolerance {tolerance:.3g}; nothing was written"
                f" to {out} (--tolerance sets the limit)", differences)
    return ExportReport(out=out, format=fmt, input_shape=tuple(example.shape), dynamic=dynamic, tolerance=tolerance,
                        differences=differences, runtime=runtime, opset=OPSET if fmt == "onnx" else None,
                        notes=notes)


def _suffix(fmt: str) -> str:
    return ".onnx" if fmt == "onnx" else ".pt"


def smooth_image(channels: int, height: int, width: int) -> Tensor:
    """A (1, C, H, W) image of smooth waves in [-0.3, 0.9], mean about 0.3: no noise, like a photo's large areas."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    waves = [0.3 + 0.6 * torch.sin(2 * math.pi * ((c % 3 + 1) * x + (c % 2 + 0.5) * y) + c) for c in range(channels)]
    return torch.stack(waves)[None]


def parity_inputs(channels: int, size: int, real: Tensor | None = None, dynamic: bool = False, multiple: int = 1,
                  notes: list[str] | None = None) -> dict[str, Tensor]:
    """The inputs both the module and the exported file translate, by label (which names their shape)."""
    generator = torch.Generator().manual_seed(0)
    smooth = smooth_image(channels, size, size)

    def shape(t: Tensor) -> str:
        return "x".join(map(str, t.shape))

    noise = torch.rand(1, channels, size, size, generator=generator) * 2 - 1
    # The smooth image and its negative are a bright and a dark input: a branch on brightness that tracing froze
    # goes wrong on one of them.
    inputs = {f"uniform noise {shape(noise)}": noise, f"smooth image {shape(smooth)}": smooth,
              f"negative smooth image {shape(smooth)}": -smooth}
    if real is not None and real.shape[1] != channels:
        if notes is not None:
            notes.append(f"the held-out images have {real.shape[1]} channels, the generator takes {channels}: not"
                         " checked")
        real = None
    for i, image in enumerate(real if real is not None else []):
        image = image[None].float()
        if tuple(image.shape[-2:]) != (size, size):
            image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=True).clamp(-1, 1)
        inputs[f"held-out image {i + 1} {shape(image)}"] = image
    if dynamic:
        step = max(1, multiple)
        other = torch.rand(2, channels, size + step, size + 2 * step, generator=generator) * 2 - 1
        inputs[f"uniform noise {shape(other)}"] = other
    return inputs


def _parity(module: nn.Module, run: Callable[[Tensor], Tensor], inputs: dict[str, Tensor]) -> dict[str, float]:
    """The max abs difference between the module's and the exported file's outputs, per input."""
    differences = {}
    for label, x in inputs.items():
        with torch.no_grad():
            expected = module(x).float()
        try:
            got = run(x).float()
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            raise ParityError(f"parity check failed: the exported file cannot translate the {label} input that the"
                              f" generator translates ({first_line(exc)})", differences) from exc
        if got.shape != expected.shape:
            raise ParityError(f"parity check failed: the exported file gives an output of shape"
                              f" {tuple(got.shape)} for the {label} input, the generator {tuple(expected.shape)}",
                              differences)
        gap = (got - expected).abs()
        gap[got == expected] = 0  # equal infinities
        gap[got.isnan() & expected.isnan()] = 0
        differences[label] = float(gap.nan_to_num(nan=math.inf).max()) if gap.numel() else 0.0
    return differences


# ---------------------------------------------------------------------------------------------------------
# ONNX


def _require_onnx() -> None:
    """Raise one line naming the install command when the ONNX exporter or runtime is missing."""
    missing = []
    for package in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise I2IError(f"exporting to ONNX needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
                       f" not installed: {INSTALL_HINT}")


def _export_onnx(module: nn.Module, example: Tensor, path: Path, dynamic: bool) -> None:
    """Write `module` as an ONNX model at `path` with the torch.export-based exporter."""
    import onnx

    shapes = ({axis: torch.export.Dim.AUTO for axis in _DYNAMIC_AXES},) if dynamic else None
    try:
        # Exporter internals (warnings; pages of graph dumps logged and printed when torch.export fails): the
        # parity check below is what counts, and --debug shows the traceback.
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), None, dynamo=True, opset_version=OPSET,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                                        external_data=False, verbose=False)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise  # the caller says which size to lower
        raise I2IError(f"cannot export the generator to ONNX: {_export_error(exc)} (run with --debug for the"
                       " traceback)") from exc
    model = program.model_proto
    if dynamic:
        _name_axes(model)
    onnx.save_model(model, str(path))


@contextmanager
def _quiet() -> Iterator[None]:
    """No log records below CRITICAL and nothing printed to stderr while the block runs."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        with redirect_stderr(StringIO()):
            yield
    finally:
        logging.disable(previous)


def _export_error(exc: BaseException) -> str:
    """The line of a torch.onnx error that says what failed (its first lines are generic advice)."""
    text = str(exc)
    summary = re.search(r"## Exception summary\s+(.+)", text)
    line = summary.group(1).strip() if summary else first_line(exc)
    return re.sub(r"^<class '[\w.]+'>: ", "", line)


def _name_axes(model: Any) -> None:
    """Rename the exporter's symbols for the free axes (s77, s53, ...) to batch, height and width everywhere."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    names = {dims[axis].dim_param: name for axis, name in _DYNAMIC_AXES.items() if dims[axis].dim_param}
    if not names:
        return
    symbol = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = symbol.sub(lambda m: names[m.group(1)], dim.dim_param)


def _onnx_runner(path: Path) -> Callable[[Tensor], Tensor]:
    """Run the ONNX file at `path` with onnxruntime on the CPU, as a deployment would."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ParityError(f"parity check failed: onnxruntime cannot load the exported file ({first_line(exc)})",
                          {}) from exc
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


# ---------------------------------------------------------------------------------------------------------
# TorchScript


def _export_torchscript(module: nn.Module, example: Tensor, path: Path) -> None:
    """Write `module` traced on `example` as a TorchScript file at `path`."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch.jit's deprecation notices and TracerWarnings: the parity check finds what tracing got wrong.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, str(path))
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise I2IError(f"cannot trace the generator to TorchScript: {first_line(exc)} (run with --debug for the"
                       " traceback)") from exc


def _torchscript_runner(path: Path) -> Callable[[Tensor], Tensor]:
    """Run the TorchScript file at `path` as a deployment would: loaded back with torch.jit.load."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return loaded(x)

    return run
