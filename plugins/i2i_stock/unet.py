"""The pix2pix paper's U-Net generator: an encoder-decoder whose mirrored levels are joined by skip connections."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from i2i.api import (ANTIALIAS_OPTION, BlurDownsample, BlurUpsample, Generator, INIT_OPTIONS, Option,
                    batch_independent, conv_bias, instance_norms, hookimpl, init_weights, norm_layer, norm_option, stage_width)

# Dropout sits only in the 8x-wide levels between the narrowing ones and the innermost (the reference's rule).
_FIRST_DROPOUT_LEVEL = 4
_KERNEL = 4
_DEFAULT_FEATURE_LAYERS = 5  # layers 0-4 are tapped by default

# Indices inside a level's Sequential, which are part of the state-dict keys shared with the reference:
# outermost conv, sub, relu, convT, tanh; middle lrelu, conv, norm, sub, relu, convT, norm, [dropout];
# innermost lrelu, conv, relu, convT, norm.
_OUTER_DOWN, _OUTER_SUB, _OUTER_UP = 0, 1, 3
_DOWN, _SUB = 1, 3


def _down(channels: int, out: int, bias: bool, antialias: bool) -> nn.Module:
    """A level's stride-2 conv; anti-aliased, a stride-1 conv then a blurred downsampling (one module, so the
    level's other indices stay)."""
    if antialias:
        return nn.Sequential(nn.Conv2d(channels, out, 3, padding=1, bias=bias), BlurDownsample(out))
    return nn.Conv2d(channels, out, _KERNEL, stride=2, padding=1, bias=bias)


def _up(channels: int, out: int, bias: bool, antialias: bool) -> nn.Module:
    """A level's transposed conv; anti-aliased, a blurred upsampling then a stride-1 conv."""
    if antialias:
        return nn.Sequential(BlurUpsample(channels), nn.Conv2d(channels, out, 3, padding=1, bias=bias))
    return nn.ConvTranspose2d(channels, out, _KERNEL, stride=2, padding=1, bias=bias)


