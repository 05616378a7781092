"""i2i: a plugin-based image-to-image translation toolkit."""

from i2i.errors import I2IError
from i2i.hookspecs import hookimpl, hookspec
from i2i.options import Option
from i2i.registry import available, create, describe

__version__ = "0.1.0"
__all__ = ["I2IError", "Option", "available", "create", "describe", "hookimpl", "hookspec", "__version__"]
