"""Any timm backbone as a part: a U-Net generator on a timm encoder (`timm_unet`) and a discriminator that scores
patches from one feature level of a timm backbone (`timm`).

Both build the backbone with `timm.create_model(backbone, features_only=True)`. Its starting weights are timm's
random initialization, timm's pretrained weights (`pretrained = true`: the Hugging Face hub or its local cache) or
a local file (`weights = "..."`). timm is imported on first use, not when the plugin loads: the import takes
seconds, and every i2i command loads every plugin.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2i.api import (Discriminator, Generator, I2IError, INIT_OPTIONS, MAX_WIDTH_MULT, NORMS, Option,
                    SPECTRAL_NORM_OPTION, conv_bias, first_line, hookimpl, init_weights, instance_norms, norm_layer,
                    read_weights, spectral_normalize, toml_value)

_CLOSE_MATCHES = 5


def backbone_options(default: str) -> tuple[Option, ...]:
    """The options naming a timm backbone and its starting weights, shared by the generator and discriminator."""
    return (
        Option("backbone", str, default, "timm model name, any of timm.list_models() that gives feature maps"
               " (features_only), e.g. resnet18, convnext_nano, efficientnet_b0; a tag such as resnet18.a1_in1k"
               " picks which pretrained weights"),
        Option("pretrained", bool, False, "start the backbone from timm's pretrained weights (downloaded from the"
               " Hugging Face hub, or read from its cache)", init_only=True),
        Option("weights", str, "", "start the backbone from this local file instead: a state dict in timm's key"
               " layout (.safetensors, or a .pth read with weights_only); empty for none", init_only=True),
    )


def _timm() -> ModuleType:
    import timm  # deferred: importing timm takes seconds and most commands never need it

    return timm


# -- the backbone: its name, feature levels and starting weights ---------------------------------------------


@dataclass(frozen=True)
class BackboneInfo:
    """What the parts need to know of a features_only timm backbone, found without building its weights."""

    indices: tuple[int, ...]  # timm's out_indices of the feature levels, shallow to deep
    channels: tuple[int, ...]  # channels of each level's map
    reductions: tuple[int, ...]  # each level's stride relative to the input
    mean: tuple[float, ...]  # input normalization the backbone's pretrained weights expect
    std: tuple[float, ...]
    fixed_size: tuple[int, int] | None  # (height, width) when the model takes only one input size (ViTs)

    def levels(self) -> str:
        """The levels as a user reads them: "5 feature levels (0-4, reductions 2, 4, 8, 16, 32)"."""
        n = len(self.channels)
        return (f"{n} feature level{'s' if n != 1 else ''} (0-{n - 1}, reductions"
                f" {', '.join(map(str, self.reductions))})")


def check_backbone_name(name: str) -> None:
    """I2IError with the closest timm names unless `name` is a timm model (with a known pretrained tag, if any)."""
    timm = _timm()
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        names = timm.list_models()
        close = difflib.get_close_matches(arch.lower(), names, n=_CLOSE_MATCHES, cutoff=0.6)
        hint = f": did you mean {', '.join(close)}?" if close else ""
        raise I2IError(f"backbone = {toml_value(name)} is not a timm model{hint} (timm {timm.__version__} has"
                       f" {len(names)}: timm.list_models() lists them, timm.list_models(\"{arch[:3].lower()}*\")"
                       f" those starting with {arch[:3].lower()!r})")
    if tag:
        tagged = timm.list_pretrained(f"{arch}.*")
        if name not in tagged:
            tags = ", ".join(t.partition(".")[2] for t in tagged) or "none"
            raise I2IError(f"backbone = {toml_value(name)}: timm has no weights tagged {tag!r} for {arch}"
                           f" (its tags: {tags})")


@lru_cache(maxsize=64)
def backbone_info(name: str, in_channels: int) -> BackboneInfo:
    """The feature levels of timm model `name`, built on the meta device (no memory, no random numbers drawn)."""
    check_backbone_name(name)
    timm = _timm()
    with torch.random.fork_rng(devices=[]):  # the parts' random initialization must not depend on this check
        try:
            try:
                with torch.device("meta"):
                    net = timm.create_model(name, features_only=True, in_chans=in_channels)
            except Exception:  # noqa: BLE001 - a model whose constructor computes with tensors needs a real device
                net = timm.create_model(name, features_only=True, in_chans=in_channels)
        except Exception as exc:  # noqa: BLE001 - timm raises several kinds for models without feature maps
            raise I2IError(f"backbone = {toml_value(name)} cannot give feature maps (timm's features_only):"
                           f" {type(exc).__name__}: {first_line(exc)}; pick another, e.g. resnet18") from None
    info = net.feature_info
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    size = cfg.get("input_size")
    fixed = tuple(size[1:]) if cfg.get("fixed_input_size") and size else None
    return BackboneInfo(tuple(info.out_indices), tuple(info.channels()), tuple(info.reduction()), mean, std, fixed)


def check_backbone_options(options: dict[str, Any]) -> BackboneInfo:
    """Check backbone, pretrained and weights together (see `backbone_options`); the backbone's levels."""
    info = backbone_info(options["backbone"], options["in_channels"])
    weights = options["weights"]
    if options["pretrained"] and weights:
        raise I2IError(f"pretrained = true and weights = {toml_value(weights)} both pick the starting weights:"
                       " set only one")
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            problem = "is a folder" if path.is_dir() else "does not exist"
            raise I2IError(f"weights = {toml_value(weights)}: {path} {problem} (give a .safetensors or .pth state"
                           " dict of the backbone)")
    if options["pretrained"]:
        arch = options["backbone"].partition(".")[0]
        if not _timm().list_pretrained(f"{arch}.*"):
            raise I2IError(f"pretrained = true: timm has no pretrained weights for {arch}; set pretrained = false")
    return info


