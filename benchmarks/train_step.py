"""Time i2i's CycleGAN training step against a straightforward reference-style step, in the same process.

    python benchmarks/train_step.py --size 128 --batch 1 --precision bf16

Ours: the method and Stepper a Trainer builds from recipes/cyclegan.toml (as `i2i run` does), with the speed
options given here. Reference-style: the same four networks (built through the registry with the same options
and the same initial weights), called one at a time in the reference code's order, NCHW, fp32, eager, unfused
(single-tensor) Adam; written here from the reference's description. Both see the same fixed input batch.
Steps of the two are timed alternately and the median is reported. Run by hand; never from the tests.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import Peak, describe_device, sync  # noqa: E402

from i2i.recipe import load_recipe  # noqa: E402
from i2i.engine import Trainer  # noqa: E402


# -- the reference-style step ----------------------------------------------------------------------------
class ReferencePool:
    """History of generated images: fill to `size`, then return a stored one (and store the new) half the time."""

    def __init__(self, size: int) -> None:
        self.size, self.images = size, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.size - 1)
                out.append(self.images[i].clone())
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out, 0)


class ReferenceStep:
    """The reference CycleGAN step: forward, G update (GAN + cycle + identity), then D_A and D_B updates."""

    def __init__(self, nets: dict[str, nn.Module], lr: float, beta1: float, pool: int, lambda_cycle: float = 10.0,
                 lambda_identity: float = 0.5) -> None:
        self.G_A, self.G_B, self.D_A, self.D_B = nets["G_A"], nets["G_B"], nets["D_A"], nets["D_B"]
        self.opt_G = torch.optim.Adam([*self.G_A.parameters(), *self.G_B.parameters()], lr=lr,
                                      betas=(beta1, 0.999), foreach=False)
        self.opt_D = torch.optim.Adam([*self.D_A.parameters(), *self.D_B.parameters()], lr=lr,
                                      betas=(beta1, 0.999), foreach=False)
        self.pool_A, self.pool_B = ReferencePool(pool), ReferencePool(pool)
        self.lc, self.li = lambda_cycle, lambda_identity
        self.mse, self.l1 = nn.MSELoss(), nn.L1Loss()

    def gan(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.ones_like(pred) if real else torch.zeros_like(pred)  # the reference expands a buffer
        return self.mse(pred, target)

    @staticmethod
    def requires_grad(nets: list[nn.Module], flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad = flag

    def backward_D(self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        loss = (self.gan(net(real), True) + self.gan(net(fake.detach()), False)) * 0.5
        loss.backward()
        return loss

    def __call__(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        fake_B = self.G_A(real_A)
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(real_B)
        rec_B = self.G_A(fake_A)
        # G_A and G_B
        self.requires_grad([self.D_A, self.D_B], False)
        self.opt_G.zero_grad()
        idt_A = self.G_A(real_B)
        loss_idt_A = self.l1(idt_A, real_B) * self.lc * self.li
        idt_B = self.G_B(real_A)
        loss_idt_B = self.l1(idt_B, real_A) * self.lc * self.li
        loss_G_A = self.gan(self.D_A(fake_B), True)
        loss_G_B = self.gan(self.D_B(fake_A), True)
        loss_cycle_A = self.l1(rec_A, real_A) * self.lc
        loss_cycle_B = self.l1(rec_B, real_B) * self.lc
        loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        loss_G.backward()
        self.opt_G.step()
        # D_A and D_B
        self.requires_grad([self.D_A, self.D_B], True)
        self.opt_D.zero_grad()
        loss_D_A = self.backward_D(self.D_A, real_B, self.pool_B.query(fake_B))
        loss_D_B = self.backward_D(self.D_B, real_A, self.pool_A.query(fake_A))
        self.opt_D.step()
        return {"G": loss_G.detach(), "D_A": loss_D_A.detach(), "D_B": loss_D_B.detach()}


# -- measured device peak --------------------------------------------------------------------------------
def conv_peak(device: torch.device, dtype: torch.dtype | None, shape: tuple[int, int, int], repeats: int) -> float:
    """GFLOP/s of a 3x3 Conv2d forward+backward (channels_last) at (batch, channels, size)."""
    n, c, s = shape
    conv = nn.Conv2d(c, c, 3, padding=1).to(device, memory_format=torch.channels_last)
    x = torch.randn(n, c, s, s, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
    flops = 3 * 2 * n * c * c * 9 * s * s  # forward, grad input, grad weight
    ctx = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else (lambda: torch.autocast(device.type,
                                                                                                    enabled=False))
    times = []
    for i in range(repeats + 2):
        sync(device)
        t0 = time.perf_counter()
        with ctx():
            y = conv(x)
        y.float().sum().backward()
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 2):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


# -- main ------------------------------------------------------------------------------------------------
def build(args: argparse.Namespace, run_dir: Path) -> Trainer:
    overrides = [
        "data.name=synthetic", f"data.count={max(4, args.batch)}", f"data.load_size={args.size}",
        f"data.crop_size={args.size}", "data.workers=0", f"data.batch_size={args.batch}",
        f"run.device={args.device}", f"run.precision={args.precision}",
        f"run.channels_last={str(args.channels_last).lower()}", f"run.compile={str(args.compile).lower()}",
        f"optim.implementation={args.optim}", "callback.samples.images=0",
        f"method.batch_calls={str(not args.no_batch_calls).lower()}", f"run.capture={str(args.capture).lower()}",
    ] + ([f"generator.blocks={args.blocks}"] if args.blocks else [])
    recipe = load_recipe(ROOT / "recipes" / f"{args.recipe}.toml", overrides)
    return Trainer(recipe, run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128, choices=(64, 128, 256))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each first")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--optim", default="auto", choices=("auto", "fused", "foreach", "single"),
                        help="optim.implementation for ours")
    parser.add_argument("--no-batch-calls", action="store_true", help="method.batch_calls = false for ours")
    parser.add_argument("--blocks", type=int, default=0, help="ResNet blocks (default: the recipe's; the paper's"
                        " 256 px model has 9)")
    parser.add_argument("--recipe", default="cyclegan", choices=("cyclegan", "cyclegan_fast"),
                        help="ours: recipes/NAME.toml (the fast one adds DiffAugment, EMA is a callback outside the"
                        " step)")
    parser.add_argument("--capture", action="store_true", help="run.capture = true for ours (the step recorded as a"
                        " CUDA graph; capture-ready parts run eagerly on the CPU)")
    parser.add_argument("--no-reference", action="store_true", help="time ours only")
    parser.add_argument("--no-peak", action="store_true", help="skip the device peak microbenchmark")
    args = parser.parse_args()

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(args, Path(tmp) / "run")  # builds everything, writes nothing
    method, stepper = trainer.method, trainer.stepper
    nets = trainer.networks
    # the reference's own copies of the same networks: same class, options and initial weights, NCHW, fp32
    ref_nets = {}
    for name, net in nets.items():
        kind, part, options = trainer.builder.built[id(net)]
        ref = trainer.registry.info(kind, part).cls(**options).to(device)
        ref.load_state_dict({k: v.contiguous() for k, v in net.state_dict().items()})
        ref_nets[name] = ref
    reference = None
    if not args.no_reference:
        reference = ReferenceStep(ref_nets, trainer.recipe["optim"]["lr"], trainer.recipe["optim"]["beta1"],
                                  trainer.recipe["buffer"]["size"])

    gen = torch.Generator().manual_seed(0)
    A = torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 2 - 1
    B = torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 2 - 1
    batch = {"A": A, "B": B}
    ref_A, ref_B = A.to(device), B.to(device)

    def ours() -> None:
        trainer.train_step(trainer.to_device(batch))

    def ours_eager() -> None:  # for counting FLOPs: a replayed graph dispatches no torch operation
        method.step(trainer.to_device(batch), stepper)
        stepper.end_of_step()

    def theirs() -> None:
        reference(ref_A, ref_B)

    print(f"device: {describe_device(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    generator = trainer.recipe["generator"]
    print(f"size {args.size} px, batch {args.batch}, ours: recipes/{args.recipe}.toml, precision {args.precision},"
          f" channels_last {args.channels_last}, compile {args.compile}, capture {args.capture}, optim {args.optim},"
          f" batch_calls {not args.no_batch_calls}; generator resnet {generator['blocks']} blocks x"
          f" {generator['channels']}, discriminator patchgan; reference-style: the same networks, fp32, NCHW,"
          " eager, unfused Adam, calls one at a time")

    peak = Peak(device)
    runners = [("ours", ours)] + ([("reference", theirs)] if reference else [])
    for name, fn in runners:
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            fn()
        sync(device)
        print(f"  {name}: {args.warmup} warm-up step(s) in {time.perf_counter() - t0:.2f} s")
    times = {name: [] for name, _ in runners}
    memory = {}
    for name, fn in runners:
        peak.reset()
        fn()
        sync(device)
        memory[name] = peak.read()
    for i in range(args.steps):  # alternate, so drift in the machine's speed hits both alike
        for name, fn in runners:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)

    with FlopCounterMode(display=False) as counter:
        ours_eager()
    flops = counter.get_total_flops()
    if reference:
        with FlopCounterMode(display=False) as counter:
            theirs()
        ref_flops = counter.get_total_flops()

    peaks = {}
    if not args.no_peak:
        shape = (2 * args.batch, 256, args.size // 4)  # a residual-block conv of the batched generator call
        reps = 5 if device.type == "cpu" else 50
        peaks["fp32"] = conv_peak(device, None, shape, reps)
        peaks["bf16"] = conv_peak(device, torch.bfloat16, shape, reps)
        if device.type == "cuda":
            peaks["bf16 matmul"] = matmul_peak(device, torch.bfloat16, 8192, 20)
            peaks["fp16"] = conv_peak(device, torch.float16, shape, reps)

    print(f"{'step':<10} {'s/step (median)':>16} {'min':>8} {'max':>8} {'GFLOP/step':>11} {'GFLOP/s':>9}"
          f" {'peak memory':>24}")
    for name, _ in runners:
        med = statistics.median(times[name])
        fl = flops if name == "ours" else ref_flops
        print(f"{name:<10} {med:>16.3f} {min(times[name]):>8.3f} {max(times[name]):>8.3f} {fl / 1e9:>11.1f}"
              f" {fl / med / 1e9:>9.1f} {memory[name]:>24}")
    if reference:
        ratio = statistics.median(times["reference"]) / statistics.median(times["ours"])
        print(f"speed-up (reference s/step / ours s/step): {ratio:.2f}x")
    if peaks:
        conv = f"{shape[0]}x{shape[1]}x{shape[2]}x{shape[2]} 3x3 conv fwd+bwd, channels_last"
        print("measured device peak (" + conv + "): "
              + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
        key = "fp32" if args.precision == "fp32" else args.precision
        print(f"ours reaches {flops / statistics.median(times['ours']) / 1e9 / peaks[key] * 100:.0f}% of the"
              f" {key} conv peak")
    print(f"memory: {peak.how}")


if __name__ == "__main__":
    main()
