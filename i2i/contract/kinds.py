"""Every kind of part, by name: a kind is its base class."""

from __future__ import annotations

from i2i.contract.callbacks import Callback
from i2i.contract.parts import (Augment, Buffer, Dataset, Discriminator, Generator, Loss, Method, Optimizer, Part,
                                Schedule)

#: every kind of part, by name, in the order `i2i list` shows them; a new kind is one class above and its hook
KINDS: dict[str, type[Part]] = {cls.kind: cls for cls in (Generator, Discriminator, Loss, Buffer, Augment, Method,
                                                          Dataset, Optimizer, Schedule, Callback)}