@contextmanager
def _quiet_timm() -> Iterator[None]:
    """Silence timm's warnings about keys it skipped while loading: the loaded weights are checked here."""
    logger = logging.getLogger("timm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def create_backbone(name: str, *, in_channels: int, pretrained: bool, weights: str,
                    out_indices: tuple[int, ...] | None = None, kind: str = "") -> nn.Module:
    """timm model `name` with features_only, starting from random, timm's pretrained or a local file's weights."""
    timm = _timm()
    kwargs: dict[str, Any] = {"features_only": True, "in_chans": in_channels}
    if out_indices is not None:
        kwargs["out_indices"] = out_indices
    where = f"[{kind}] " if kind else ""
    if weights:
        return _backbone_from_file(name, Path(weights).expanduser(), kwargs, where)
    if not pretrained:
        return timm.create_model(name, **kwargs)
    try:
        with _quiet_timm():
            return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - no network surfaces as OSError, requests' and the hub's own errors
        raise I2IError(f"{where}pretrained = true: cannot get timm's weights for {name!r} from the Hugging Face hub"
                       f" or its cache ({type(exc).__name__}: {first_line(exc)}); on a machine without network, copy"
                       f" the weights file (e.g. model.safetensors of huggingface.co/timm/{name}) and set"
                       f" weights = \"path/to/it\" instead") from None


def _backbone_from_file(name: str, path: Path, kwargs: dict[str, Any], where: str) -> nn.Module:
    timm = _timm()
    try:
        state = read_weights(path)  # safetensors, or torch.load(weights_only=True): never unpickles objects
    except I2IError as exc:
        raise I2IError(f"{where}weights = {toml_value(str(path))}: {str(exc).removeprefix(f'{path}: ')}") from None
    # timm maps a classifier's state dict into its feature wrappers, adapts the input conv to in_chans and drops the
    # head, but loads non-strictly: the same build without the file shows which tensors the file really set.
    rng = torch.get_rng_state()
    fresh = timm.create_model(name, **kwargs)
    torch.set_rng_state(rng)  # both builds draw the same initialization, as one build would
    try:
        with _quiet_timm():
            net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": dict(state)},
                                    **kwargs)
    except Exception as exc:  # noqa: BLE001 - size mismatches (RuntimeError), a model's own filter failing, ...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("size mismatch")), first_line(exc))
        raise I2IError(f"{where}weights = {toml_value(str(path))} does not fit timm model {name!r}: {detail}") from None
    _drop_state_dict_copies(net)
    # Tensors initialized to one repeated value (norm scales, zero biases) may equal the file's by chance; the
    # randomly initialized ones cannot, so each of those left as it was is a tensor the file did not hold.
    start = dict(fresh.named_parameters())
    drawn = [(key, value) for key, value in net.named_parameters()
             if start[key].numel() > 1 and bool((start[key] != start[key].flatten()[0]).any())]
    missed = [key for key, value in drawn if torch.equal(value, start[key])]
    if missed:
        raise I2IError(f"{where}weights = {toml_value(str(path))} does not hold timm's {name} weights:"
                       f" {len(missed)} of the backbone's {len(drawn)} randomly initialized tensors are not in it"
                       f" (e.g. {missed[0]}); give a state dict in timm's layout, e.g. torch.save(timm.create_model("
                       f"\"{name}\").state_dict(), ...) or the model.safetensors of huggingface.co/timm/{name}")
    return net


