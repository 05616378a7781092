"""Building blocks shared by the stock networks: normalization layers, weight init and their options."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn
from torch.nn import init

from i2i.errors import I2IError
from i2i.options import Option

NORMS = ("instance", "batch", "none")
INITS = ("normal", "xavier", "kaiming", "orthogonal")
# The papers' nets double their width per stride-2 stage but stop at 8x the first stage's (C64 ... C512).
MAX_WIDTH_MULT = 8


def norm_option(default: str) -> Option:
    """The `norm` option with `default`: the stock networks differ in their papers' default."""
    return Option("norm", str, default, "normalization after each conv: instance, batch or none", choices=NORMS)


NORM_OPTION = norm_option("instance")
INIT_OPTIONS = (
    Option("init", str, "normal", "weight initialization: normal, xavier, kaiming or orthogonal", choices=INITS),
    Option("init_gain", float, 0.02, "scale of the normal/xavier/orthogonal initialization", min=0.0),
)


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """A factory building the normalization layer `name` for a given number of channels."""
    if name == "instance":
        return partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if name == "batch":
        return partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if name == "none":
        # An Identity keeps a module in the slot so Sequential indices (and state-dict keys) match the other norms.
        return lambda channels: nn.Identity()
    raise I2IError(f"unknown norm {name!r}: choose one of {', '.join(NORMS)}")


def stage_width(channels: int, stage: int) -> int:
    """Filters of stage `stage` (0 = first) of a net whose first stage has `channels`: doubling, capped at 8x."""
    return channels * min(2 ** stage, MAX_WIDTH_MULT)


def conv_bias(norm: str) -> bool:
    """Whether convs followed by `norm` get a bias, by the reference code's rule."""
    # Batch norm's affine shift makes a conv bias redundant; instance norm here has no affine, so the conv keeps
    # one. The reference also drops the bias for norm "none" (its test is "is InstanceNorm2d"); we follow it so
    # checkpoints stay interchangeable.
    return norm == "instance"


def init_weights(net: nn.Module, kind: str = "normal", gain: float = 0.02) -> None:
    """Initialize conv/linear and batch-norm weights of `net` in place, as the CycleGAN reference does."""
    if kind not in INITS:
        raise I2IError(f"unknown init {kind!r}: choose one of {', '.join(INITS)}")

    def apply(module: nn.Module) -> None:
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            if kind == "normal":
                init.normal_(module.weight, 0.0, gain)
            elif kind == "xavier":
                init.xavier_normal_(module.weight, gain=gain)
            elif kind == "kaiming":
                # The reference ignores the gain for kaiming; keeping that makes results comparable.
                init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            else:
                init.orthogonal_(module.weight, gain=gain)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d) and module.weight is not None:
            # A batch-norm scale is a vector, so only a normal spread around 1 makes sense for it.
            init.normal_(module.weight, 1.0, gain)
            init.zeros_(module.bias)

    net.apply(apply)
