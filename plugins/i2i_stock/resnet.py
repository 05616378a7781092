"""The CycleGAN paper's ResNet generator: two strided downsamplings, residual blocks, two upsamplings."""

from __future__ import annotations

import re
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from i2i.api import (ANTIALIAS_OPTION, BlurDownsample, BlurUpsample, Generator, INIT_OPTIONS, NORM_OPTION, Option,
                    batch_independent, conv_bias, instance_norms, hookimpl, init_weights, norm_layer)

_DOWNSAMPLINGS = 2
_FIRST_BLOCK = 10  # model index of the first residual block: pad, conv, norm, relu, then 2 x (conv, norm, relu)
_AFTER_BLOCKS = 7  # the last conv's index past the blocks: 2 x (convT, norm, relu), pad
_BLOCK_KEY = re.compile(r"^model\.(\d+)\.conv_block\.")
# The layers CUT taps by default (Park et al. 2020, its code's --nce_layers): indices into the same layer sequence
# (the paper's code with --no_antialias has this CycleGAN layout): the padded input, the first downsampling conv,
# the second downsampling's norm, the outputs of the 3rd and 7th residual blocks.
_PAPER_FEATURE_LAYERS = (0, 4, 8, 12, 16)


class ResnetBlock(nn.Module):
    """A residual block: x + (pad, conv3x3, norm, relu, [dropout], pad, conv3x3, norm)(x)."""

    def __init__(self, dim: int, norm: str, dropout: bool) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim),
                                   nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim)]
        # The attribute name is part of the state-dict keys shared with the reference checkpoints.
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """The input plus the block's residual."""
        return x + self.conv_block(x)