def _drop_state_dict_copies(net: nn.Module) -> None:
    """timm keeps the weights it was handed in each module's pretrained_cfg; they must not live on with the model."""
    for module in net.modules():
        for attr in ("pretrained_cfg", "default_cfg"):
            cfg = getattr(module, attr, None)
            if isinstance(cfg, dict):
                cfg.pop("state_dict", None)


class InputNormalization(nn.Module):
    """Images in [-1, 1] to the mean/std normalization the backbone's pretrained weights expect."""

    def __init__(self, info: BackboneInfo, channels: int) -> None:
        super().__init__()
        mean, std = torch.tensor(info.mean), torch.tensor(info.std)
        if channels % len(mean):  # e.g. 1 or 4 channels: no per-channel statistics to use
            mean, std = torch.full((channels,), 0.5), torch.full((channels,), 0.5)
        else:  # stacked images (a conditional discriminator's 6 channels) repeat the RGB statistics
            repeat = channels // len(mean)
            mean, std = mean.repeat(repeat), std.repeat(repeat)
        # x01 = (x + 1) / 2, then (x01 - mean) / std; not in the state dict, so it is no part of checkpoints
        self.register_buffer("scale", (0.5 / std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((0.5 - mean) / std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """The normalized images."""
        return x * self.scale + self.shift


def _feature_maps(backbone: nn.Module, x: Tensor) -> list[Tensor]:
    """The backbone's feature maps as (N, C, H, W) tensors (some timm models give NHWC)."""
    features = backbone(x)
    fmt = getattr(backbone, "output_fmt", "NCHW")
    if getattr(fmt, "value", fmt) == "NHWC":
        features = [f.permute(0, 3, 1, 2) for f in features]
    return list(features)


def _batch_independent(net: nn.Module) -> bool:
    """Whether each sample's output depends on its own input alone in training mode (no batch statistics)."""
    for module in net.modules():
        kind = type(module).__name__
        if isinstance(module, nn.modules.batchnorm._BatchNorm) or (
                ("BatchNorm" in kind or kind.startswith("EvoNorm2dB")) and "Frozen" not in kind):
            return False
    return True


# -- the generator -------------------------------------------------------------------------------------------


class DecoderBlock(nn.Module):
    """Two 3x3 convs, each followed by the norm and a ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect", bias=bias),
            make_norm(out_channels), nn.ReLU(True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, padding_mode="reflect", bias=bias),
            make_norm(out_channels), nn.ReLU(True))

    def forward(self, x: Tensor) -> Tensor:
        """The block's output."""
        return self.block(x)


class TimmUnetGenerator(Generator):
    """U-Net generator on a timm encoder (any of timm.list_models() with feature maps).

    Encoder: timm.create_model(backbone, features_only=True). Decoder: one stage
    per doubling of the resolution up to the input size, each joined by a skip
    connection to the encoder level of its resolution (at full size, to the
    input image); tanh output. Image sides must be multiples of the encoder's
    total stride (32 for most backbones); i2i translate pads images to it.
    Encoder features (encode, for CUT): layer 0 is the input image, layer k the
    encoder's k-th feature level (1 = the shallowest); all are tapped by default.
    List backbones: python -c "import timm; print(timm.list_models('conv*'))"
    """

    name = "timm_unet"
    options = (
        *backbone_options("resnet18"),
        Option("decoder_channels", int, 32, "filters of the decoder's full-resolution stage; doubled per halving"
               f" of the resolution, up to {MAX_WIDTH_MULT}x", min=1),
        Option("norm", str, "instance", "normalization after each decoder conv (the encoder keeps timm's own)",
               choices=NORMS),
        Option("in_channels", int, 3, "channels of the input images", min=1),
        Option("out_channels", int, 3, "channels of the output images", min=1),
        *INIT_OPTIONS,
    )
    size_options = ("backbone",)

    def __init__(self, *, backbone: str = "resnet18", pretrained: bool = False, weights: str = "",
                 decoder_channels: int = 32, norm: str = "instance", in_channels: int = 3, out_channels: int = 3,
                 init: str = "normal", init_gain: float = 0.02) -> None:
        super().__init__()
        info = check_backbone_options({"backbone": backbone, "pretrained": pretrained, "weights": weights,
                                       "in_channels": in_channels})
        self.backbone = backbone
        self.size_multiple = info.reductions[-1]
        self.fixed_size = info.fixed_size
        self.normalize = InputNormalization(info, in_channels)
        self.encoder = create_backbone(backbone, in_channels=in_channels, pretrained=pretrained, weights=weights,
                                       kind="generator")
        # One stage per halving of the resolution, from the deepest map's down to the input's; a stage joins the
        # deepest encoder level of its resolution (the deepest map itself is the decoder's start, not a skip).
        self.stages: list[tuple[int, list[int]]] = []
        blocks = []
        width = info.channels[-1]
        reduction = self.size_multiple
        while reduction > 1:
            reduction //= 2
            skips = [i for i, r in enumerate(info.reductions[:-1]) if r == reduction][-1:]
            joined = width + sum(info.channels[i] for i in skips) + (in_channels if reduction == 1 else 0)
            width = decoder_channels * min(reduction, MAX_WIDTH_MULT)
            blocks.append(DecoderBlock(joined, width, norm))
            self.stages.append((reduction, skips))
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(width, out_channels, 3, padding=1, padding_mode="reflect")
        init_weights(self.decoder, init, init_gain)  # the encoder keeps timm's (or the loaded) weights
        init_weights(self.head, init, init_gain)
        self.encoder_batch_independent = _batch_independent(self.encoder)
        self.batch_independent = _batch_independent(self)
        # the deepest map is 1x1 at the total stride, where batch norm in training needs a batch of 2 or more
        self.min_size = self.size_multiple * (1 if self.encoder_batch_independent else 2)
        self.feature_widths = (in_channels, *info.channels)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """The backbone is a timm model with feature maps; pretrained and weights can be used."""
        check_backbone_options(options)

    def forward(self, x: Tensor) -> Tensor:
        """Translate images in [-1, 1] whose sides are multiples of `size_multiple` to images of the same size."""
        height, width = x.shape[-2:]
        self._check_size(x)
        features = _feature_maps(self.encoder, self.normalize(x))
        y = features[-1]
        for (reduction, skips), block in zip(self.stages, self.decoder):
            size = (height // reduction, width // reduction)
            joined = [F.interpolate(y, size=size, mode="nearest")]
            # Backbones with unpadded convs give maps a pixel or two short of the exact size; stretch those.
            joined += [f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                       for f in (features[i] for i in skips)]
            if reduction == 1:
                joined.append(x)
            y = block(torch.cat(joined, 1))
        return torch.tanh(self.head(y))

    def tile_norms(self) -> list[nn.Module] | None:
        """The decoder's instance norms (and any in the backbone); None for a backbone with group norms, whose
        per-tile statistics tiled translation cannot replace."""
        return instance_norms(self)

    def feature_channels(self) -> dict[int, int]:
        """Layer 0 (the input) and 1 to n (the encoder's feature levels), with their channels."""
        return dict(enumerate(self.feature_widths))

    def encode(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        """The input (layer 0) and the encoder's feature maps at `layers` (the whole encoder runs when any is asked)."""
        maps = [images]
        if max(layers) > 0:
            self._check_size(images)
            maps += _feature_maps(self.encoder, self.normalize(images))
        return [maps[layer] for layer in layers]

    def _check_size(self, x: Tensor) -> None:
        height, width = x.shape[-2:]
        multiple = self.size_multiple
        if height % multiple or width % multiple:
            raise I2IError(f"generator timm_unet ({self.backbone}) needs image sides that are multiples of"
                           f" {multiple}, got {width}x{height}: crop or resize to such sizes (data.crop_size);"
                           " i2i translate pads images itself")
        if self.fixed_size is not None and (height, width) != self.fixed_size:
            raise I2IError(f"generator timm_unet ({self.backbone}) takes only {self.fixed_size[1]}x"
                           f"{self.fixed_size[0]} images (a fixed input size in timm), got {width}x{height}")
        if (self.training and not self.encoder_batch_independent and x.shape[0] == 1
                and height == multiple and width == multiple):
            raise I2IError(f"generator timm_unet ({self.backbone}): a {width}x{height} image shrinks to 1x1 in the"
                           " encoder, where batch norm in training needs more than one value: use images of at"
                           f" least {2 * multiple} px or batches of 2 or more")


# -- the discriminator ---------------------------------------------------------------------------------------


class TimmDiscriminator(Discriminator):
    """Patch scores from one feature level of a timm backbone (timm.list_models()).

    The backbone is timm.create_model(backbone, features_only=True), cut after
    feature level `level` (0 = the shallowest); a 1x1 conv scores each position
    of that level's map, i.e. the image patch it sees. A level out of range gets
    the backbone's levels and their reductions. features() gives the maps of
    levels 0 to `level`, for feature matching.
    """

    name = "timm"
    options = (
        *backbone_options("resnet18"),
        Option("level", int, 2, "feature level scored, 0 = the shallowest (for resnet18, level 2 is 1/8 of the"
               " image size)", min=0),
        Option("in_channels", int, 3, "channels of the scored images (6 when input and output are stacked)",
               min=1),
        SPECTRAL_NORM_OPTION,
    )
    size_options = ("backbone", "level")

    def __init__(self, *, backbone: str = "resnet18", pretrained: bool = False, weights: str = "", level: int = 2,
                 in_channels: int = 3, spectral_norm: bool = False) -> None:
        super().__init__()
        info = self._checked({"backbone": backbone, "pretrained": pretrained, "weights": weights, "level": level,
                              "in_channels": in_channels})
        self.normalize = InputNormalization(info, in_channels)
        self.encoder = create_backbone(backbone, in_channels=in_channels, pretrained=pretrained, weights=weights,
                                       out_indices=info.indices[:level + 1], kind="discriminator")
        self.head = nn.Conv2d(info.channels[level], 1, 1)
        init_weights(self.head)
        self.batch_independent = _batch_independent(self)
        # level `level`'s map is 1x1 at its reduction; batch norm in training needs more than one value there
        self.min_size = info.reductions[level] * (1 if self.batch_independent else 2)
        if spectral_norm:  # the backbone's convs too: pretrained weights keep their direction, scaled
            spectral_normalize(self)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """The backbone is a timm model with feature maps, `level` one of them; pretrained and weights can be used."""
        cls._checked(options)

    @staticmethod
    def _checked(options: dict[str, Any]) -> BackboneInfo:
        info = check_backbone_options(options)
        level = options["level"]
        if not 0 <= level < len(info.channels):
            raise I2IError(f"level = {level} is out of range: {options['backbone']} has {info.levels()}")
        return info

    def forward(self, x: Tensor) -> Tensor:
        """Raw scores (N, 1, H', W'), one per position of feature level `level`."""
        return self.head(self.features(x)[-1])

    def features(self, images: Tensor) -> list[Tensor]:
        """The backbone's feature maps of levels 0 to `level`, shallow to deep."""
        return _feature_maps(self.encoder, self.normalize(images))


@hookimpl
def i2i_generators() -> list[type[Generator]]:
    """The timm-encoder U-Net generator."""
    return [TimmUnetGenerator]


@hookimpl
def i2i_discriminators() -> list[type[Discriminator]]:
    """The timm-backbone discriminator."""
    return [TimmDiscriminator]