class UnetBlock(nn.Module):
    """One U-Net level: downsample, the inner levels, upsample; all but the outermost concatenate their input."""

    def __init__(self, outer: int, inner: int, *, input_channels: int, norm: str, submodule: UnetBlock | None,
                 outermost: bool, dropout: bool, antialias: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        self.innermost = submodule is None and not outermost
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        # The skip connection doubles what the level above hands back up.
        up_in = inner if submodule is None else inner * 2
        down = _down(input_channels, inner, bias, antialias)
        if outermost:
            # No norm follows the last conv, so it always has a bias; the first conv follows the reference's rule.
            up = _up(up_in, outer, True, antialias)
            # With downs = 1 an Identity holds the inner levels' slot, so the last conv keeps its index (key).
            layers = [down, submodule or nn.Identity(), nn.ReLU(True), up, nn.Tanh()]
        else:
            up = _up(up_in, outer, bias, antialias)
            # Not in place (the reference's is): the input is also the skip tensor. The parent's ReLU follows
            # the concatenation, and relu(leaky_relu(x)) == relu(x), so the outputs are the same either way.
            layers = [nn.LeakyReLU(0.2), down]
            if submodule is not None:  # the innermost level (1x1 at the bottleneck) has no norm before going up
                layers += [make_norm(inner), submodule]
            layers += [nn.ReLU(True), up, make_norm(outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """The level's output; inner levels return their input stacked on it (the skip connection)."""
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)

    def down(self, x: Tensor) -> Tensor:
        """The level's way down: what it hands to the level below (its conv, after the norm, if any)."""
        if self.outermost:
            return self.model[_OUTER_DOWN](x)
        steps = 2 if self.innermost else 3  # lrelu, conv[, norm]
        for module in self.model[:steps]:
            x = module(x)
        return x

    def inner(self) -> UnetBlock | None:
        """The level below this one, or None."""
        sub = None if self.innermost else self.model[_OUTER_SUB if self.outermost else _SUB]
        return sub if isinstance(sub, UnetBlock) else None


class UnetGenerator(Generator):
    """U-Net generator of pix2pix: `downs` stride-2 levels with skip connections (8 for 256 px, 7 for 128 px).

    Encoder features (`encode`, for CUT): layer 0 is the input image, layer k (1 to downs) the output of the k-th
    downsampling (its conv, then its norm); default taps 0 to 4 (down to 1/16 of the image size).

    With `antialias` each level's stride-2 conv is a 3x3 stride-1 conv then a blurred downsampling, and its
    transposed conv a blurred upsampling then a 3x3 conv, each pair one module in the conv's slot, so the levels'
    indices (and `down`, `inner`, `encode`) stay. A level's activation comes before its conv (the reference's
    layout), so the blur still sits between the activation and the subsampling, as in Zhang's BlurPool.
    """

    name = "unet"
    options = (
        Option("downs", int, 8, "downsamplings: inputs shrink to 1x1 at 2**downs px (8 = unet_256, 7 = unet_128)",
               min=1),
        Option("channels", int, 64, "filters of the first conv layer; doubled per level up to 8x", min=1),
        norm_option("batch"),
        Option("dropout", bool, False, "dropout (p = 0.5) in the 8x-wide middle levels, as pix2pix (needs downs >= 6)"),
        Option("in_channels", int, 3, "channels of the input images", min=1),
        Option("out_channels", int, 3, "channels of the output images", min=1),
        ANTIALIAS_OPTION,
        *INIT_OPTIONS,
    )
    size_options = ("downs",)

    def __init__(self, *, downs: int = 8, channels: int = 64, norm: str = "batch", dropout: bool = False,
                 in_channels: int = 3, out_channels: int = 3, antialias: bool = False, init: str = "normal",
                 init_gain: float = 0.02) -> None:
        super().__init__()
        self.size_multiple = 2 ** downs
        self.min_size = 2 ** downs  # the innermost level is 1x1 then, with no norm on it
        self.batch_independent = batch_independent(norm)
        block: UnetBlock | None = None
        # Built from the innermost level outwards, each wrapping the one below it.
        for level in reversed(range(downs)):
            outermost = level == 0
            outer = out_channels if outermost else stage_width(channels, level - 1)
            block = UnetBlock(outer, stage_width(channels, level), input_channels=in_channels if outermost else outer,
                              norm=norm, submodule=block, outermost=outermost,
                              dropout=dropout and _FIRST_DROPOUT_LEVEL <= level < downs - 1, antialias=antialias)
        self.model = block
        self.feature_widths = (in_channels, *(stage_width(channels, level) for level in range(downs)))
        init_weights(self, init, init_gain)

    @classmethod
    def options_from_state_dict(cls, state: dict[str, Tensor]) -> dict[str, Any] | None:
        """Options for a state dict with the reference UnetGenerator's keys (model.model.0.weight, ...), else None.

        Dropout has no weights, so a checkpoint cannot tell it; it is off, which is what inference wants anyway.
        """
        def conv(key: str) -> tuple[int, ...] | None:
            shape = tuple(state[key].shape) if key in state else None
            return shape if shape is not None and len(shape) == 4 and shape[2:] == (_KERNEL, _KERNEL) else None

        first, last = conv(f"model.model.{_OUTER_DOWN}.weight"), conv(f"model.model.{_OUTER_UP}.weight")
        if first is None or last is None:
            return None
        channels, in_channels, out_channels = first[0], first[1], last[1]  # a ConvTranspose2d weight is (in, out)
        # Each inner level is the submodule of the one above: model.model.1.model.3.model.3...
        prefixes = ["model.model."]
        if any(key.startswith(f"model.model.{_OUTER_SUB}.") for key in state):
            prefixes.append(f"model.model.{_OUTER_SUB}.model.")
            while any(key.startswith(f"{prefixes[-1]}{_SUB}.model.") for key in state):
                prefixes.append(f"{prefixes[-1]}{_SUB}.model.")
        downs = len(prefixes)
        for level, prefix in enumerate(prefixes[1:], start=1):
            down = conv(f"{prefix}{_DOWN}.weight")
            if down is None or down[0] != stage_width(channels, level):
                return None
        norm = _norm_from_keys(state, biased=f"model.model.{_OUTER_DOWN}.bias" in state)
        if norm is None:
            return None
        return {"downs": downs, "channels": channels, "norm": norm, "dropout": False,
                "in_channels": in_channels, "out_channels": out_channels}

    def forward(self, x: Tensor) -> Tensor:
        """Translate a batch of images in [-1, 1] (sides multiples of 2**downs) to images of the same size."""
        return self.model(x)

    def tile_norms(self) -> list[nn.Module] | None:
        """Its instance norms, which tiled translation gives the whole image's statistics."""
        return instance_norms(self)

    def feature_channels(self) -> dict[int, int]:
        """Layer 0 (the input) and 1 to downs (the downsamplings), with their channels."""
        return dict(enumerate(self.feature_widths))

    def default_feature_layers(self) -> tuple[int, ...]:
        """The input and the first four downsamplings (CUT's default taps reach 1/4 of a ResNet's size)."""
        return tuple(range(min(len(self.feature_widths), _DEFAULT_FEATURE_LAYERS)))

    def encode(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        """The input (layer 0) and the outputs of the downsamplings `layers`, going down as deep as needed."""
        found, x, block = {0: images}, images, self.model
        for level in range(1, max(layers) + 1):
            x = block.down(x)
            found[level] = x
            block = block.inner()
        return [found[layer] for layer in layers]


def _norm_from_keys(state: dict[str, Tensor], biased: bool) -> str | None:
    """The norm a reference U-Net state dict was saved with, from its conv biases and norm tensors."""
    # Norm weights are the only 1-D weights; old reference checkpoints also carry running stats for instance
    # norms (dropped by `i2i convert`), so only an affine weight marks batch norm.
    affine = any(key.endswith(".weight") and value.dim() == 1 for key, value in state.items())
    running = any(key.endswith(".running_mean") for key in state)
    if biased and not affine:
        return "instance"
    if affine and running and not biased:
        return "batch"
    if not (biased or affine or running):
        return "none"
    return None


@hookimpl
def i2i_generators() -> list[type[Generator]]:
    """The stock U-Net generator."""
    return [UnetGenerator]
