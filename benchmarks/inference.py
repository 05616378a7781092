"""Images per second of the CycleGAN ResNet-9 generator at 256 px (what `i2i translate` runs per image).

    python benchmarks/inference.py [--batches 1 4] [--repeats 5]

Times `i2i.tools.generators.run_generator` (pad to the size multiple, forward under inference mode, crop) on a
randomly initialised resnet generator (9 blocks x 64, the paper's 256 px model), fp32 and bf16 autocast, on
the CPU. File decoding and encoding are not included (see data_pipeline.py for decoding). Run by hand.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import describe_device, sync  # noqa: E402

from i2i.tools.generators import run_generator  # noqa: E402
from i2i.contract.registry import default_registry  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    registry = default_registry()
    options = registry.resolve_options("generator", "resnet", {}, "generator")
    net = registry.info("generator", "resnet").cls(**options).to(device).eval()
    print(f"device: {describe_device(device)}; torch {torch.__version__}; resnet generator 9 blocks x 64,"
          f" {args.size} px")
    for batch in args.batches:
        x = torch.rand(batch, 3, args.size, args.size, device=device) * 2 - 1
        for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            def once():
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    run_generator(net, x)
            once()
            times = []
            for _ in range(args.repeats):
                sync(device)
                t0 = time.perf_counter()
                once()
                sync(device)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            print(f"batch {batch} {precision}: {batch / med:7.2f} images/s ({med:.3f} s per batch, median of"
                  f" {args.repeats})")


if __name__ == "__main__":
    main()
