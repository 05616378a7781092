"""i2i-extras: alternative parts for ablation studies (upsample generator, hinge loss, pixel discriminator)."""

__version__ = "0.1.0"
