"""Where i2i keeps what it downloads: one cache folder, with a subfolder per kind of thing.

The folder is $I2I_CACHE when set, else $XDG_CACHE_HOME/i2i, else ~/.cache/i2i. `i2i download` writes into it
(unless given --root) and `i2i evaluate` looks in it for the Inception weights, so both go through here.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "INCEPTION_FILES", "cache_home", "cache_dir", "inception_path"]

#: the environment variable that moves the whole cache (tests point it at a temporary folder)
CACHE_ENV = "I2I_CACHE"
#: the Inception weights each FID protocol uses, by protocol: the file names the upstream projects publish them under
#: ("standard": pytorch-fid's TF-Inception port, whose name carries its sha256 prefix; "torchvision": torchvision's
#: ImageNet Inception v3)
INCEPTION_FILES = {"standard": "pt_inception-2015-12-05-6726825d.pth",
                   "torchvision": "inception_v3_google-0cc3c7bd.pth"}


def cache_home() -> Path:
    """The cache folder: $I2I_CACHE, else $XDG_CACHE_HOME/i2i, else ~/.cache/i2i (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "i2i"


def cache_dir(kind: str) -> Path:
    """The cache's subfolder for `kind` ("datasets", "models" or "inception"; not created here)."""
    return cache_home() / kind


def inception_path(protocol: str) -> Path:
    """Where `i2i download inception` puts the weights of FID `protocol` ("standard" or "torchvision"); the file
    may not exist."""
    return cache_dir("inception") / INCEPTION_FILES[protocol]
