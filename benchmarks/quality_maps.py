"""Translation quality per wall-clock hour: the CycleGAN paper's maps protocol reduced to CPU scale.

    python benchmarks/quality_maps.py                      # paper vs fast recipe, 1200 steps, scored every 200
    python benchmarks/quality_maps.py --steps 400 --jobs 2 # shorter, both runs at once (threads split)
    python benchmarks/quality_maps.py --score runs/ablation/*  # score finished runs (e.g. a sweep's) the same way
    python benchmarks/quality_maps.py --timing 40 --threads 1  # s/step of each recipe, alternated runs

Protocol (issue 18), on a pix2pix-style paired folder (`--data`, default ../shared/data/maps: 1200x600 JPEGs,
aerial photo | map):
- unpaired training data from `train/`: the files sorted, then shuffled with `--split-seed`; the aerial (left)
  halves of the first half of them are domain A, the map (right) halves of the other half are domain B, so no
  photo's own map is seen in training. Recipes train on them resized to `--load` px (143) with random
  `--size` px (128) crops, batch 1, as the recipes' own other settings say.
- scored on `--val` (default the data's `val/`): each aerial half resized to `--size` px (bicubic, the
  datasets' resize), translated by the checkpoint's A->B generator (its EMA average when the run has one, as
  `i2i translate` uses), and compared with its true map at the same size, both in 8-bit RGB:
  L1 = mean |out - truth| over pixels and channels (0-255); PSNR = mean over images of 10 log10(255^2 / MSE);
  acc@16 = share of pixels whose every channel is within 16 of the truth; hard@16 = acc@16 over only the pixels
  where the per-pixel mean of the training maps (the constant "mean map" guess) is not within 16: that guess
  scores 0 there, so hard@16 measures drawn structure (roads, water, parks), not background colour.
- every table holds the mean-map baseline, the paper recipe (recipes/cyclegan.toml) and the other recipes at
  the same checkpoints, with the training wall-clock to each (metrics.jsonl "elapsed": the loop's time, without
  process start-up), and "reach": how soon a recipe is at least as good as the paper recipe's last checkpoint on
  both L1 and hard@16, as a share of the paper recipe's wall-clock.

A run folder whose saved command and recipe file equal this invocation's is reused (`--fresh` retrains), so
a finished paper baseline is not retrained when only the other recipe changes. Results go to `--work`
(default runs/quality_maps): results.json, results.md and samples.png (aerial | truth | mean map | each recipe).
Run by hand; never from the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import describe_device  # noqa: E402

from i2i.data.images import list_images, read_image, transform_image  # noqa: E402
from i2i.tools.generators import load_generator, run_generator  # noqa: E402
from i2i.storage.rundir import RunFolder  # noqa: E402

TOLERANCE = 16  # acc@16: every channel within 16 of the truth (0-255)
PAPER = "paper"


@dataclass
class Scores:
    """Quality of one set of translations against the true maps."""

    l1: float
    psnr: float
    acc: float
    hard: float

    def row(self) -> list[str]:
        return [f"{self.l1:.2f}", f"{self.psnr:.2f}", f"{100 * self.acc:.1f}", f"{100 * self.hard:.1f}"]


@dataclass
class Result:
    """One recipe's scores at each checkpoint step, with the training wall-clock to it."""

    name: str
    recipe: str
    sets: list[str]
    points: dict[int, tuple[float, Scores]] = field(default_factory=dict)  # step -> (elapsed s, scores)


# -- data ----------------------------------------------------------------------------------------------------


