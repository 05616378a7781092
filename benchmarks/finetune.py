"""Fine-tuning against training from scratch (issue 29's measured item), pix2pix on the maps data at CPU scale.

    python benchmarks/finetune.py                   # 1200 pretraining steps, then 300 + 300 steps per seed, 64 px
    python benchmarks/finetune.py --seeds 1 --channels 32 --out runs/ft32

Protocol, on a pix2pix-style paired folder (`--data`, default ../shared/data/maps: A|B JPEGs, aerial | map):
- `train/`'s files sorted; the first half and the second half become two training sets, each a folder of
  symlinks (`HALF/train/`) under a temporary directory, so no image is copied and the halves share no photo.
- three `i2i run recipes/pix2pix.toml` runs through the CLI, scaled down by --set: `--load`/`--size` px
  (resize, then random crop), U-Net with log2(size) downsamplings and `--channels` filters, PatchGAN with
  `--channels`, batch 1, data.workers 0, train.decay_epochs 0 (so the learning rate stays at its base 2e-4 for
  every step: the linear schedule has no decay phase, and train.max_steps ends the run):
    (a) pre:     `--steps-pre` steps on half 1, run.seed 0;
    (b) fine:    `--steps` steps on half 2 with --set init.from=(a): G and D start from (a)'s last checkpoint
                 (the optimizers start afresh);
    (c) scratch: `--steps` steps on half 2 from the recipe's random initialization.
  (b) and (c) run with the same run.seed, hence the same data order and crops; the pair is repeated for run.seed
  0..N-1 (`--seeds`, default 3: one GAN run's score moves with its seed).
- each run scored with `i2i evaluate RUN --data DATA --split val`: the AtoB generator (aerial -> map) on val/,
  each pair resized to --load px and centre-cropped to --size px, as in training without augmentation. L1 is the
  mean absolute error in [0, 1] units (README, "Evaluate a run"); PSNR and SSIM come with it.
- for scale, the constant baseline: the per-pixel median of half 2's training maps (the constant image with the
  least L1 on them), scored on the same val/ crops in the same units; a generator below it draws more than the
  average background.
- wall time: the whole `i2i run` process (start-up included), and the training loop's own clock (the last
  "elapsed" of metrics.jsonl).

Prints the CPU, torch, the machine's load average before and after, each run's figures, and for each seed
L1(b), L1(c) and L1(b) / L1(c). Results go to `--out` (default runs/finetune): the run folders, logs/,
results.json and results.md. Run by hand; never from the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import describe_device  # noqa: E402
from quality_maps import elapsed_by_step, halves  # noqa: E402

from i2i.data.images import list_images, transform_image  # noqa: E402
from i2i.storage.rundir import RunFolder  # noqa: E402

RECIPE = "recipes/pix2pix.toml"


@dataclass
class Outcome:
    """One training run and its scores on val/."""

    name: str
    data: str  # "half 1" or "half 2"
    steps: int
    seed: int
    start: str  # "random" or what init.from loaded
    wall_s: float  # the whole i2i run process
    loop_s: float  # the training loop's clock (metrics.jsonl)
    l1: float = float("nan")
    psnr: float = float("nan")
    ssim: float = float("nan")


def split_halves(data: Path, into: Path) -> tuple[Path, Path, int]:
    """Two aligned roots under `into`, each train/ a folder of symlinks to one half of data/train's sorted files."""
    files = sorted(list_images(data / "train"))
    if len(files) < 2:
        raise SystemExit(f"{data / 'train'} holds {len(files)} images; need A|B pairs (pix2pix's aligned format)")
    middle = len(files) // 2
    roots = []
    for name, chosen in (("half1", files[:middle]), ("half2", files[middle:])):
        folder = into / name / "train"
        folder.mkdir(parents=True)
        for file in chosen:
            (folder / file.name).symlink_to(file.resolve())
        roots.append(into / name)
    return roots[0], roots[1], middle


