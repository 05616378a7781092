"""Driven by tests/test_distributed.py, under torchrun or as one process: the i2i library used from Python.

    python distributed_probe.py train OUT RECIPE [--set K=V ...]   trains, then writes OUT/rank-R.safetensors
                                                                   (this process's weights after the run)
    python distributed_probe.py grads OUT RECIPE [--set K=V ...]   runs one training step on the first batch,
                                                                   then writes OUT/grads-R.safetensors
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from i2i.recipe import load_recipe
from i2i.engine import Trainer


def main() -> None:
    mode, out, recipe_path, *rest = sys.argv[1:]
    overrides = [value for flag, value in zip(rest[::2], rest[1::2]) if flag == "--set"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    trainer = Trainer(load_recipe(Path(recipe_path), overrides), out / "run")
    if mode == "train":
        trainer.run()
        tensors = {f"{name}.{key}": value.detach().cpu().contiguous()
                   for name, net in trainer.networks.items() for key, value in net.state_dict().items()}
        save_file(tensors, str(out / f"rank-{rank}.safetensors"))
        return
    trainer.data.sampler.set_epoch(0)
    batch = next(iter(trainer.data.loader))
    trainer.method.step(trainer.to_device(batch), trainer.stepper)
    # after the step each .grad holds this step's (averaged) gradient: G's backward never reaches D, and D's
    # loss sees detached fakes, so neither update overwrote the other's
    grads = {f"{name}.{key}": param.grad.detach().cpu().contiguous()
             for name, net in trainer.networks.items() for key, param in net.named_parameters()
             if param.grad is not None}
    save_file(grads, str(out / f"grads-{rank}.safetensors"))
    trainer.distributed.stop()


if __name__ == "__main__":
    main()
