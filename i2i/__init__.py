"""i2i: a plugin-based image-to-image translation toolkit."""

from i2i.errors import I2IError
from i2i.lazy import lazy_names
from i2i.hookspecs import hookimpl, hookspec
from i2i.contract.options import Option
from i2i.contract.registry import available, create, describe

__version__ = "0.1.0"
__all__ = ["I2IError", "Option", "Tiling", "available", "create", "describe", "hookimpl", "hookspec",
           "load_generator", "translate", "__version__"]

# Imported on first use: inference pulls in torchvision and PIL, which would double the time of `import i2i`.
_LAZY = {"translate": "i2i.tools.translate", "load_generator": "i2i.tools.generators", "Tiling": "i2i.tiles.plan"}


__getattr__ = lazy_names(globals(), _LAZY)