def run_i2i(command: list[str], log: Path, label: str) -> float:
    """Run `python -m i2i COMMAND`, echoing its lines prefixed by `label` and saving them to `log`; wall seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as stream, subprocess.Popen([sys.executable, "-m", "i2i", *command], cwd=ROOT, text=True,
                                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as child:
        for line in child.stdout:
            stream.write(line)
            if line.strip() and "━" not in line:  # progress bars repaint; the step lines are the progress
                print(f"  [{label}] {line.rstrip()}", flush=True)
    wall = time.perf_counter() - start
    if child.returncode:
        raise SystemExit(f"[{label}] `i2i {' '.join(command)}` failed (exit {child.returncode}); see {log}")
    return wall


def train(name: str, root: Path, steps: int, seed: int, args: argparse.Namespace, extra: list[str]) -> Outcome:
    """One pix2pix run under the protocol's settings into OUT/NAME."""
    out = args.out / name
    downs = args.size.bit_length() - 1
    sets = [f"data.root={root}", f"data.load_size={args.load}", f"data.crop_size={args.size}",
            "data.batch_size=1", "data.workers=0", f"generator.downs={downs}",
            f"generator.channels={args.channels}", f"discriminator.channels={args.channels}",
            f"train.max_steps={steps}", "train.decay_epochs=0", f"train.log_every={args.log_every}",
            f"run.seed={seed}", "run.device=cpu", *args.set, *extra]
    command = ["run", RECIPE, "--out", str(out), "--overwrite", *[x for s in sets for x in ("--set", s)]]
    print(f"[{name}] {steps} steps on {root.name}: i2i {' '.join(command)}", flush=True)
    wall = run_i2i(command, args.out / "logs" / f"{name}.log", name)
    times = elapsed_by_step(out)
    loop = times[max(times)] if times else float("nan")
    started = RunFolder(out).read_starting_weights()
    start = ", ".join(f"{net}: {e['source']} step {e['step']} ({e['loaded']}/{e['tensors']} tensors)"
                      for net, e in sorted(started.items())) or "random"
    print(f"[{name}] done: {wall:.1f} s wall ({loop:.1f} s in the loop); started from {start}", flush=True)
    return Outcome(name, root.name.replace("half", "half "), steps, seed, start, wall, loop)


def evaluate(outcome: Outcome, args: argparse.Namespace) -> None:
    """Score a run's last checkpoint on DATA/val with `i2i evaluate`; fills in L1, PSNR and SSIM."""
    run = args.out / outcome.name
    command = ["evaluate", str(run), "--data", str(args.data), "--split", "val", "--device", "cpu"]
    run_i2i(command, args.out / "logs" / f"{outcome.name}.evaluate.log", f"{outcome.name} eval")
    scores = json.loads(RunFolder(run).evaluation_file.read_text())["metrics"]["AtoB"]
    outcome.l1, outcome.psnr, outcome.ssim = scores["l1"], scores["psnr"], scores["ssim"]


def median_map_l1(train_files: list[Path], val: Path, load: int, size: int) -> float:
    """L1 on `val`'s maps (resized to `load`, centre `size` crop, [0, 1]) of the per-pixel median of the training maps."""
    def maps(files: list[Path]) -> torch.Tensor:
        return torch.stack([(transform_image(halves(f)[1], load, size, augment=False).clamp(-1, 1) + 1) / 2
                            for f in files])

    guess = maps(train_files).median(0).values
    return (maps(list_images(val)) - guess).abs().mean().item()


