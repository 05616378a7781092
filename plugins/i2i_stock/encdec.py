"""DiscoGAN's generator (Kim et al., ICML 2017): a plain conv encoder-decoder without skip connections."""

from __future__ import annotations

from torch import Tensor, nn

from i2i.api import (Generator, INIT_OPTIONS, Option, batch_independent, conv_bias, instance_norms, hookimpl, init_weights,
                    norm_layer, norm_option, stage_width)

_KERNEL = 4


class EncoderDecoderGenerator(Generator):
    """DiscoGAN's encoder-decoder: `depth` stride-2 4x4 convs down, as many transposed convs up (64 px)."""

    name = "encdec"
    options = (
        Option("depth", int, 4, "stride-2 stages down and as many up (4 turns 64 px into 4x4)", min=1),
        Option("channels", int, 64, "filters of the first conv layer; doubled per stage up to 8x", min=1),
        norm_option("batch"),
        Option("in_channels", int, 3, "channels of the input images", min=1),
        Option("out_channels", int, 3, "channels of the output images", min=1),
        *INIT_OPTIONS,
    )
    size_options = ("depth", "norm")

    def __init__(self, *, depth: int = 4, channels: int = 64, norm: str = "batch", in_channels: int = 3,
                 out_channels: int = 3, init: str = "normal", init_gain: float = 0.02) -> None:
        super().__init__()
        self.size_multiple = 2 ** depth
        # the deepest map is normalized (from depth 2 on): a norm needs more than one value, so 2x2 there
        self.min_size = 2 ** depth if norm == "none" or depth == 1 else 2 ** (depth + 1)
        self.batch_independent = batch_independent(norm)
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        widths = [stage_width(channels, n) for n in range(depth)]
        # The official code has no bias anywhere, not even on the first and last layers, which no norm follows;
        # keeping that keeps its parameter count. The first stage has no norm, as in DCGAN's discriminator.
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], _KERNEL, stride=2, padding=1, bias=False),
                                   nn.LeakyReLU(0.2, True)]
        for prev, width in zip(widths, widths[1:]):
            layers += [nn.Conv2d(prev, width, _KERNEL, stride=2, padding=1, bias=bias), make_norm(width),
                       nn.LeakyReLU(0.2, True)]
        for width, nxt in zip(widths[:0:-1], widths[-2::-1]):
            layers += [nn.ConvTranspose2d(width, nxt, _KERNEL, stride=2, padding=1, bias=bias), make_norm(nxt),
                       nn.ReLU(True)]
        # Tanh where the official code has a sigmoid: i2i images are in [-1, 1], DiscoGAN's were in [0, 1].
        layers += [nn.ConvTranspose2d(widths[0], out_channels, _KERNEL, stride=2, padding=1, bias=False), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self, init, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        """Translate a batch of images in [-1, 1] (sides multiples of 2**depth) to images of the same size."""
        return self.model(x)

    def tile_norms(self) -> list[nn.Module] | None:
        """Its instance norms, which tiled translation gives the whole image's statistics."""
        return instance_norms(self)


@hookimpl
def i2i_generators() -> list[type[Generator]]:
    """The stock encoder-decoder generator."""
    return [EncoderDecoderGenerator]