def halves(path: Path) -> tuple[Image.Image, Image.Image]:
    """The left (aerial) and right (map) halves of an A|B image."""
    image = read_image(path)
    w, h = image.size
    return image.crop((0, 0, w // 2, h)), image.crop((w // 2, 0, w, h))


def prepare(data: Path, work: Path, seed: int) -> Path:
    """Write the unpaired training folders (trainA: aerial halves, trainB: other files' map halves) once."""
    files = sorted(list_images(data / "train"))
    if len(files) < 2:
        raise SystemExit(f"{data / 'train'} holds {len(files)} images; need A|B pairs (pix2pix's aligned format)")
    random.Random(seed).shuffle(files)
    first, second = files[:len(files) // 2], files[len(files) // 2:]
    root = work / f"data-seed{seed}"
    marker = root / "split.json"
    split = {"data": str(data.resolve()), "A": [f.name for f in first], "B": [f.name for f in second]}
    if marker.exists() and json.loads(marker.read_text()) == split:
        return root
    for sub, chosen, side in (("trainA", first, 0), ("trainB", second, 1)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for file in chosen:
            halves(file)[side].save(root / sub / f"{file.stem}.png")
    marker.write_text(json.dumps(split, indent=1))
    return root


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images to 0-255 integers (as saving them would round)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.int16)


def load_val(val: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Aerial inputs in [-1, 1] and true maps in 0-255, both `size` px, for every A|B file of `val`."""
    inputs, truths = [], []
    for file in list_images(val):
        aerial, map_ = halves(file)
        inputs.append(transform_image(aerial, size, size, augment=False))
        truths.append(to_uint8(transform_image(map_, size, size, augment=False)))
    if not inputs:
        raise SystemExit(f"no images in {val}")
    return torch.stack(inputs), torch.stack(truths)


def mean_map(train_b: Path, size: int) -> torch.Tensor:
    """The per-pixel mean of the training maps at `size` px, rounded to 8 bits: the best constant guess in L1-ish."""
    maps = [to_uint8(transform_image(read_image(f), size, size, augment=False)).float()
            for f in list_images(train_b)]
    return torch.stack(maps).mean(0).round().to(torch.int16)


# -- scoring -------------------------------------------------------------------------------------------------


def within(output: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: every channel of the pixel within TOLERANCE of the truth."""
    return (output - truth).abs().amax(1) <= TOLERANCE


def score(output: torch.Tensor, truth: torch.Tensor, hard: torch.Tensor) -> Scores:
    """L1, PSNR, acc@16 and hard@16 of 0-255 `output` against `truth`; `hard` marks the mean map's misses."""
    diff = (output - truth).float()
    mse = diff.pow(2).flatten(1).mean(1).clamp_min(1e-10)
    ok = within(output, truth)
    return Scores(l1=diff.abs().mean().item(), psnr=(10 * torch.log10(255 ** 2 / mse)).mean().item(),
                  acc=ok.float().mean().item(), hard=ok[hard].float().mean().item() if hard.any() else float("nan"))


@torch.no_grad()
def translate(checkpoint: Path, inputs: torch.Tensor, batch: int = 10, raw: bool = False) -> torch.Tensor:
    """The checkpoint's A->B translations of `inputs`, 0-255 (by its EMA average when it has one, unless `raw`)."""
    generator = load_generator(checkpoint, "AtoB", "cpu", raw=raw)
    return torch.cat([to_uint8(run_generator(generator, inputs[i:i + batch]).float())
                      for i in range(0, len(inputs), batch)])


def elapsed_by_step(run: Path) -> dict[int, float]:
    """The loop's wall-clock at each logged step, from the run's metrics.jsonl."""
    return {int(r["step"]): float(r["elapsed"]) for r in RunFolder(run).read_metrics()
            if "step" in r and "elapsed" in r}


def score_run(run: Path, inputs: torch.Tensor, truths: torch.Tensor, hard: torch.Tensor, raw: bool = False
              ) -> dict[int, tuple]:
    """Scores of every complete checkpoint of a run folder, by step."""
    folder, times, points = RunFolder(run), elapsed_by_step(run), {}
    for checkpoint in folder.checkpoints():
        step = int(RunFolder.read_state(checkpoint)["step"])
        points[step] = (times.get(step, math.nan), score(translate(checkpoint, inputs, raw=raw), truths, hard))
    return points


# -- training ------------------------------------------------------------------------------------------------


def train(name: str, recipe: str, sets: list[str], args: argparse.Namespace, data: Path, threads: int) -> Path:
    """Train (or reuse) one recipe under the protocol's settings; returns its run folder."""
    out = args.work / "runs" / name
    every = args.eval_every or args.steps
    command = [sys.executable, "-m", "i2i", "run", recipe, "--out", str(out), "--overwrite",
               "--set", f"data.root={data}", "--set", f"data.load_size={args.load}",
               "--set", f"data.crop_size={args.size}", "--set", "data.batch_size=1", "--set", "data.workers=0",
               "--set", f"train.max_steps={args.steps}", "--set", f"callback.checkpoints.every={every}",
               "--set", "callback.checkpoints.keep=0", "--set", f"train.log_every={every}",
               "--set", f"run.seed={args.seed}", "--set", f"run.device={args.device}"]
    for item in sets:
        command += ["--set", item]
    saved, digest_file = out / "benchmark-command.json", out / "benchmark-recipe.sha256"
    digest = hashlib.sha256((ROOT / recipe).read_bytes()).hexdigest()
    same_recipe = not digest_file.exists() or digest_file.read_text() == digest
    if not args.fresh and saved.exists() and json.loads(saved.read_text()) == command[1:] and same_recipe \
            and RunFolder(out).checkpoints():
        print(f"[{name}] reusing {out} (same command; --fresh retrains)", flush=True)
        return out
    log = args.work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print(f"[{name}] training {args.steps} steps on {threads} thread(s): {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"[{name}] training failed (exit {done.returncode}); see {log}")
    saved.write_text(json.dumps(command[1:]))
    digest_file.write_text(digest)
    print(f"[{name}] done in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def timing(races: list[tuple[str, str, list[str]]], args: argparse.Namespace, data: Path, threads: int) -> None:
    """Seconds per step of each recipe under the protocol: --timing steps per run, recipes alternated, repeated."""
    found: dict[str, list[float]] = {name: [] for name, _, _ in races}
    for repeat in range(args.repeats):
        for name, recipe, sets in races:
            out = args.work / "timing" / name
            command = [sys.executable, "-m", "i2i", "run", recipe, "--out", str(out), "--overwrite",
                       "--set", f"data.root={data}", "--set", f"data.load_size={args.load}",
                       "--set", f"data.crop_size={args.size}", "--set", "data.workers=0",
                       "--set", f"train.max_steps={args.timing}", "--set", "callback.checkpoints.every=0",
                       "--set", f"train.log_every={args.timing // 4}", "--set", "callback.samples.images=0",
                       "--set", f"run.device={args.device}", *[x for item in sets for x in ("--set", item)]]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            if done.returncode:
                raise SystemExit(f"[{name}] timing run failed: {done.stderr.strip().splitlines()[-1]}")
            times = sorted(elapsed_by_step(out).items())
            # from the first log point on: start-up and the first steps' allocations left out
            (first_step, first), (last_step, last) = times[0], times[-1]
            found[name].append((last - first) / (last_step - first_step))
    base = statistics.median(found[PAPER])
    print(f"s/step, median of {args.repeats} alternated runs of {args.timing} steps, {threads} thread(s):")
    for name, values in found.items():
        median = statistics.median(values)
        print(f"  {name:>12}: {median:.3f} s/step ({', '.join(f'{v:.3f}' for v in values)}),"
              f" {base / median:.2f}x the paper recipe's speed")


# -- report --------------------------------------------------------------------------------------------------


def reach(result: Result, paper: Result) -> str:
    """Wall-clock at which `result` first matches the paper recipe's last checkpoint on L1 and hard@16."""
    if not paper.points:
        return "-"
    last = max(paper.points)
    paper_time, target = paper.points[last]
    for step in sorted(result.points):
        elapsed, s = result.points[step]
        if s.l1 <= target.l1 and s.hard >= target.hard:
            return f"step {step}, {elapsed:.0f} s = {elapsed / paper_time:.2f}x" if paper_time == paper_time \
                else f"step {step}"
    return "not reached"


def table(results: list[Result], baseline: Scores) -> str:
    """A markdown table: the mean map, then every recipe at every checkpoint."""
    lines = ["| recipe | step | wall-clock s | s/step | L1 (0-255) | PSNR dB | acc@16 % | hard@16 % | reaches paper |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
             "| mean map (constant) | - | - | - | " + " | ".join(baseline.row()) + " | - |"]
    paper = next((r for r in results if r.name == PAPER), None)
    for result in results:
        steps = sorted(result.points)
        for step in steps:
            elapsed, s = result.points[step]
            rate = f"{elapsed / step:.2f}" if elapsed == elapsed and step else "-"
            note = reach(result, paper) if paper is not None and result is not paper and step == steps[-1] else ""
            lines.append(f"| {result.name} | {step} | {elapsed:.0f} | {rate} | " + " | ".join(s.row())
                         + f" | {note} |")
    return "\n".join(lines)


def sample_sheet(path: Path, inputs: torch.Tensor, truths: torch.Tensor, constant: torch.Tensor,
                 outputs: dict[str, torch.Tensor], count: int = 4) -> None:
    """A PNG grid, one row per val image: aerial | true map | mean map | each recipe's translation."""
    columns = [to_uint8(inputs[:count]), truths[:count], constant.expand(count, -1, -1, -1),
               *[o[:count] for o in outputs.values()]]
    size = inputs.shape[-1]
    sheet = Image.new("RGB", (size * len(columns), size * count), "white")
    for c, images in enumerate(columns):
        for r in range(count):
            tile = Image.fromarray(images[r].permute(1, 2, 0).to(torch.uint8).numpy())
            sheet.paste(tile, (c * size, r * size))
    sheet.save(path)
    names = ["aerial", "true map", "mean map", *outputs]
    print(f"samples: {path} (columns: {' | '.join(names)})")


def parse_recipe(text: str) -> tuple[str, str, list[str]]:
    """NAME=RECIPE[;KEY=VALUE;...] -> (name, recipe path, --set items)."""
    name, _, rest = text.partition("=")
    recipe, *sets = rest.split(";")
    if not name or not recipe:
        raise SystemExit(f"--recipe {text!r}: write NAME=RECIPE.toml[;KEY=VALUE...]")
    return name, recipe, [s for s in sets if s]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "maps")
    parser.add_argument("--val", type=Path, default=None, help="A|B pairs to score on (default DATA/val)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "quality_maps")
    parser.add_argument("--recipe", action="append", default=[], metavar="NAME=RECIPE[;KEY=VALUE...]",
                        help="a recipe to race (repeatable); default: fast=recipes/cyclegan_fast.toml. The paper"
                             " recipe always runs as 'paper'")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--eval-every", type=int, default=200, help="checkpoint and score every N steps")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--load", type=int, default=143)
    parser.add_argument("--seed", type=int, default=0, help="the runs' run.seed")
    parser.add_argument("--split-seed", type=int, default=0, help="the shuffle that splits train/ into A and B")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (threads are split)")
    parser.add_argument("--threads", type=int, default=0, help="threads per run (default: CPUs / jobs)")
    parser.add_argument("--timing", type=int, default=0, metavar="STEPS",
                        help="only time each recipe: STEPS-step runs, alternated, --repeats times; s/step and ratios")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--paper-only", action="store_true", help="train and score only the paper recipe")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--raw", action="store_true", help="score the trained weights, not their EMA average")
    parser.add_argument("--fresh", action="store_true", help="retrain even when a run folder can be reused")
    parser.add_argument("--score", nargs="+", type=Path, default=None, metavar="RUN",
                        help="only score these finished run folders (e.g. a sweep's runs)")
    args = parser.parse_args()
    val = args.val or args.data / "val"
    data = prepare(args.data, args.work, args.split_seed)
    inputs, truths = load_val(val, args.size)
    constant = mean_map(data / "trainB", args.size)
    hard = ~within(constant.expand_as(truths), truths)
    baseline = score(constant.expand_as(truths), truths, hard)
    print(f"{describe_device(torch.device('cpu'))}; torch {torch.__version__}")
    print(f"val: {val} ({len(inputs)} pairs at {args.size} px); hard pixels (mean map wrong): "
          f"{100 * hard.float().mean():.1f}%")

    if args.score:
        args.score = [run for run in args.score if RunFolder.is_run(run)]  # a sweep folder's logs/ etc. are not
        results = [Result(run.name, "", []) for run in args.score]
        for result, run in zip(results, args.score):
            result.points = score_run(run, inputs, truths, hard, args.raw)
    else:
        races = [(PAPER, "recipes/cyclegan.toml", [])]
        if not args.paper_only:
            races += [parse_recipe(r) for r in (args.recipe or ["fast=recipes/cyclegan_fast.toml"])]
        threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
        if args.timing:
            timing(races, args, data, threads)
            return
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            runs = list(pool.map(lambda race: train(*race, args, data, threads), races))
        results = [Result(name, recipe, sets) for name, recipe, sets in races]
        for result, run in zip(results, runs):
            result.points = score_run(run, inputs, truths, hard, args.raw)
        print(f"trained with --jobs {args.jobs} ({threads} thread(s) each; reused runs as they were trained)")

    text = table(results, baseline)
    print(text)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.md").write_text(text + "\n")
    (args.work / "results.json").write_text(json.dumps(
        {"cpu": describe_device(torch.device("cpu")), "val": str(val), "steps": args.steps, "jobs": args.jobs,
         "baseline": vars(baseline),
         "results": [{"name": r.name, "recipe": r.recipe, "sets": r.sets,
                      "points": {str(k): {"elapsed": t, **vars(s)} for k, (t, s) in sorted(r.points.items())}}
                     for r in results]}, indent=1))
    finals = {}
    runs_by_name = {r.name: run for r, run in zip(results, args.score or runs)}
    for result in results:
        checkpoints = RunFolder(runs_by_name[result.name]).checkpoints()
        if checkpoints:
            finals[result.name] = translate(checkpoints[-1], inputs, raw=args.raw)
    sample_sheet(args.work / "samples.png", inputs, truths, constant, finals)


if __name__ == "__main__":
    main()
