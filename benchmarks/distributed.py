"""Scaling of a torchrun run: global images/s with 1, 2, ... processes, and the efficiency against 1 process.

    python benchmarks/distributed.py --processes 1 2 --device cpu --size 64
    python benchmarks/distributed.py --processes 1 2 4 8 --device cuda --size 256

Each setting launches `torchrun --standalone --nproc_per_node=N` on this file; every process builds the Trainer
that `i2i run recipes/cyclegan.toml` builds (synthetic data, batch 1 per process) and times training steps
(method step + gradient averaging), after warm-up, between barriers. Efficiency = images/s with N processes /
(N x images/s with 1). On a CPU the processes share the machine's cores (torch threads = cores / N), so CPU
figures show the cost of the communication, not a speed-up; on GPUs each process has its own device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(args: argparse.Namespace) -> None:
    import torch

    from i2i.recipe import load_recipe
    from i2i.engine import Trainer

    overrides = ["data.name=synthetic", f"data.count={64 * args.processes}", f"data.load_size={args.size}",
                 f"data.crop_size={args.size}", "data.workers=0", "data.batch_size=1", f"run.device={args.device}",
                 f"run.precision={args.precision}", "callback.samples.images=0", f"generator.blocks={args.blocks}"]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(load_recipe(ROOT / "recipes" / "cyclegan.toml", overrides), Path(tmp) / "run")
    dist = trainer.distributed
    trainer.data.sampler.set_epoch(0)
    batches = iter(trainer.data.loader)

    def step() -> None:
        trainer.method.step(trainer.to_device(next(batches)), trainer.stepper)
        trainer.stepper.end_of_step()

    for _ in range(args.warmup):
        step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    dist.barrier("timing")
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    dist.barrier("timing")
    elapsed = time.perf_counter() - start
    if dist.is_main:
        print("RESULT " + json.dumps({"processes": dist.world_size, "s_per_step": elapsed / args.steps,
                                      "images_per_s": args.steps * dist.world_size / elapsed,
                                      "threads": torch.get_num_threads(), "device": str(trainer.device)}))
    dist.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.processes = int(os.environ.get("WORLD_SIZE", "1"))
        return worker(args)

    cores = os.cpu_count() or 1
    results = []
    for n in args.processes:
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // n))} if args.device == "cpu" else dict(os.environ)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", __file__,
               "--worker", "--device", args.device, "--precision", args.precision, "--size", str(args.size),
               "--blocks", str(args.blocks), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.exit(f"{n} processes failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(lines[0][len("RESULT "):]))

    print(f"ResNet-{args.blocks} x 64 / PatchGAN x 64, {args.size} px, batch 1 per process, {args.precision},"
          f" {args.device}; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'processes':>9} {'threads':>8} {'s/step':>8} {'images/s':>9} {'speed-up':>9} {'efficiency':>11}")
    base = results[0]["images_per_s"] / results[0]["processes"]
    for r in results:
        speedup = r["images_per_s"] / results[0]["images_per_s"]
        print(f"{r['processes']:>9} {r['threads']:>8} {r['s_per_step']:>8.3f} {r['images_per_s']:>9.2f}"
              f" {speedup:>8.2f}x {r['images_per_s'] / (base * r['processes']) * 100:>10.0f}%")


if __name__ == "__main__":
    main()