def table(outcomes: list[Outcome]) -> str:
    """A markdown table of every run."""
    lines = ["| run | data | steps | seed | started from | wall s | loop s | L1 (val) | PSNR dB | SSIM |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for o in outcomes:
        lines.append(f"| {o.name} | {o.data} | {o.steps} | {o.seed} | {o.start} | {o.wall_s:.1f} | {o.loop_s:.1f}"
                     f" | {o.l1:.4f} | {o.psnr:.2f} | {o.ssim:.4f} |")
    return "\n".join(lines)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine slows every run)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "maps",
                        help="A|B pairs in train/ and val/")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "finetune")
    parser.add_argument("--steps-pre", type=int, default=1200, help="pretraining steps on half 1 (run a)")
    parser.add_argument("--steps", type=int, default=300, help="steps on half 2, fine-tuned (b) and from scratch (c)")
    parser.add_argument("--size", type=int, default=64, help="crop size; a power of two (the U-Net's depth)")
    parser.add_argument("--load", type=int, default=0, help="resize before the crop (default: size * 9 / 8)")
    parser.add_argument("--channels", type=int, default=16, help="generator and discriminator filters")
    parser.add_argument("--seeds", type=int, default=3, help="(b) and (c) for run.seed 0..N-1")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every run, e.g. loss.adversarial.weight=0 (L1 alone)")
    args = parser.parse_args()
    if args.size < 2 or args.size & (args.size - 1):
        raise SystemExit(f"--size {args.size}: use a power of two (the U-Net halves it down to 1 px)")
    args.load = args.load or args.size * 9 // 8
    for split in ("train", "val"):
        if not (args.data / split).is_dir():
            raise SystemExit(f"--data {args.data} has no {split}/ folder: pass a pix2pix-style A|B folder (maps)")
    cpu = describe_device(torch.device("cpu"))
    print(f"{cpu}; torch {torch.__version__}; load average {load_average()}", flush=True)
    begin = time.perf_counter()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="i2i-finetune-") as temp:
        half1, half2, middle = split_halves(args.data, Path(temp))
        print(f"halves of {args.data / 'train'}: {middle} and {len(list_images(half2 / 'train'))} files"
              f" (symlinks under {temp})", flush=True)
        baseline = median_map_l1(sorted(list_images(half2 / "train")), args.data / "val", args.load, args.size)
        print(f"constant baseline (per-pixel median of half 2's maps): L1 {baseline:.4f} on val/", flush=True)
        pre = train("pre", half1, args.steps_pre, 0, args, [])
        outcomes.append(pre)
        for seed in range(args.seeds):
            tag = f"-seed{seed}" if args.seeds > 1 else ""
            outcomes.append(train(f"fine{tag}", half2, args.steps, seed, args,
                                  [f"init.from={args.out / pre.name}"]))
            outcomes.append(train(f"scratch{tag}", half2, args.steps, seed, args, []))
        for outcome in outcomes:
            evaluate(outcome, args)
    text = table(outcomes)
    pairs = [(f, s) for f, s in zip(outcomes[1::2], outcomes[2::2])]
    summary = [f"seed {f.seed}: L1 fine-tuned {f.l1:.4f}, from scratch {s.l1:.4f}, ratio {f.l1 / s.l1:.3f}"
               f" ({'fine-tuned lower' if f.l1 < s.l1 else 'fine-tuned NOT lower'});"
               f" wall {f.wall_s:.1f} s vs {s.wall_s:.1f} s" for f, s in pairs]
    print(f"\n{cpu}; torch {torch.__version__}; load average after {load_average()};"
          f" total {time.perf_counter() - begin:.0f} s")
    summary.append(f"constant baseline (per-pixel median of half 2's maps, no generator): L1 {baseline:.4f}")
    print(text)
    print("\n".join(summary))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n\n" + "\n".join(summary) + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {"cpu": cpu, "torch": torch.__version__, "data": str(args.data), "size": args.size, "load": args.load,
         "channels": args.channels, "median_map_l1": baseline, "runs": [asdict(o) for o in outcomes],
         "ratios": {str(f.seed): f.l1 / s.l1 for f, s in pairs}}, indent=1))


if __name__ == "__main__":
    main()
