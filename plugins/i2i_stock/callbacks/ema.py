"""An exponential moving average of the generators' weights (Yazıcı et al., "The Unusual Effectiveness of Averaging
in GAN Training", ICLR 2019), saved beside them in every checkpoint as `<network>.ema.safetensors`.

The callback declares that variant as the weights inference uses (`weights_variant`), so `i2i translate`,
`evaluate`, `export` and `demo` use the average (`--raw` for the trained weights); report samples are drawn with it
(through `TrainingContext.evaluation_weights`). It reaches checkpoints only through `context.checkpoints`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor, nn

from i2i.api import Callback, I2IError, Option, TrainingContext, toml_value, trained_network


class EMA(Callback):
    """Keeps an exponential moving average of the generator weights; translate, evaluate and export use it."""

    name = "ema"
    #: the checkpoint files of the average (<network>.ema.safetensors), which inference uses by default
    weights_variant: ClassVar[str] = "ema"
    options = (
        Option("decay", float, 0.999, "at each update, average = decay * average + (1 - decay) * weights",
               min=0.0, max=1.0),
        Option("start_step", int, 0, "until this step the average is a copy of the weights; it averages after",
               min=0),
        Option("every", int, 1, "update the average every N steps", min=1),
    )

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """decay lies strictly between 0 and 1."""
        if not 0.0 < options["decay"] < 1.0:
            raise I2IError(f"decay = {toml_value(options['decay'])} must lie strictly between 0 and 1 (e.g. 0.999)")

    def __init__(self, *, decay: float = 0.999, start_step: int = 0, every: int = 1) -> None:
        self.decay, self.start_step, self.every = decay, start_step, every
        self.updates = 0  # averaging updates done
        # per generator (its name in context.networks): its floating-point parameters by state-dict key, detached
        # (sharing the training storage), and their averages under the same keys
        self.raw: dict[str, dict[str, Tensor]] = {}
        self.average: dict[str, dict[str, Tensor]] = {}

    # -- the average ------------------------------------------------------------------------------------------
    def track(self, context: TrainingContext) -> None:
        """Start averaging the method's generators (once), from a copy of their current weights."""
        if self.average:
            return
        names = {id(net): name for name, net in context.networks.items()}
        for generator in context.method.generators().values():
            generator = trained_network(generator)  # one network may serve several directions (StarGAN)
            if id(generator) not in names or names[id(generator)] in self.raw:
                continue
            name = names[id(generator)]
            # state-dict keys of the network itself, so the average loads into a fresh network even when the
            # trained one is compiled or channels_last (clone keeps the memory format, so updates stay elementwise)
            params = {key: value.detach() for key, value in context.networks[name].state_dict(keep_vars=True).items()
                      if isinstance(value, nn.Parameter) and value.is_floating_point()}
            self.raw[name] = params
            self.average[name] = {key: value.clone() for key, value in params.items()}
        if not self.average:
            raise I2IError(f"callback ema: method {context.recipe['method']['name']!r} names no generator among its"
                           f" networks ({', '.join(context.networks)}), so there is nothing to average")

    def _lists(self) -> tuple[list[Tensor], list[Tensor]]:
        """The raw parameters and their averages, in matching order."""
        raw = [t for name in self.raw for t in self.raw[name].values()]
        return raw, [self.average[name][key] for name in self.raw for key in self.raw[name]]

    def update(self, step: int) -> None:
        """After training step `step`: copy the weights (up to start_step) or move the average towards them."""
        raw, average = self._lists()
        if step <= self.start_step:
            torch._foreach_copy_(average, raw)
        elif (step - self.start_step) % self.every == 0:
            # average += (1 - decay) * (weights - average): on the device, no host sync
            torch._foreach_lerp_(average, raw, 1.0 - self.decay)
            self.updates += 1

    # -- events -----------------------------------------------------------------------------------------------
    def on_train_start(self, context: TrainingContext) -> None:
        """Start from the initial weights (a resumed run already holds the checkpoint's average)."""
        self.track(context)

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """Update the average after each step (order 0: before the samples are drawn and checkpoints written)."""
        self.update(context.step)

    @contextmanager
    def swap_in_for_evaluation(self, context: TrainingContext) -> Iterator[None]:
        """The averaged parameters in the generators while evaluating; the training ones copied back after."""
        if not self.average:
            yield
            return
        raw, average = self._lists()
        kept = [t.clone() for t in raw]
        torch._foreach_copy_(raw, average)
        try:
            yield
        finally:
            torch._foreach_copy_(raw, kept)

    def checkpoint_variants(self, context: TrainingContext) -> dict[str, dict[str, dict[str, Tensor]]]:
        """Each generator's average, as <network>.<weights_variant>.safetensors."""
        # Buffers (batch-norm running statistics, ...) are the trained network's, not averaged: they are statistics
        # of the activations its raw weights produce, and an average of them would match neither those weights
        # nor the averaged ones (a run that wants statistics of the average recomputes them on data).
        return {self.weights_variant: {name: {key: self.average[name].get(key, value)
                                              for key, value in context.networks[name].state_dict().items()}
                                       for name in self.average}}

    def on_checkpoint_load(self, context: TrainingContext, folder: Path) -> None:
        """Read the averages back from the checkpoint's variant files (checksums verified)."""
        self.track(context)
        saved = context.checkpoints.read_variant(folder, self.weights_variant)
        for name, average in self.average.items():
            if name not in saved:
                warnings.warn(f"{folder.name} holds no EMA average of {name}: it starts from the checkpoint's"
                              " weights")
                continue
            missing = [key for key in average
                       if key not in saved[name] or saved[name][key].shape != average[key].shape]
            if missing:
                raise I2IError(f"the {self.weights_variant!r} weights of {name} in {folder} do not fit it: key"
                               f" {missing[0]!r} is missing or of another shape")
            for key, tensor in average.items():
                tensor.copy_(saved[name][key])

    def state_dict(self) -> dict[str, Any]:
        """The number of averaging updates done (the averages themselves are the checkpoint's .ema files)."""
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.updates = int(state["updates"])
