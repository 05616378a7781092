"""The building blocks of the stock networks, which are the core's (`i2i.layers`, public through `i2i.api`).

Kept so the stock modules' imports stay as they are; a third-party part imports them from `i2i.api`.
"""

from i2i.layers import *  # noqa: F403
from i2i.layers import __all__  # noqa: F401