class ResnetGenerator(Generator):
    """ResNet generator of the CycleGAN paper (9 residual blocks between 2 down- and 2 upsamplings).

    Encoder features (`encode`, for CUT): layer i is the output of module i of its layer sequence `model`, as in
    the CUT paper's code; the encoder is modules 0 to 9 + blocks: 0 reflection pad (the input), 1-3 conv, norm,
    relu, 4-6 and 7-9 the two downsamplings (conv, norm, relu), 10 onwards the residual blocks. Default taps:
    the paper's 0, 4, 8, 12, 16, as far as the encoder reaches. With `antialias` each downsampling is 4 modules
    (conv, norm, relu, blur: 4-7 and 8-11) and the blocks start at 12, as in the CUT paper's own code.
    """

    name = "resnet"
    options = (
        Option("blocks", int, 9, "number of residual blocks (9 for 256 px, 6 for 128 px in the paper)", min=0),
        Option("channels", int, 64, "filters of the first conv layer; doubled at each downsampling", min=1),
        NORM_OPTION,
        Option("dropout", bool, False, "dropout (p = 0.5) inside the residual blocks"),
        Option("in_channels", int, 3, "channels of the input images", min=1),
        Option("out_channels", int, 3, "channels of the output images", min=1),
        ANTIALIAS_OPTION,
        *INIT_OPTIONS,
    )
    size_multiple = 2 ** _DOWNSAMPLINGS
    # 2x2 at the residual blocks, which reflect-pad by 1 and normalize: a 4 px image shrinks to 1x1 there
    min_size = 2 * size_multiple

    def __init__(self, *, blocks: int = 9, channels: int = 64, norm: str = "instance", dropout: bool = False,
                 in_channels: int = 3, out_channels: int = 3, antialias: bool = False, init: str = "normal",
                 init_gain: float = 0.02) -> None:
        super().__init__()
        self.batch_independent = batch_independent(norm)
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, channels, 7, bias=bias),
                                   make_norm(channels), nn.ReLU(True)]
        width = channels
        for _ in range(_DOWNSAMPLINGS):
            if antialias:  # conv at full resolution, then a blurred downsampling (as CUT's generator)
                layers += [nn.Conv2d(width, width * 2, 3, padding=1, bias=bias), make_norm(width * 2),
                           nn.ReLU(True), BlurDownsample(width * 2)]
            else:
                layers += [nn.Conv2d(width, width * 2, 3, stride=2, padding=1, bias=bias), make_norm(width * 2),
                           nn.ReLU(True)]
            width *= 2
        self.first_block = len(layers)  # the model index of the first residual block
        layers += [ResnetBlock(width, norm, dropout) for _ in range(blocks)]
        for _ in range(_DOWNSAMPLINGS):
            if antialias:  # a blurred upsampling, then a conv at the new resolution
                layers += [BlurUpsample(width), nn.Conv2d(width, width // 2, 3, padding=1, bias=bias),
                           make_norm(width // 2), nn.ReLU(True)]
            else:
                layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1,
                                              bias=bias), make_norm(width // 2), nn.ReLU(True)]
            width //= 2
        # The last conv always has a bias: no norm follows it.
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.encoder_layers = self.first_block + blocks  # modules 0 .. encoder_layers - 1 make up the encoder
        init_weights(self, init, init_gain)

    @classmethod
    def options_from_state_dict(cls, state: dict[str, Tensor]) -> dict[str, Any] | None:
        """Options for a state dict with the reference ResnetGenerator's keys (model.1.weight, ...), else None."""
        def conv(key: str, kernel: int) -> tuple[int, ...] | None:
            shape = tuple(state[key].shape) if key in state else None
            return shape if shape is not None and len(shape) == 4 and shape[2:] == (kernel, kernel) else None

        first = conv("model.1.weight", 7)
        if first is None:
            return None
        channels, in_channels = first[0], first[1]
        indices = sorted({int(m.group(1)) for key in state if (m := _BLOCK_KEY.match(key))})
        blocks = len(indices)
        if indices != list(range(_FIRST_BLOCK, _FIRST_BLOCK + blocks)):
            return None
        last = conv(f"model.{_FIRST_BLOCK + blocks + _AFTER_BLOCKS}.weight", 7)
        if last is None or last[1] != channels:
            return None
        # Old reference checkpoints carry running stats for instance norms too (dropped by `i2i convert`), so
        # only an affine weight marks batch norm; instance norm is the one whose convs keep their bias.
        biased, affine = "model.1.bias" in state, "model.2.weight" in state
        if biased and not affine:
            norm = "instance"
        elif affine and not biased and "model.2.running_mean" in state:
            norm = "batch"
        elif not biased and not any(key.startswith("model.2.") for key in state):
            norm = "none"
        else:
            return None
        dropout = False
        if blocks:
            # Dropout sits between the two convs of a block and shifts the second one from index 5 to 6.
            if conv(f"model.{_FIRST_BLOCK}.conv_block.6.weight", 3):
                dropout = True
            elif not conv(f"model.{_FIRST_BLOCK}.conv_block.5.weight", 3):
                return None
        return {"blocks": blocks, "channels": channels, "norm": norm, "dropout": dropout,
                "in_channels": in_channels, "out_channels": last[0]}

    def forward(self, x: Tensor) -> Tensor:
        """Translate a batch of images in [-1, 1] to images of the same size in [-1, 1]."""
        return self.model(x)

    def tile_norms(self) -> list[nn.Module] | None:
        """Its instance norms, which tiled translation gives the whole image's statistics."""
        return instance_norms(self)

    def feature_channels(self) -> dict[int, int]:
        """Layers 0 to 9 + blocks (modules of `model` up to the last residual block) and their channels."""
        channels, width = {}, self.model[1].in_channels
        for index, module in enumerate(self.model[:self.encoder_layers]):
            if isinstance(module, nn.Conv2d):
                width = module.out_channels
            channels[index] = width
        return channels

    def default_feature_layers(self) -> tuple[int, ...]:
        """The CUT paper's layers 0, 4, 8, 12, 16, without those past the last residual block."""
        return tuple(layer for layer in _PAPER_FEATURE_LAYERS if layer < self.encoder_layers)

    def encode(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        """The outputs of modules `layers` of `model` for `images`, running the modules up to the deepest one."""
        wanted, found = set(layers), {}
        x = images
        for index, module in enumerate(self.model[:max(layers) + 1]):
            if index - 1 in wanted and isinstance(module, nn.ReLU) and module.inplace:
                x = F.relu(x)  # an in-place ReLU would overwrite the tapped output of the module before it
            else:
                x = module(x)
            if index in wanted:
                found[index] = x
        return [found[layer] for layer in layers]


@hookimpl
def i2i_generators() -> list[type[Generator]]:
    """The stock ResNet generator."""
    return [ResnetGenerator]
