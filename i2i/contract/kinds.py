"""The core's kinds of part, declared through the same hook a plugin declares its own with (``i2i_kinds``).

A kind is its base class: a subclass of `Part` that sets ``kind``. The registry registers this module as a
plugin of the core package, so `Registry.kinds()` holds these first, then the kinds installed plugins declare.
"""

from __future__ import annotations

from i2i.contract.callbacks import Callback
from i2i.contract.parts import (Augment, Buffer, Dataset, Discriminator, Generator, Loss, Method, Optimizer, Part,
                                Schedule)
from i2i.hookspecs import hookimpl

#: the core's base classes, in the order `i2i list` shows them
CORE_KINDS: tuple[type[Part], ...] = (Generator, Discriminator, Loss, Buffer, Augment, Method, Dataset, Optimizer,
                                      Schedule, Callback)


@hookimpl
def i2i_kinds() -> list[type[Part]]:
    """The core's kinds of part."""
    return list(CORE_KINDS)


#: the core's kinds by name; every kind installed (plugins' included) is `Registry.kinds()`
KINDS: dict[str, type[Part]] = {cls.kind: cls for cls in CORE_KINDS}
