"""Runs that share a machine (issue 30): quick starts alone, two side by side, and a sweep of four.

Every figure is the wall-clock of `i2i run recipes/quickstart.toml` processes (or `i2i sweep`) measured in this run:

- one run alone (the baseline), and alone with OMP_WAIT_POLICY=PASSIVE (what a lone run would pay for never
  spinning);
- two runs started together, as i2i does now (each takes half the CPUs: i2i.engine.sharing), and as it did before
  (`--set run.threads=N`, N = all CPUs, each: torch's default);
- four runs one after another, against `i2i sweep --jobs 2` of the same four.

    python benchmarks/sharing.py                # --steps 200 --repeats 1 --jobs 2
    python benchmarks/sharing.py --jobs 4 --set run.device=cuda --set run.capture=true   # four runs on one GPU

Prints seconds and ratios against the lone run, with the CPU. The registration folder is a temporary one of its
own ($I2I_CPU_SHARE), so other i2i runs on the machine do not change the shares (but they do slow everything:
run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe_device  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "recipes" / "quickstart.toml"


SETS: list[str] = []  # --set KEY=VALUE of the command line, for every run


def run_args(steps: int, out: Path, *extra: str) -> list[str]:
    """`i2i run` of the quick start for `steps` steps into `out` (no progress bar, one final checkpoint)."""
    return [sys.executable, "-m", "i2i", "run", str(QUICK), "--set", f"train.max_steps={steps}",
            "--set", "callback.progress.enabled=false", "--set", "callback.checkpoints.every=0", *SETS, *extra,
            "--out", str(out)]


def together(commands: list[list[str]], env: dict[str, str]) -> list[float]:
    """Start `commands` at once; the wall-clock of each (seconds)."""
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for cmd in commands]
    times = [0.0] * len(procs)
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                times[i] = time.perf_counter() - start
                pending.discard(i)
                if procs[i].returncode:
                    raise SystemExit(f"failed: {' '.join(commands[i])}\n{procs[i].stderr.read()}")
        time.sleep(0.05)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="steps of each quick start")
    parser.add_argument("--repeats", type=int, default=1, help="measure each case this many times (best kept)")
    parser.add_argument("--jobs", type=int, default=2, help="the sweep's --jobs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override for"
                        " every run (e.g. run.device=cuda)")
    args = parser.parse_args()
    SETS.extend(arg for item in args.set for arg in ("--set", item))
    cpus = len(os.sched_getaffinity(0))
    print(describe_device(torch.device("cpu")), f"| {cpus} CPUs | torch {torch.__version__}"
          f" | load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        env["I2I_CPU_SHARE"] = str(tmp / "share")
        counter = iter(range(10**6))

        def out() -> Path:
            return tmp / f"run{next(counter)}"

        def best(measure) -> list[float]:
            results = [measure() for _ in range(args.repeats)]
            return min(results, key=max)

        cases: dict[str, float] = {}
        cases["one run alone"] = best(lambda: together([run_args(args.steps, out())], env))[0]
        print(f"  one run alone: {cases['one run alone']:.1f} s", flush=True)
        passive = {**env, "OMP_WAIT_POLICY": "PASSIVE"}
        cases["alone, OMP_WAIT_POLICY=PASSIVE"] = best(lambda: together([run_args(args.steps, out())], passive))[0]
        cases["two side by side (shared threads)"] = max(best(
            lambda: together([run_args(args.steps, out()), run_args(args.steps, out())], env)))
        fixed = ["--set", f"run.threads={cpus}"]
        cases[f"two side by side, run.threads={cpus} each (before)"] = max(best(
            lambda: together([run_args(args.steps, out(), *fixed), run_args(args.steps, out(), *fixed)], env)))
        sequential = best(lambda: [sum(together([run_args(args.steps, out())], env)[0] for _ in range(4))])[0]
        cases["four one after another"] = sequential
        sweep = [sys.executable, "-m", "i2i", "sweep", str(QUICK), "--set", f"train.max_steps={args.steps}",
                 "--set", "callback.progress.enabled=false", "--set", "callback.checkpoints.every=0",
                 *SETS, "--grid", "run.seed=0,1,2,3", "--jobs", str(args.jobs)]
        sweep_case = f"sweep of four, --jobs {args.jobs} (with its comparison page)"
        cases[sweep_case] = best(
            lambda: together([[*sweep, "--out", str(out())]], env))[0]

    alone = cases["one run alone"]
    print(f"\n{'case':<52} {'s':>7} {'x alone':>8}")
    for name, seconds in cases.items():
        print(f"{name:<52} {seconds:7.1f} {seconds / alone:8.2f}")
    print(f"\nsweep / sequential: {cases[sweep_case] / sequential:.2f}")


if __name__ == "__main__":
    main()
