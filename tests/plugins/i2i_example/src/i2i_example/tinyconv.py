"""A tiny all-convolutional generator: a third-party part that the core has never heard of."""

import torch
from torch import nn

import i2i
from i2i.api import Generator


class TinyConvGenerator(Generator):
    """Stack of 3x3 convolutions predicting a residual added to the input."""

    name = "tinyconv"
    options = (
        i2i.Option("layers", int, 3, "number of 3x3 conv layers", min=2),
        i2i.Option("channels", int, 8, "width of the hidden layers", min=1),
        i2i.Option("in_channels", int, 3, "input channels", min=1),
        i2i.Option("out_channels", int, 3, "output channels", min=1),
    )

    def __init__(self, layers: int = 3, channels: int = 8, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        widths = [in_channels] + [channels] * (layers - 1)
        body = []
        for a, b in zip(widths, widths[1:]):
            body += [nn.Conv2d(a, b, 3, padding=1), nn.InstanceNorm2d(b), nn.ReLU()]
        body.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1))
        self.model = nn.Sequential(*body)
        self.skip = in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return torch.tanh(y + x if self.skip else y)


@i2i.hookimpl
def i2i_generators():
    return [TinyConvGenerator]
