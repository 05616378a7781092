"""A generator named like those of i2i-clash-b and i2i-clash-c: a small conv net."""

import torch
from torch import nn

import i2i
from i2i.api import Generator


class ClashNet(Generator):
    """A small conv generator, as packaged by i2i-clash-a."""

    name = "clashnet"
    options = (
        i2i.Option("blocks", int, 2, "number of 3x3 conv layers", min=1),
        i2i.Option("channels", int, 8, "width of the hidden layers", min=1),
        i2i.Option("in_channels", int, 3, "input channels", min=1),
        i2i.Option("out_channels", int, 3, "output channels", min=1),
    )

    def __init__(self, blocks: int = 2, channels: int = 8, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        widths = [in_channels] + [channels] * blocks
        body = []
        for a, b in zip(widths, widths[1:]):
            body += [nn.Conv2d(a, b, 3, padding=1), nn.InstanceNorm2d(b), nn.ReLU()]
        body.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1))
        self.model = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.model(x))


@i2i.hookimpl
def i2i_generators():
    return [ClashNet]
