"""i2i: a plugin-based image-to-image translation toolkit."""

from typing import Any

from i2i.errors import I2IError
from i2i.hookspecs import hookimpl, hookspec
from i2i.contract.options import Option
from i2i.contract.registry import available, create, describe

__version__ = "0.1.0"
__all__ = ["I2IError", "Option", "available", "create", "describe", "hookimpl", "hookspec", "load_generator",
           "translate", "__version__"]

# Imported on first use: inference pulls in torchvision and PIL, which would double the time of `import i2i`.
_LAZY = {"translate": "i2i.tools.inference", "load_generator": "i2i.tools.inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'i2i' has no attribute {name!r}")
