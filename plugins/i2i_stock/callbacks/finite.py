"""Stop on a non-finite loss, naming the loss and the first step it went bad."""

from __future__ import annotations

import torch
from torch import Tensor

from i2i.api import Callback, I2IError, TrainingContext


class FiniteLosses(Callback):
    """Stops training when a loss becomes NaN or infinite, naming it and the step; the last good checkpoint stays."""

    name = "finite"
    order = 250  # after the checkpoint requests (checkpoints 200, yours default to 0): no checkpoint of a bad step
    default = True

    def __init__(self) -> None:
        self.first_bad: dict[str, tuple[Tensor, Tensor]] = {}  # loss -> (first bad step or -1, its value)

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """Remember, on the device and without a sync, the first bad step of each loss; check (one sync) at log
        points and whenever a checkpoint is written at the end of this step (context.control.checkpoint_due:
        asked for by any callback before this one, a stop, Ctrl-C or the last step)."""
        for name, value in losses.items():
            first, seen = self.first_bad.get(name, (None, None))
            new = ~torch.isfinite(value)
            if first is None:
                self.first_bad[name] = (torch.where(new, context.step, -1), value.float().clone())
            else:
                new = new & (first < 0)
                self.first_bad[name] = (torch.where(new, context.step, first), torch.where(new, value.float(), seen))
        log_point = context.due(context.recipe["train"]["log_every"])
        check = log_point or context.control.checkpoint_due
        if not log_point and context.distributed.active:
            # the check gathers over every process, so all must decide alike; a checkpoint may be asked for on one
            # process alone (validation measures on rank 0), hence one flag agreed on (log points are alike anyway)
            check = context.distributed.any(check)
        if check:
            self.check(context)

    def check(self, context: TrainingContext) -> None:
        """Raise naming the loss and step that first went non-finite (on every process, the first of any)."""
        found = [(int(first), name, float(value)) for name, (first, value) in self.first_bad.items()]
        if context.distributed.active:  # every process stops together, on the first bad loss of any of them
            found = [item for items in context.distributed.gather(found) for item in items]
        bad = sorted(item for item in found if item[0] >= 0)
        if bad:
            step, name, value = bad[0]
            kept = context.folder.checkpoints()
            last = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was written"
            raise I2IError(f"loss {name} became {value} at step {step}; training stopped and {last}"
                           " (try a lower optim.lr, or run.precision = \"fp32\")")
