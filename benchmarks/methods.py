"""Time the training step of CUT (and FastCUT) against CycleGAN's, in the same process, steps alternated.

    python benchmarks/methods.py --size 128 --steps 5

Each method's step is the one a Trainer builds from its shipped recipe (recipes/cyclegan.toml, recipes/cut.toml,
recipes/fastcut.toml), as `i2i run` does, on the same fixed synthetic batch at --size px: 9-block ResNet
generator(s) x 64 and a 70x70 PatchGAN x 64 in all three; CUT with the paper's 256 patches on layers 0,4,8,12,16.
Steps alternate (cyclegan, cut, fastcut, cyclegan, ...) so drift in a shared machine's speed hits all alike; the
median s/step is reported.

Memory, two figures per method:
- "step peak": in the timing process, the peak RSS during one step minus the RSS just before it, after
  malloc_trim hands freed heap memory back to the system (CPU; on CUDA,
  torch.cuda.max_memory_allocated minus the allocated memory before the step): activations, gradients and the
  optimizer's working memory, not the weights;
- "process peak": a fresh process (this script with --only METHOD) that builds and trains that method alone
  for --warmup + 2 steps: its peak RSS (VmHWM), weights, optimizer states, Python and torch included. The
  processes run one after the other, in the order above.
Run by hand; never from the tests.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import describe_device, sync  # noqa: E402

from i2i.recipe import load_recipe  # noqa: E402
from i2i.engine import Trainer  # noqa: E402

RECIPES = {"cyclegan": "cyclegan.toml", "cut": "cut.toml", "fastcut": "fastcut.toml"}
_LIBC = ctypes.CDLL("libc.so.6")  # glibc (Linux), as /proc/self is


def _status(field: str) -> int:
    """A /proc/self/status figure in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def build(method: str, args: argparse.Namespace, run_dir: Path) -> Trainer:
    """The Trainer `i2i run` would build from the method's recipe, on synthetic data at --size px."""
    overrides = [
        "data.name=synthetic", f"data.count={max(4, args.batch)}", f"data.load_size={args.size}",
        f"data.crop_size={args.size}", "data.workers=0", f"data.batch_size={args.batch}",
        f"run.device={args.device}", "callback.samples.images=0", f"generator.blocks={args.blocks}",
    ]
    return Trainer(load_recipe(ROOT / "recipes" / RECIPES[method], overrides), run_dir)


def fixed_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"A": torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 2 - 1,
            "B": torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 2 - 1}


def stepper_of(trainer: Trainer, batch: dict[str, torch.Tensor]):
    device = trainer.device

    def step() -> None:
        trainer.method.step(trainer.to_device(batch), trainer.stepper)
        trainer.stepper.end_of_step()
    return step


class StepPeak:
    """Memory a step adds at its peak over what was held before it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def measure(self, fn) -> float:
        """MiB: peak during fn() minus the level before it."""
        if self.device.type == "cuda":
            sync(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            fn()
            sync(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - before) / 2**20
        _LIBC.malloc_trim(0)  # hand freed heap memory back, so that "before" is what is really held
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _status("VmRSS")
        fn()
        return (_status("VmHWM") - before) / 1024


def only(method: str, args: argparse.Namespace) -> None:
    """Build and train one method alone; print its process peak RSS as JSON (the --only child)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(method, args, Path(tmp) / "run")
    built = _status("VmRSS")
    step = stepper_of(trainer, fixed_batch(args))
    for _ in range(args.warmup + 2):
        step()
    cuda = torch.cuda.max_memory_allocated() / 2**20 if trainer.device.type == "cuda" else None
    print(json.dumps({"built_mib": built / 1024, "peak_mib": _status("VmHWM") / 1024, "cuda_peak_mib": cuda}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each first")
    parser.add_argument("--blocks", type=int, default=9, help="ResNet blocks (9 as in the recipes)")
    parser.add_argument("--methods", default="cyclegan,cut,fastcut", help="comma-separated, of " + ", ".join(RECIPES))
    parser.add_argument("--no-process-peak", action="store_true", help="skip the one-process-per-method peaks")
    parser.add_argument("--only", choices=tuple(RECIPES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        only(args.only, args)
        return

    methods = [m.strip() for m in args.methods.split(",")]
    device = torch.device(args.device)
    batch = fixed_batch(args)
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            torch.manual_seed(0)
            steps[method] = stepper_of(build(method, args, Path(tmp) / method), batch)  # builds, writes nothing
    print(f"device: {describe_device(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"size {args.size} px, batch {args.batch}, fp32; resnet {args.blocks} blocks x 64, patchgan 3 layers x 64;"
          f" {args.warmup} warm-up + {args.steps} timed steps each, alternated ({', '.join(methods)})")
    for method in methods:
        for _ in range(args.warmup):
            steps[method]()
    peak = StepPeak(device)
    step_peak = {method: peak.measure(steps[method]) for method in methods}
    times = {method: [] for method in methods}
    for _ in range(args.steps):
        for method in methods:
            sync(device)
            t0 = time.perf_counter()
            steps[method]()
            sync(device)
            times[method].append(time.perf_counter() - t0)

    process = {}
    if not args.no_process_peak:
        for method in methods:
            cmd = [sys.executable, __file__, "--only", method, "--size", str(args.size), "--batch", str(args.batch),
                   "--device", args.device, "--warmup", str(args.warmup), "--blocks", str(args.blocks)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            process[method] = json.loads(out.strip().splitlines()[-1])

    print(f"{'method':<9} {'s/step (median)':>16} {'min':>7} {'max':>7} {'step peak MiB':>14}"
          f" {'process peak MiB':>17} {'after build MiB':>16}")
    for method in methods:
        found = process.get(method, {})
        peak_mib = found.get("cuda_peak_mib") or found.get("peak_mib")
        print(f"{method:<9} {statistics.median(times[method]):>16.3f} {min(times[method]):>7.3f}"
              f" {max(times[method]):>7.3f} {step_peak[method]:>14.0f}"
              f" {round(peak_mib) if peak_mib else '-':>17} {round(found['built_mib']) if found else '-':>16}")
    if "cyclegan" in times:
        base = statistics.median(times["cyclegan"])
        for method in methods:
            if method != "cyclegan":
                print(f"{method}: {statistics.median(times[method]) / base:.2f}x cyclegan's s/step")
    how = ("CUDA max_memory_allocated" if device.type == "cuda" else "RSS (VmRSS/VmHWM via /proc/self, VmHWM reset"
           " through /proc/self/clear_refs)")
    print(f"memory: {how}; process peak from a fresh process per method ({args.warmup} + 2 steps)")


if __name__ == "__main__":
    main()
