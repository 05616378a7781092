"""The 1x1 PatchGAN ("PixelGAN") of pix2pix: every pixel is scored on its own colour, without context."""

from __future__ import annotations

from torch import Tensor, nn

import i2i
from i2i.api import (INIT_OPTIONS, NORM_OPTION, SPECTRAL_NORM_OPTION, Discriminator, batch_independent, conv_bias,
                     init_weights, norm_layer, spectral_normalize)


class PixelDiscriminator(Discriminator):
    """1x1 PatchGAN (PixelGAN): three 1x1 convs score each pixel; pushes colour statistics, not structure."""

    name = "pixel"
    options = (
        i2i.Option("channels", int, 64, "filters of the first 1x1 conv; the second has twice as many", min=1),
        NORM_OPTION,
        i2i.Option("in_channels", int, 3, "channels of the scored images (6 when input and output are stacked)",
                   min=1),
        SPECTRAL_NORM_OPTION,
        *INIT_OPTIONS,
    )

    def __init__(self, *, channels: int = 64, norm: str = "instance", in_channels: int = 3,
                 spectral_norm: bool = False, init: str = "normal", init_gain: float = 0.02) -> None:
        super().__init__()
        self.batch_independent = batch_independent(norm)
        # 1x1 convs take any size, but a norm in training needs more than one value per image (batch of one)
        self.min_size = 1 if norm == "none" else 2
        bias = conv_bias(norm)
        # Layout, bias rule and the attribute name `net` are the reference PixelDiscriminator's, so its weights
        # (net.0.weight, ...) load unchanged; the reference also gives the last conv the norm's bias rule.
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(channels, channels * 2, 1, bias=bias), norm_layer(norm)(channels * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(channels * 2, 1, 1, bias=bias),
        )
        init_weights(self, init, init_gain)
        if spectral_norm:
            spectral_normalize(self)

    def forward(self, x: Tensor) -> Tensor:
        """Raw scores (N, 1, H, W), one per pixel."""
        return self.net(x)

    def features(self, images: Tensor) -> list[Tensor]:
        """The activations after each LeakyReLU (N, channels, H, W) and (N, 2 channels, H, W)."""
        found = []
        for layer in self.net:
            images = layer(images)
            if isinstance(layer, nn.LeakyReLU):
                found.append(images)
        return found


@i2i.hookimpl
def i2i_discriminators() -> list[type[Discriminator]]:
    """The pixel discriminator."""
    return [PixelDiscriminator]
