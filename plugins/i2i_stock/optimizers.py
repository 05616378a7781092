"""The stock optimizers: Adam (CycleGAN, pix2pix), AdamW, RMSprop (WGAN, DualGAN) and SGD."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from i2i.api import I2IError, Optimizer, Option, hookimpl

_KERNELS = {"auto": {}, "fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False}}
LR = Option("lr", float, 2e-4, "learning rate (the schedule multiplies it)", min=0.0)
WEIGHT_DECAY = Option("weight_decay", float, 0.0, "L2 weight decay", min=0.0)


def _implementation(fused: bool) -> Option:
    choices = ("auto", "fused", "foreach", "single") if fused else ("auto", "foreach", "single")
    return Option("implementation", str, "auto",
                  "optimizer kernels: auto (torch's default, foreach on CPU and GPU), "
                  + ("fused (one kernel per step, on devices torch has fused kernels for), " if fused else "")
                  + "foreach (one op per step across all weights) or single (a loop over the weights);"
                  " same math up to float order", choices=choices)


class TorchOptimizer(Optimizer):
    """Base of the stock optimizers: a torch.optim class, its keyword arguments from the options."""

    torch_class: type[torch.optim.Optimizer]

    def __init__(self, **options: Any) -> None:
        self.settings = options

    def arguments(self) -> dict[str, Any]:  # pragma: no cover - interface
        """The torch optimizer's keyword arguments (but for kernels) from the options."""
        raise NotImplementedError

    def build(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The torch optimizer over `params`; a fused kernel the device lacks is one clear error."""
        implementation = self.settings["implementation"]
        try:
            return self.torch_class(params, **self.arguments(), **_KERNELS[implementation])
        except (RuntimeError, TypeError, ValueError) as exc:
            if implementation != "fused":
                raise
            device = params[0].device if params else "no parameters"
            raise I2IError(f"optim.implementation = \"fused\" is not supported here ({device}, torch"
                           f" {torch.__version__}: {exc}); use \"foreach\" or \"auto\"") from None

    def build_for_capture(self, params: list[nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
        """The optimizer for a captured step: torch's fused kernel where the class has one (its step counts stay on
        the device), else its capturable one on a GPU; the learning rate a tensor on `device` either way."""
        implementation = self.settings["implementation"]
        if implementation not in ("auto", "fused"):
            raise I2IError(f"optim.implementation = \"{implementation}\" cannot run in a captured step"
                           " (run.capture = true): use \"auto\" (capture picks the fused or capturable kernels)")
        if "fused" in _implementation_choices(self):
            kernels = {"fused": True}
        elif device.type == "cpu":  # no capturable CPU kernels; the CPU runs the step eagerly, so foreach does
            kernels = {"foreach": True}
        else:
            kernels = {"capturable": True, "foreach": True}
        arguments = {**self.arguments(), "lr": torch.tensor(float(self.settings["lr"]), device=device)}
        return self.torch_class(params, **arguments, **kernels)


def _implementation_choices(optimizer: TorchOptimizer) -> tuple[str, ...]:
    """The kernel choices an optimizer declares (fused among them where torch has a fused kernel)."""
    return next(o.choices for o in type(optimizer).options if o.name == "implementation")


class Adam(TorchOptimizer):
    """Adam (Kingma and Ba 2015), as CycleGAN, pix2pix and CUT train with beta1 = 0.5."""

    name = "adam"
    torch_class = torch.optim.Adam
    options = (LR, Option("beta1", float, 0.5, "Adam beta1", min=0.0, max=1.0),
               Option("beta2", float, 0.999, "Adam beta2", min=0.0, max=1.0), WEIGHT_DECAY, _implementation(True))

    def arguments(self) -> dict[str, Any]:
        """lr, betas, weight_decay."""
        s = self.settings
        return {"lr": s["lr"], "betas": (s["beta1"], s["beta2"]), "weight_decay": s["weight_decay"]}


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (Loshchilov and Hutter 2019)."""

    name = "adamw"
    torch_class = torch.optim.AdamW
    options = (*Adam.options[:3], Option("weight_decay", float, 0.01, "decoupled weight decay", min=0.0),
               _implementation(True))


class RMSprop(TorchOptimizer):
    """RMSprop, as WGAN and DualGAN train."""

    name = "rmsprop"
    torch_class = torch.optim.RMSprop
    options = (LR, Option("beta2", float, 0.99, "the smoothing constant (torch's alpha)", min=0.0, max=1.0),
               Option("momentum", float, 0.0, "momentum", min=0.0), WEIGHT_DECAY, _implementation(False))

    def arguments(self) -> dict[str, Any]:
        """lr, alpha, momentum, weight_decay."""
        s = self.settings
        return {"lr": s["lr"], "alpha": s["beta2"], "momentum": s["momentum"], "weight_decay": s["weight_decay"]}


class SGD(TorchOptimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum."""

    name = "sgd"
    torch_class = torch.optim.SGD
    options = (LR, Option("momentum", float, 0.0, "momentum", min=0.0),
               Option("nesterov", bool, False, "Nesterov momentum (needs momentum > 0)"), WEIGHT_DECAY,
               _implementation(True))

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Nesterov momentum needs momentum."""
        if options["nesterov"] and options["momentum"] <= 0:
            raise I2IError("nesterov = true needs momentum > 0")

    def arguments(self) -> dict[str, Any]:
        """lr, momentum, nesterov, weight_decay."""
        s = self.settings
        return {"lr": s["lr"], "momentum": s["momentum"], "nesterov": s["nesterov"],
                "weight_decay": s["weight_decay"]}


@hookimpl
def i2i_optimizers() -> list[type]:
    """The stock optimizers."""
    return [Adam, AdamW, RMSprop, SGD]
