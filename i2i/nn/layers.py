"""Network building blocks for parts: normalization layers, weight init and their options.

The stock networks are built from these, and so can any plugin's (import them from `i2i.api`): a part that
declares `NORM_OPTION` and `INIT_OPTIONS` and builds with `norm_layer` and `init_weights` takes the same recipe
keys, and starts from the same weights for the same seed, as the stock ones.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from i2i.engine.distributed import all_reduce_sum
from i2i.errors import I2IError
from i2i.contract.options import Option

__all__ = ["ANTIALIAS_OPTION", "BATCH_NORMS", "BlurDownsample", "BlurUpsample", "INITS", "INIT_OPTIONS",
           "MAX_WIDTH_MULT", "NORMS", "NORM_OPTION", "SPECTRAL_NORM_OPTION", "SyncBatchNorm2d", "batch_independent",
           "conv_bias", "init_weights", "instance_norms", "norm_layer", "norm_option", "spectral_normalize",
           "stage_width"]

NORMS = ("instance", "batch", "syncbatch", "none")
BATCH_NORMS = ("batch", "syncbatch")
INITS = ("normal", "xavier", "kaiming", "orthogonal")
# The papers' nets double their width per stride-2 stage but stop at 8x the first stage's (C64 ... C512).
MAX_WIDTH_MULT = 8


def norm_option(default: str) -> Option:
    """The `norm` option with `default`: the stock networks differ in their papers' default."""
    return Option("norm", str, default, "normalization after each conv: instance, batch, syncbatch (batch"
                  " statistics over all processes of a torchrun run) or none", choices=NORMS)


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
    if name == "syncbatch":
        return partial(SyncBatchNorm2d, affine=True, track_running_stats=True)
    if name == "none":
        # An Identity keeps a module in the slot so Sequential indices (and state-dict keys) match the other norms.
        return lambda channels: nn.Identity()
    raise I2IError(f"unknown norm {name!r}: choose one of {', '.join(NORMS)}")


def stage_width(channels: int, stage: int) -> int:
    """Filters of stage `stage` (0 = first) of a net whose first stage has `channels`: doubling, capped at 8x."""
    return channels * min(2 ** stage, MAX_WIDTH_MULT)


def instance_norms(net: nn.Module) -> list[nn.Module] | None:
    """The instance norms of `net` in module order, for `Generator.tile_norms`; None when `net` also holds a norm
    with per-image statistics that tiled translation cannot replace (group, or instance norm over other dims)."""
    found: list[nn.Module] = []
    for module in net.modules():
        if isinstance(module, nn.InstanceNorm2d):
            found.append(module)
        elif isinstance(module, (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
            return None  # GroupNorm and 1d/3d instance norms also average over the image: not replaceable here
    return found


def batch_independent(norm: str) -> bool:
    """Whether a net normalized by `norm` treats each image of a batch on its own (in training mode)."""
    return norm not in BATCH_NORMS


class SyncBatchNorm2d(nn.SyncBatchNorm):
    """Batch norm whose statistics cover the whole global batch of a multi-process run, on GPUs and CPUs.

    On CUDA it is torch's SyncBatchNorm; torch's only runs on accelerators, so on a CPU (gloo) the batch mean and
    variance are summed over the processes here with a differentiable all-reduce. With a single process it is
    plain batch norm. Its state-dict keys are BatchNorm2d's, so checkpoints move between "batch" and "syncbatch".
    """

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and input.device.type == "cpu" and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        count = all_reduce_sum(torch.tensor(float(input.numel() // input.shape[1])))
        mean = all_reduce_sum(input.sum((0, 2, 3))) / count
        centered = input - mean[None, :, None, None]
        # two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2, which loses precision
        var = all_reduce_sum(centered.square().sum((0, 2, 3))) / count
        out = centered * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / (count - 1).clamp(min=1), momentum)  # unbiased, as torch's
        return out


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
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            # A batch-norm scale is a vector, so only a normal spread around 1 makes sense for it.
            init.normal_(module.weight, 1.0, gain)
            init.zeros_(module.bias)

    net.apply(apply)


# ---------------------------------------------------------------------------------------------------------
# GAN stabilizers: spectral normalization and anti-aliased sampling

SPECTRAL_NORM_OPTION = Option(
    "spectral_norm", bool, False, "spectral normalization of every conv weight (Miyato et al. 2018): each layer's"
    " largest singular value held at 1; usually paired with norm = \"none\"")
ANTIALIAS_OPTION = Option(
    "antialias", bool, False, "anti-aliased sampling (Zhang 2019, CUT's default): stride-1 convs with a fixed blur"
    " before each downsampling and after each upsampling; off keeps the reference layout and its weights' keys")


def spectral_normalize(net: nn.Module) -> nn.Module:
    """Spectral normalization of every conv and linear weight of `net`, in place (after its init); marks it
    batch_independent = False."""
    for module in list(net.modules()):
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(module)
    # Each training-mode forward advances the power iteration (its vectors u, v are buffers), so one call on a
    # concatenation of batches is not the same math as a call per batch: methods then call per batch, as the
    # paper's code scores reals and fakes.
    net.batch_independent = False
    return net


def _blur_kernel(channels: int, scale: float) -> Tensor:
    """The binomial [1, 2, 1] x [1, 2, 1] / 16 filter (times `scale`), one per channel."""
    taps = torch.tensor([1.0, 2.0, 1.0])
    kernel = torch.outer(taps, taps) / 16.0 * scale
    return kernel.expand(channels, 1, 3, 3).clone()


class BlurDownsample(nn.Module):
    """Anti-aliased downsampling by 2 (Zhang 2019): a fixed binomial blur, then every other pixel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        # not persistent: the fixed filter adds no keys to the state dict
        self.register_buffer("kernel", _blur_kernel(channels, 1.0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, ceil(H / 2), ceil(W / 2)), reflect-padded."""
        return F.conv2d(F.pad(x, [1, 1, 1, 1], mode="reflect"), self.kernel.to(x.dtype), stride=2,
                        groups=self.channels)


class BlurUpsample(nn.Module):
    """Anti-aliased upsampling by 2: zeros between the pixels, then the binomial blur (so bilinear-like)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        # times 4: the inserted zeros take 3 of every 4 output pixels' share of the input
        self.register_buffer("kernel", _blur_kernel(channels, 4.0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, 2H, 2W): the input pixels kept, the new ones averaged from their neighbours."""
        h, w = x.shape[-2:]
        padded = F.pad(x, [1, 1, 1, 1], mode="replicate")  # so the last row and column average with themselves
        up = F.conv_transpose2d(padded, self.kernel.to(x.dtype), stride=2, groups=self.channels)
        # input pixel i of `padded` lands at 2i + 1: x's pixel 0 (padded's 1) at 3
        return up[..., 3:3 + 2 * h, 3:3 + 2 * w]
