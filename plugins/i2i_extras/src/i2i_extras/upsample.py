"""The stock ResNet generator with resize-convolutions in place of transposed convolutions.

Odena, Dumoulin and Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016: a transposed conv whose
kernel size is not divisible by its stride overlaps unevenly and paints checkerboard patterns; upsampling by
interpolation followed by a stride-1 conv does not.
"""

from __future__ import annotations

from torch import Tensor, nn

import i2i
from i2i.api import INIT_OPTIONS, NORM_OPTION, Generator, create, init_weights

MODES = ("nearest", "bilinear")


def resize_conv(transposed: nn.ConvTranspose2d, mode: str) -> list[nn.Module]:
    """Upsample x2, reflection-pad, 3x3 conv: the resize-convolution replacing one stride-2 `transposed` conv."""
    upsample = nn.Upsample(scale_factor=2, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    # Reflection padding, as everywhere else in the ResNet generator, keeps borders free of zero-padding seams.
    return [upsample, nn.ReflectionPad2d(1),
            nn.Conv2d(transposed.in_channels, transposed.out_channels, 3, bias=transposed.bias is not None)]


class UpsampleGenerator(Generator):
    """ResNet generator upsampling by interpolation + 3x3 conv instead of transposed convs (no checkerboard)."""

    name = "upsample"
    # The stock `resnet` generator's options (its constructor checks them against these), plus `mode`.
    options = (
        i2i.Option("blocks", int, 9, "number of residual blocks (9 for 256 px, 6 for 128 px in the paper)", min=0),
        i2i.Option("channels", int, 64, "filters of the first conv layer; doubled at each downsampling", min=1),
        NORM_OPTION,
        i2i.Option("dropout", bool, False, "dropout (p = 0.5) inside the residual blocks"),
        i2i.Option("in_channels", int, 3, "channels of the input images", min=1),
        i2i.Option("out_channels", int, 3, "channels of the output images", min=1),
        *INIT_OPTIONS,
        i2i.Option("mode", str, "nearest", "interpolation before each upsampling conv: nearest or bilinear",
                   choices=MODES),
    )
    size_multiple = 4  # the stock ResNet's two stride-2 downsamplings

    def __init__(self, *, blocks: int = 9, channels: int = 64, norm: str = "instance", dropout: bool = False,
                 in_channels: int = 3, out_channels: int = 3, init: str = "normal", init_gain: float = 0.02,
                 mode: str = "nearest") -> None:
        super().__init__()
        # Built from the installed stock network (through the registry, not its module) so encoder, residual
        # blocks and head stay exactly the stock ones.
        stock = create("generator", "resnet", blocks=blocks, channels=channels, norm=norm, dropout=dropout,
                       in_channels=in_channels, out_channels=out_channels)
        layers: list[nn.Module] = []
        for layer in stock.model:
            layers += resize_conv(layer, mode) if isinstance(layer, nn.ConvTranspose2d) else [layer]
        self.batch_independent = stock.batch_independent
        self.min_size = stock.min_size  # the same encoder and residual blocks take the same sizes
        self.model = nn.Sequential(*layers)
        init_weights(self, init, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        """Translate a batch of images in [-1, 1] to images of the same size in [-1, 1]."""
        return self.model(x)


@i2i.hookimpl
def i2i_generators() -> list[type[Generator]]:
    """The resize-convolution generator."""
    return [UpsampleGenerator]
