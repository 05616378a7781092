"""Trained generators: finding one in a run, a checkpoint or a file (and which weights variant to use), rebuilding
it from its file's metadata, and running it on images of any size.

What translate, evaluate, export, compare and demo share; the translate command itself is i2i.tools.translate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from i2i.contract.domains import ConditionedGenerator
from i2i.contract.parts import Generator
from i2i.contract.registry import default_registry
from i2i.data.values import ValueMap
from i2i.engine.checkpoints import generator_file, offered_directions
from i2i.engine.devices import resolve_device
from i2i.errors import I2IError
from i2i.storage.checkpoint import (NAME_KEY, OPTIONS_KEY, KIND_KEY, VALUES_KEY, PartMetadata, load_network,
                                    read_part_metadata)
from i2i.tiles.engine import choose_tile, translate_tensor
from i2i.tiles.plan import Tiling

__all__ = ["generator_file", "generator_values", "load_generator", "pad_to_multiple", "prepare_image",
           "run_generator", "takes_gray", "to_image", "to_tensor", "weights_note"]

_PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl", ".bin")


# ---------------------------------------------------------------------------------------------------------
# Loading a generator


def load_generator(checkpoint: Path | str, direction: str = "AtoB", device: str | torch.device = "cpu", *,
                   raw: bool = False, which: str | None = None) -> Generator:
    """The generator translating in `direction`, in eval mode on `device`, from a run, checkpoint or file.

    CHECKPOINT is a run folder (its newest complete checkpoint is used), a checkpoint folder `step-NNNNNNNN`,
    or one generator `.safetensors` file (e.g. from `i2i convert`), which translates the one way it was
    trained for whatever `direction` says. A checkpoint's weights variant that its callbacks declared for
    inference (e.g. an EMA average) is used when it has one, unless `raw`.
    """
    file = generator_file(checkpoint, direction, raw=raw, which=which)
    meta = _generator_metadata(file)
    registry = default_registry()
    try:
        # a part not installed here is named with the package the file records it came from, and how to install it
        registry.require("generator", meta.name, meta.package, meta.version)
        # The saved weights replace the starting ones, so options that only pick those (a pretrained encoder's
        # file or download) go back to their defaults: the file may be gone, the machine offline.
        options = registry.without_starting_weights("generator", meta.name, meta.options)
        net = registry.create("generator", meta.name, **options)
    except I2IError as exc:
        raise I2IError(f"cannot rebuild the generator saved in {file}: {exc}") from None
    load_network(file, net)
    if meta.domains:  # a generator conditioned on the target domain: bound to the one `direction` names
        net = _bound(net, meta.domains, direction, file)
    target = device if isinstance(device, torch.device) else resolve_device(device, "--device")
    return net.to(target).eval()


def _bound(net: Generator, domains: tuple[str, ...], direction: str, file: Path) -> Generator:
    """`net` conditioned on the target domain of `direction` ("to_<domain>")."""
    target = direction.removeprefix("to_") if direction.startswith("to_") else None
    if target not in domains:
        raise I2IError(f"{file} translates to any of the domains {', '.join(domains)}: pick one with --to DOMAIN")
    return ConditionedGenerator(net, domains.index(target), len(domains))


def pick_direction(checkpoint: Path | str, to: str | None, source: str | None = None, direction: str = "AtoB",
                   which: str | None = None) -> str:
    """The direction translating to domain `to` (from `source`, where the checkpoint's method needs one), or
    `direction` when `to` is None; I2IError naming the domains the checkpoint translates to."""
    if to is None and source is None:
        return direction
    offered = offered_directions(checkpoint, which)
    if not offered:  # a lone generator file translates the one way it was trained
        return direction
    matches = [name for name, (src, dst) in offered.items()
               if (to is None or dst == to) and (source is None or src in (None, source))]
    if not matches:
        targets = sorted({dst for _, dst in offered.values()})
        sources = sorted({src for src, _ in offered.values() if src is not None})
        asked = " ".join(f"--{flag} {value}" for flag, value in (("from", source), ("to", to)) if value is not None)
        raise I2IError(f"{asked}: {checkpoint} translates to {', '.join(targets)}"
                       + (f" (from {', '.join(sources)})" if sources else " (from any of them)")
                       + ": pick one of those")
    return matches[0]


def weights_note(files: list[Path], raw: bool = False) -> str:
    """Which weights generator `files` hold, for users: "EMA weights (G_A.ema)" for a variant's files
    (<network>.<variant>.safetensors, the variant in capitals), "raw weights (G_A)" when those were asked for,
    else ""."""
    stems = ", ".join(file.stem for file in files)
    variants = [variant for file in files if (variant := file.stem.partition(".")[2])]
    if variants:
        return f"{variants[0].upper()} weights ({stems})"
    return f"raw weights ({stems})" if raw else ""


def _generator_metadata(file: Path) -> PartMetadata:
    """The part a generator file records; I2IError naming the fix when it has none or holds another kind."""
    convert_hint = f"convert it with `i2i convert {file} --out {file.with_suffix('.safetensors')}` first"
    if file.suffix.lower() in _PICKLE_SUFFIXES:
        raise I2IError(f"{file} is a PyTorch pickle, not an i2i generator file: {convert_hint}")
    meta = read_part_metadata(file, "generator")
    if meta is None:
        raise I2IError(f"{file} has no i2i metadata ({KIND_KEY}, {NAME_KEY}, {OPTIONS_KEY}), so the network it holds"
                       f" is unknown: if it came from pytorch-CycleGAN-and-pix2pix, {convert_hint}")
    if meta.kind != "generator":
        raise I2IError(f"{file} holds a {meta.kind} ({meta.name}), not a generator")
    return meta


def generator_values(file: Path) -> ValueMap | None:
    """How the generator in `file` maps its input ("A") and output ("B") pixel values to [-1, 1], as training
    recorded it; None for the 8-bit RGB pipeline."""
    text = _generator_metadata(file).values
    if text is None:
        return None
    try:
        return ValueMap.from_json(text)
    except (ValueError, KeyError, TypeError):
        raise I2IError(f"{file} has damaged {VALUES_KEY} metadata: {text!r}") from None


# ---------------------------------------------------------------------------------------------------------
# Running a generator


def round_to(value: float, multiple: int) -> int:
    """`value` rounded to a multiple of `multiple` (at least `multiple`)."""
    return max(multiple, int(round(value / multiple)) * multiple)


def prepare_image(image: Image.Image, size: int | None, multiple: int) -> Image.Image:
    """The image at the size it is translated at: as is, or scaled so its shorter side is `size`."""
    if size is None:
        return image
    w, h = image.size
    scale = round_to(size, multiple) / min(w, h)
    return image.resize((round_to(w * scale, multiple), round_to(h * scale, multiple)), Image.BICUBIC)


def to_tensor(image: Image.Image) -> Tensor:
    """A PIL RGB/L image as a (C, H, W) float tensor in [-1, 1]."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    channels = len(image.getbands())
    tensor = data.view(image.height, image.width, channels).permute(2, 0, 1).float()
    return tensor.div_(127.5).sub_(1.0)


def to_uint8(tensor: Tensor, in_place: bool = False) -> np.ndarray:
    """A (C, H, W) tensor in [-1, 1] as an (H, W, C) uint8 array (`in_place`: a float32 CPU `tensor` may be
    overwritten, sparing a copy of it)."""
    unit = tensor.float() if in_place else tensor.float().clone()
    unit.add_(1).div_(2).nan_to_num_(0.0).clamp_(0, 1)
    return unit.mul_(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


def to_image(tensor: Tensor) -> Image.Image:
    """A (C, H, W) tensor in [-1, 1] as an 8-bit PIL image (RGB for 3 channels, L for 1)."""
    array = to_uint8(tensor)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def pad_to_multiple(batch: Tensor, multiple: int, minimum: int = 0) -> Tensor:
    """Pad a (N, C, H, W) batch at the bottom and right to multiples of `multiple` (and sides of at least
    `minimum`), mirroring the edges."""
    h, w = batch.shape[-2:]
    ph, pw = max(-h % multiple, minimum - h), max(-w % multiple, minimum - w)
    ph, pw = ph + -(h + ph) % multiple, pw + -(w + pw) % multiple
    if not (ph or pw):
        return batch
    # Reflection needs the pad to be smaller than the side; tiny images repeat their edge instead.
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(batch, (0, pw, 0, ph), mode=mode)


@torch.inference_mode()
def run_generator(generator: Generator, batch: Tensor, tiling: Tiling | None = None) -> Tensor:
    """Translate a (N, C, H, W) batch of any size: pad to the generator's size multiple, run, crop back.

    A side too short for the generator's layers (a 1-pixel-wide image leaves too little after the
    downsamplings for their padding and normalisation) is padded to twice the multiple instead. With `tiling`,
    images over its tile side or memory budget are translated one by one in tiles (i2i.tiles), the result on the
    batch's device.
    """
    h, w = batch.shape[-2:]
    param = next(generator.parameters(), None)
    device = param.device if param is not None else batch.device
    if tiling is not None:
        tile, _ = choose_tile(generator, tiling, h, w, batch.shape[1], device, images=batch.shape[0])
        if tile is not None:
            return torch.stack([translate_tensor(generator, image, tiling, tile) for image in batch]).to(batch.device)
    batch = batch.to(device)
    multiple = max(1, generator.size_multiple)
    try:
        output = generator(pad_to_multiple(batch, multiple))
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, torch.cuda.OutOfMemoryError) or min(h, w) >= 2 * multiple:
            raise
        output = generator(pad_to_multiple(batch, multiple, minimum=2 * multiple))
    return output[..., :h, :w]


def in_channels(generator: torch.nn.Module) -> int:
    """The channels of the images the generator takes: its first convolution's (3 when it has none), less the domain
    code a conditioned generator appends itself."""
    first = next((m for m in generator.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), None)
    channels = first.in_channels if first is not None else 3
    return channels - generator.count if isinstance(generator, ConditionedGenerator) else channels


def takes_gray(generator: Generator) -> bool:
    """Whether the generator's first conv takes one channel (then inputs are converted to gray), else RGB."""
    channels = in_channels(generator)
    if channels not in (1, 3):
        raise I2IError(f"the generator takes {channels}-channel images; translate reads images as RGB (3) or"
                       " gray (1)")
    return channels == 1
