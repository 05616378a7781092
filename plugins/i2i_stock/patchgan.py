"""The PatchGAN discriminator of pix2pix and CycleGAN: a conv net scoring overlapping image patches, optionally
with StarGAN's auxiliary domain classifier."""

from __future__ import annotations

from itertools import islice

from torch import Tensor, nn

from i2i.api import (ANTIALIAS_OPTION, BlurDownsample, Discriminator, I2IError, INIT_OPTIONS, NORM_OPTION, Option,
                    SPECTRAL_NORM_OPTION, batch_independent, conv_bias, hookimpl, init_weights, norm_layer,
                    spectral_normalize, stage_width)


class PatchGANDiscriminator(Discriminator):
    """N-layer PatchGAN: one real/fake score per patch (70x70 patches with the default 3 layers).

    With `classes` = K > 0 it also classifies the image's domain (StarGAN's D_cls): `scores_and_logits(x)` gives
    the scores and (N, K) logits from one pass through the shared trunk; `forward` still gives the scores only.
    """

    name = "patchgan"
    options = (
        Option("layers", int, 3, "strided conv layers; 3 gives 70x70 patches, more gives larger ones", min=1),
        Option("channels", int, 64, "filters of the first conv layer; doubled per layer up to 8x", min=1),
        NORM_OPTION,
        Option("in_channels", int, 3, "channels of the scored images (6 when input and output are stacked)",
               min=1),
        Option("classes", int, 0, "domains the auxiliary head classifies (StarGAN); 0: none", min=0),
        SPECTRAL_NORM_OPTION,
        ANTIALIAS_OPTION,
        *INIT_OPTIONS,
    )
    size_options = ("layers",)

    def __init__(self, *, layers: int = 3, channels: int = 64, norm: str = "instance", in_channels: int = 3,
                 classes: int = 0, spectral_norm: bool = False, antialias: bool = False, init: str = "normal",
                 init_gain: float = 0.02) -> None:
        super().__init__()
        self.batch_independent = batch_independent(norm)
        # `layers` halvings leave the two stride-1 4x4 convs (each 1 px narrower) a 3x3 map, so a 1x1 score map
        self.min_size = 3 * 2 ** layers
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        # The paper puts no norm on the first layer (C64 in pix2pix). Anti-aliased, a stride-2 conv becomes a
        # stride-1 conv, its activation, then a blurred downsampling (as CUT's discriminator).
        first_stride = 1 if antialias else 2
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=first_stride, padding=1),
                                nn.LeakyReLU(0.2, True)]
        if antialias:
            seq.append(BlurDownsample(channels))
        width = channels
        for n in range(1, layers + 1):
            out = stage_width(channels, n)
            # The last of these keeps the resolution (stride 1) and only widens the receptive field.
            down = n < layers
            stride = 2 if down and not antialias else 1
            seq += [nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=bias), make_norm(out),
                    nn.LeakyReLU(0.2, True)]
            if down and antialias:
                seq.append(BlurDownsample(out))
            width = out
        seq.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*seq)
        init_weights(self, init, init_gain)
        self.classes = classes
        if classes:
            # Built after the trunk's init, so the trunk draws the same weights as without the head. StarGAN's own
            # head is a conv whose kernel spans the whole final map, which ties D to one image size; a patch-sized
            # conv averaged over the map gives (N, K) logits at any size the PatchGAN takes.
            self.classifier = nn.Conv2d(width, classes, 4, stride=1, padding=1)
            init_weights(self.classifier, init, init_gain)
        if spectral_norm:
            spectral_normalize(self)

    def forward(self, x: Tensor) -> Tensor:
        """Raw scores (N, 1, H', W'), one per patch."""
        return self.model(x)

    def scores_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The scores `forward` gives and the domain logits (N, `classes`), the trunk computed once."""
        if not self.classes:
            raise I2IError(f"discriminator {self.name!r} has no domain classifier: set discriminator.classes to the"
                           " number of domains")
        trunk = self._trunk(x)
        return self.model[-1](trunk), self.classifier(trunk).mean((2, 3))

    def _trunk(self, x: Tensor) -> Tensor:
        """The last feature map: every layer of `model` but the final score conv."""
        for layer in islice(self.model, len(self.model) - 1):
            x = layer(x)
        return x

    def features(self, images: Tensor) -> list[Tensor]:
        """The activations after each LeakyReLU (`layers` + 1 maps), shallow to deep, for feature matching."""
        features = []
        x = images
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                features.append(x)
        return features


@hookimpl
def i2i_discriminators() -> list[type[Discriminator]]:
    """The stock PatchGAN discriminator."""
    return [PatchGANDiscriminator]
