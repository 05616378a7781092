"""The `i2i` command: parses arguments, calls the library, prints. No training logic lives here."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, \
    TaskID, TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from i2i.errors import EXIT_ERROR, I2IError, InputsSkipped, Interrupted, is_out_of_memory, out_of_memory_error
from i2i.tiles import BLENDS, NORM_STATS
from i2i.contract.options import closest, toml_value

stderr = Console(stderr=True)
stdout = Console()
#: the --help epilog of the group and of the commands that read inputs (translate, evaluate, export)
EXIT_CODES = ("Exit status: 0 done; 1 an unexpected failure (a bug: --debug shows the traceback); 2 an error you can"
              " fix (a bad flag, file or value; nothing done; out of memory: the error line says what to change);"
              " 3 done, but some inputs were skipped (each named in a warning; --allow-skipped makes this 0);"
              " 130 interrupted.")


class PluginGroup(click.Group):
    """The core's commands, then those installed plugins add (hook i2i_commands), looked up only when needed: a
    core command such as `i2i run` never loads them; `i2i --help` and unknown names do."""

    _plugins: dict[str, click.Command] | None = None

    def plugin_commands(self) -> dict[str, click.Command]:
        """The commands plugins add, by name; a name the core or a package of higher precedence has is left out."""
        if self._plugins is None:
            from i2i.contract.registry import plugin_commands

            self._plugins = {name: command for name, (_, command) in plugin_commands(self.commands).items()}
        return self._plugins

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.plugin_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name) or self.plugin_commands().get(cmd_name)


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.option("--debug", is_flag=True, help="Show the full traceback of errors (also accepted after a command).")
@click.version_option(package_name="i2i-toolkit")  # the distribution; "i2i" on the package index is another project
def cli(debug: bool) -> None:
    """i2i: plugin-based image-to-image translation (CycleGAN and friends)."""


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key, e.g. --set optim.lr=1e-4 (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (default runs/<run.name>).")
@click.option("--overwrite", is_flag=True, help="Replace an existing run in the run folder.")
@click.option("--resume", is_flag=True, help="Continue from the newest complete checkpoint in the run folder.")
def run(recipe: Path, overrides: tuple[str, ...], out: Path | None, overwrite: bool, resume: bool) -> None:
    """Train the parts a RECIPE (.toml) assembles."""
    from i2i.engine import Trainer, default_run_dir
    from i2i.engine.checkpoints import check_recorded_parts

    try:
        resolved = load_recipe_noting(recipe, overrides, resume=resume)
    except I2IError:
        if resume and (folder := _resume_folder(recipe, overrides, out)) is not None:
            check_recorded_parts(folder)  # a part missing here: named with the package the run's checkpoint records
        raise
    note = lambda text: stderr.print(f"note: {text}", highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    trainer = Trainer(resolved, out or default_run_dir(resolved), overwrite=overwrite, resume=resume, on_note=note)
    run_dir = trainer.run()  # the progress bar and the log lines are the stock "progress" callback's
    if trainer.is_main:  # a resumed run found at its end says so, and how to train longer, instead of "done"
        done = trainer.finished_earlier or f"done: {run_dir}  (report: {trainer.folder.report_file})"
        stdout.print(done, highlight=False, markup=False, soft_wrap=True)


def _resume_folder(recipe: Path, overrides: tuple[str, ...], out: Path | None) -> Path | None:
    """The run folder `run --resume` continues, for a recipe that does not resolve: --out, or the default for the
    file's run.name (None when that cannot be read either)."""
    from i2i.engine import default_run_dir
    from i2i.recipe import RUN, Recipe, apply_overrides, read_toml

    if out is not None:
        return out
    try:
        run = apply_overrides(read_toml(recipe), list(overrides)).get("run", {})
        return default_run_dir(Recipe({"run": RUN.resolve(run if isinstance(run, dict) else {}, "run")}))
    except I2IError:
        return None


def load_recipe_noting(recipe: Path, overrides: tuple[str, ...], resume: bool = False):
    """The resolved recipe, with a note line for what resolving changed (e.g. keys of a swapped part)."""
    from i2i.recipe import load_recipe

    resolved = load_recipe(recipe, overrides, resume=resume)
    for note in resolved.notes:
        stderr.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    return resolved


@contextmanager
def _progress_bar(label: str, *columns: ProgressColumn) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar with `columns` for `done of total` callbacks, shown from the first call on (so early errors
    print alone)."""
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), *columns, TextColumn("ETA"), TimeRemainingColumn(),
                   console=stderr)
    task = bar.add_task(label, total=None)

    def show(done: int, total: int | None) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        yield show
    finally:
        if bar.live.is_started:
            bar.stop()


def counting_progress(label: str) -> AbstractContextManager[Callable[[int, int], None]]:
    """A progress bar for `done of total` items: count, elapsed time and ETA."""
    return _progress_bar(label, MofNCompleteColumn(), TimeElapsedColumn())


@contextmanager
def translate_progress() -> Iterator[tuple[Callable[[int, int], None], Callable[[str, int, int], None]]]:
    """Progress of `i2i translate`: images done of total, and the tiles of a tiled image (with their own ETA)."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=stderr)
    images = bar.add_task("translate", total=None)
    tiles: dict[str, TaskID] = {}

    def show(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(images, completed=done, total=total)

    def show_tiles(name: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        if name not in tiles:
            for finished in tiles.values():
                bar.remove_task(finished)
            tiles.clear()
            tiles[name] = bar.add_task(f"tiles of {Path(name).name}", total=total)
        bar.update(tiles[name], completed=done, total=total)

    try:
        yield show, show_tiles
    finally:
        if bar.live.is_started:
            bar.stop()


def byte_progress(label: str) -> AbstractContextManager[Callable[[int, int | None], None]]:
    """A progress bar for `bytes done of total` callbacks: size, speed and ETA (a total of None: size only)."""
    return _progress_bar(label, DownloadColumn(), TransferSpeedColumn())


class KindType(click.ParamType):
    """A kind of part: the core's or one an installed plugin declares, so the choices are read from the registry
    only when a command gets a kind (`i2i run` never loads the plugins for it)."""

    name = "kind"

    def kinds(self) -> list[str]:
        """The installed kinds, the core's first."""
        from i2i.contract.registry import default_registry

        return list(default_registry().kinds())

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        kinds = self.kinds()
        if value in kinds:
            return value
        close = closest(value, kinds)
        hint = f" did you mean {close!r}?" if close else ""
        self.fail(f"{value!r} is not a kind of part:{hint} (kinds: {', '.join(kinds)})", param, ctx)


@cli.command(name="list")
@click.argument("kind", required=False, type=KindType())
def list_parts(kind: str | None) -> None:
    """List installed parts (of one KIND: generator, loss, ... or a kind a plugin adds), with their package."""
    from i2i.contract.registry import default_registry

    registry = default_registry()
    table = Table(box=None, header_style="bold")
    for column in ("kind", "name", "package", "description"):
        table.add_column(column)
    for k in [kind] if kind else registry.kinds():
        for name in registry.available(k):
            part = registry.info(k, name)
            table.add_row(k, name, part.package, part.description)
    stdout.print(table)
    for problem in registry.conflicts:
        stderr.print(f"warning: {problem}", highlight=False, markup=False, soft_wrap=True)


@cli.command()
@click.argument("kind", type=KindType())
@click.argument("name")
def info(kind: str, name: str) -> None:
    """Show a part's description, package and options."""
    from i2i.contract.registry import default_registry

    part = default_registry().info(kind, name)
    stdout.print(f"[bold]{kind} {name}[/bold] ({part.package}): {part.description}", highlight=False)
    doc = (part.cls.__doc__ or "").strip().splitlines()[1:]
    if any(line.strip() for line in doc):
        stdout.print("\n".join(line.strip() for line in doc).strip(), highlight=False)
    if not part.options:
        stdout.print("no options")
        return
    table = Table(box=None, header_style="bold")
    for column in ("option", "type", "default", "help"):
        table.add_column(column)
    for o in part.options:
        limits = []
        if o.choices:
            limits.append("one of " + ", ".join(map(str, o.choices)))
        if o.min is not None:
            limits.append(f">= {o.min}")
        if o.max is not None:
            limits.append(f"<= {o.max}")
        if o.replaces:
            limits.append(f"was {o.replaces}, still accepted")
        text = o.help + (f" ({'; '.join(limits)})" if limits else "")
        table.add_row(o.name, o.type_name, toml_value(o.default), text)
    stdout.print(table)


#: `--checkpoint NAME` of the commands that read a run's generator (translate, evaluate, export)
checkpoint_option = click.option("--checkpoint", "which", default=None, metavar="NAME", show_default="latest",
                                 help="Which checkpoint of a run folder: latest, best (kept by"
                                      " callback.validation.keep_best) or step-N.")
#: `--allow-skipped` of the commands that read many inputs (translate, evaluate): skipped inputs are not a failure
allow_skipped_option = click.option("--allow-skipped", is_flag=True,
                                    help="Exit 0 even when some inputs were skipped (unreadable, too small; each is"
                                         " named in a warning) as long as the others were done; without it such a"
                                         " run exits 3. Nothing done at all still fails.")
def domain_options(command: Callable) -> Callable:
    """`--to DOMAIN` and `--from DOMAIN` of the commands that take a direction (parameters `to`, `source`)."""
    command = click.option("--from", "source", default=None, metavar="DOMAIN",
                           help="The source domain, where the method's directions need one.")(command)
    return click.option("--to", "to", default=None, metavar="DOMAIN",
                        help="The target domain (a method of N domains, e.g. StarGAN; for two domains --to B is"
                             " --direction AtoB).")(command)


#: `--raw` of the same commands: the trained generator weights instead of the variant the run's callbacks declared
raw_option = click.option("--raw", is_flag=True, help="Use the raw generator weights, not the variant the run's"
                                                       " callbacks saved for inference (e.g. an EMA average).")


@cli.command(epilog=EXIT_CODES)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the translated images.")
@click.option("--direction", default="AtoB", show_default=True, help="AtoB or BtoA (what the run trained).")
@domain_options
@click.option("--size", type=click.IntRange(min=1), default=None, metavar="N", show_default="full resolution",
              help="Scale images so the shorter side is N px (rounded to the generator's multiple) first.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Images of equal size translated together (tiles, for tiled images).")
@click.option("--format", "fmt", type=click.Choice(["png", "tiff", "npy", "jpeg"]), default=None,
              show_default="each input's own", help="Write every output in this format.")
@checkpoint_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@raw_option
@click.option("--tile", type=click.IntRange(min=0), default=None, metavar="N", show_default="over the budget",
              help="Translate images larger than N x N px in N px tiles (0: never tile).")
@click.option("--overlap", type=click.IntRange(min=0), default=None, metavar="PX",
              show_default="64, at most a quarter of the tile",
              help="Pixels neighbouring tiles share, blended.")
@click.option("--blend", type=click.Choice(list(BLENDS)), default="cosine", show_default=True,
              help="How overlapping tiles are blended.")
@click.option("--norm-stats", type=click.Choice(list(NORM_STATS)), default="sample", show_default=True,
              help="Instance-norm statistics of tiles: the whole image's (exact, one pass per norm layer), those of"
                   " full-resolution crops spread over it, of a downscaled copy, or each tile's own.")
@click.option("--memory-budget", type=float, default=None, metavar="GB", show_default="half the free memory",
              help="Images needing more to translate whole are tiled (GiB).")
@click.option("--stats-side", type=click.IntRange(min=1), default=1024, show_default=True, metavar="PX",
              help="Side of the picture --norm-stats sample or thumbnail takes statistics from.")
@allow_skipped_option
def translate(checkpoint: Path, inputs: tuple[Path, ...], out: Path, direction: str, to: str | None,
              source: str | None, size: int | None,
              batch_size: int, fmt: str | None, device: str, which: str | None, raw: bool, tile: int | None,
              overlap: int | None, blend: str, norm_stats: str, memory_budget: float | None, stats_side: int,
              allow_skipped: bool) -> None:
    """Translate INPUT images and folders with the generator in CHECKPOINT (a run, checkpoint or .safetensors).

    Images over the memory budget (or --tile) are translated in overlapping tiles, blended without seams, with the
    whole image's instance-norm statistics; TIFFs are then read and written window by window (GeoTIFFs keep their
    georeference). Inputs that cannot be read or translated are skipped, each named in a warning line.
    """
    from i2i.tiles.plan import Tiling
    from i2i.tools.generators import pick_direction
    from i2i.tools.translate import translate as run_translation

    direction = pick_direction(checkpoint, to, source, direction, which)
    tiling = Tiling(tile=tile, overlap=overlap, blend=blend, norm_stats=norm_stats, memory_budget=memory_budget,
                    stats_side=stats_side)
    with translate_progress() as (show, show_tiles):
        result = run_translation(checkpoint, list(inputs), out, direction=direction, size=size,
                                 batch_size=batch_size, device=device, on_progress=show, which=which, raw=raw,
                                 fmt=fmt, tiling=tiling, on_tiles=show_tiles,
                                 on_note=lambda text: stderr.print(f"note: {text}", highlight=False, markup=False,
                                                                   soft_wrap=True))
    skipped = f", {len(result.skipped)} skipped (see the warnings above)" if result.skipped else ""
    count = len(result.written)
    weights = f" with the {result.weights}" if result.weights else ""
    stdout.print(f"translated {count} image{'s' * (count != 1)}{weights} into {result.out}{skipped}; index:"
                 f" {result.index}",
                 highlight=False, markup=False, soft_wrap=True)
    check_skipped(len(result.skipped), count, allow_skipped, "nothing translated",
                  [source for source, _ in result.skipped])


def check_skipped(skipped: int, done: int, allowed: bool, nothing: str, names: list[Path] | None = None) -> None:
    """Fail a command that skipped `skipped` inputs (`names`: which, when known) and did `done` others: an error
    saying `nothing` (e.g. "nothing translated") when it did none, else exit 3 unless `allowed` (--allow-skipped)."""
    if not skipped:
        return
    shown = ", ".join(map(str, (names or [])[:3])) + (f" and {len(names) - 3} more" if len(names or []) > 3 else "")
    which = f" ({shown})" if shown else ""
    if not done:
        raise I2IError(f"{nothing}: {'the only input was' if skipped == 1 else f'all {skipped} inputs were'} skipped"
                       f"{which}; the warnings above say why")
    if not allowed:
        raise InputsSkipped(f"{skipped} of {skipped + done} inputs {'was' if skipped == 1 else 'were'} skipped{which};"
                            " the warnings above say why: fix or remove them, or pass --allow-skipped to accept the"
                            " rest")


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@checkpoint_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on; 0.0.0.0 lets other machines reach it (see SECURITY.md).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, metavar="N",
              help="Port to serve on.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@raw_option
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=20, show_default=True,
              metavar="MB", help="Largest upload the page takes.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=16_000_000, show_default=True, metavar="N",
              help="Largest image the page translates, in pixels (width x height, before and after scaling).")
def demo(checkpoint: Path, which: str | None, host: str, port: int, device: str, raw: bool, max_upload_mb: float,
         max_pixels: int) -> None:
    """Try the generator in CHECKPOINT in a web page: drop an image, see it translated (needs i2i-toolkit[demo])."""
    from i2i.tools.demo import serve

    def say(text: str) -> None:
        stdout.print(text, highlight=False, markup=False, soft_wrap=True)

    def warn(text: str) -> None:
        stderr.print(f"warning: {text}", highlight=False, markup=False, soft_wrap=True)

    serve(checkpoint, host=host, port=port, device=device, raw=raw, which=which, max_upload_mb=max_upload_mb,
          max_pixels=max_pixels, say=say, warn=warn)


@cli.command()
@click.argument("reference", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path),
              help="The .safetensors file to write (default: REFERENCE with a .safetensors suffix).")
def convert(reference: Path, out: Path | None) -> None:
    """Import a pytorch-CycleGAN-and-pix2pix generator checkpoint (.pth) as an i2i generator file."""
    from i2i.tools.convert import convert as run_conversion, options_text

    result = run_conversion(reference, out or reference.with_suffix(".safetensors"))
    stdout.print(f"recognised generator {result.name} ({options_text(result.options)}); wrote {result.tensors}"
                 f" tensors to {result.out}", highlight=False, markup=False, soft_wrap=True)
    stdout.print(f"translate with: i2i translate {result.out} IMAGES... --out DIR", highlight=False, markup=False,
                 soft_wrap=True)


@cli.command(epilog=EXIT_CODES)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "torchscript"]),
              help="onnx (torch.onnx, opset 18; run it with onnxruntime) or torchscript (torch.jit.trace).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The file to write (.onnx or .pt).")
@click.option("--direction", default="AtoB", show_default=True, help="AtoB or BtoA (what the run trained).")
@domain_options
@click.option("--size", type=click.IntRange(min=1), default=None, metavar="N",
              show_default="the run's crop size, else 256",
              help="The example input is 1 x C x N x N; N must be a multiple of the generator's size multiple.")
@click.option("--dynamic", is_flag=True,
              help="Free batch, height and width axes in ONNX; both formats are then also checked at a second size.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-4, show_default=True,  # i2i.tools.export.TOLERANCE
              help="Largest max abs difference (outputs in [-1, 1]) between the exported file and the generator.")
@checkpoint_option
@raw_option
def export(checkpoint: Path, fmt: str, out: Path, direction: str, to: str | None, source: str | None,
           size: int | None, dynamic: bool, tolerance: float, which: str | None, raw: bool) -> None:
    """Export the generator in CHECKPOINT (a run, checkpoint or .safetensors) to ONNX or TorchScript.

    The exported file and the generator then translate the same inputs (uniform noise, a smooth synthetic
    image and its negative, up to 3 held-out images of the run's data): if any output differs by more than the
    tolerance, the export fails and nothing is written to --out.
    """
    from i2i.tools.export import export_generator
    from i2i.tools.generators import pick_direction

    direction = pick_direction(checkpoint, to, source, direction, which)
    report = export_generator(checkpoint, fmt, out, direction=direction, size=size, dynamic=dynamic,
                              tolerance=tolerance, which=which, raw=raw)
    for note in report.notes:
        stderr.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    shape = "x".join(map(str, report.input_shape))
    detail = f"opset {report.opset}, " if report.opset else ""
    axes = "free batch, height and width" if report.dynamic and fmt == "onnx" else f"example input {shape}"
    which = f"{report.generator} ({report.direction})" if report.direction else report.generator
    stdout.print(f"exported generator {which} to {report.out} ({fmt}, {detail}{axes})", highlight=False, markup=False,
                 soft_wrap=True)
    stdout.print(f"parity check ({report.runtime} against PyTorch, tolerance {report.tolerance:.3g}):",
                 highlight=False, markup=False)
    for label, difference in report.differences.items():
        stdout.print(f"  {label}: max abs difference {difference:.3g}", highlight=False, markup=False)
    stdout.print(f"passed: max abs difference {report.max_difference:.3g}", highlight=False, markup=False)


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path), required=False)
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2",
              help="A recipe key and the values to try (repeatable: every combination runs).")
@click.option("--variant", "variants", multiple=True, metavar="NAME:KEY=V,KEY=V",
              help="A named set of overrides to try (repeatable), e.g. no_cycle:loss.cycle.weight=0.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key in every run.")
@click.option("--out", type=click.Path(path_type=Path), help="Sweep folder (default runs/<run.name>-sweep).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1), help="Runs at once.")
@click.option("--resume", is_flag=True, help="Finish an interrupted sweep; finished runs are not redone, runs still"
              " queued or running on the cluster are followed, the others continue from their newest checkpoint.")
@click.option("--executor", metavar="NAME", default=None, show_default="the sweep's earlier one, else local",
              help="Where the runs go: local (subprocesses here, --jobs at a time), slurm (one SLURM job array,"
                   " through submitit), or one a plugin adds.")
@click.option("--slurm-partition", metavar="NAME", default=None, help="SLURM partition (default: the cluster's).")
@click.option("--slurm-time", type=click.IntRange(1), metavar="MIN", default=None, show_default="60",
              help="SLURM time limit per run, in minutes.")
@click.option("--slurm-gpus", type=click.IntRange(0), metavar="N", default=None, show_default="0",
              help="GPUs per run on SLURM.")
@click.option("--slurm-cpus", type=click.IntRange(1), metavar="N", default=None, show_default="1",
              help="CPUs per run on SLURM.")
@click.option("--slurm-mem", type=click.FloatRange(0, min_open=True), metavar="GB", default=None,
              show_default="the cluster's default", help="Memory per run on SLURM, in GB.")
@click.option("--status", "status_dir", type=click.Path(path_type=Path), metavar="DIR", default=None,
              help="Say where each run of the sweep in DIR stands (state, job id, newest checkpoint) and exit.")
def sweep(recipe: Path | None, grid: tuple[str, ...], variants: tuple[str, ...], overrides: tuple[str, ...],
          out: Path | None, jobs: int, resume: bool, executor: str | None, slurm_partition: str | None,
          slurm_time: int | None, slurm_gpus: int | None, slurm_cpus: int | None, slurm_mem: float | None,
          status_dir: Path | None) -> None:
    """Train one run of RECIPE per combination, then compare them on one page (`--status DIR`: where they stand)."""
    from i2i.tools.sweep import sweep as run_sweep, sweep_status

    if status_dir is not None:
        for run in sweep_status(status_dir):
            step = "-" if run.step is None else f"{run.step}/{run.total or '?'}"
            stdout.print(f"{run.name}  {run.state}  job {run.job or '-'}  step {step}"
                         + (f"  ({run.detail})" if run.detail else ""), highlight=False, markup=False, soft_wrap=True)
        return
    if recipe is None:
        raise I2IError("i2i sweep needs a RECIPE (or --status DIR to see where a sweep stands)")
    flags = {"partition": slurm_partition, "time": slurm_time, "gpus": slurm_gpus, "cpus": slurm_cpus,
             "mem": slurm_mem}
    resources = {key: value for key, value in flags.items() if value is not None}

    def show(event: str, combo, detail: str) -> None:
        style = {"finished": "green", "failed": "red"}.get(event, "")
        text = Text(f"{event:>8}  {combo.name}" + (f"  ({detail})" if detail else ""), style=style)
        stderr.print(text, highlight=False, soft_wrap=True)

    note = lambda text: stderr.print(f"note: {text}", highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    result = run_sweep(recipe, list(grid), list(overrides), out, list(variants), jobs, resume, show, note,
                       executor, resources)
    stdout.print(f"{len(result.finished)} finished, {len(result.skipped)} skipped (done before),"
                 f" {len(result.failed)} failed; runs in {result.out}", highlight=False, markup=False)
    if result.compare:
        stdout.print(f"comparison: {result.compare}", highlight=False, markup=False)
    if result.failed:
        raise I2IError(f"{len(result.failed)} of the sweep's runs failed: {', '.join(result.failed)}"
                       f" (logs in {result.out / 'logs'}); fix and rerun with --resume")


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--param", "params", multiple=True, metavar="KEY=SPEC",
              help="A recipe key to search (repeatable): KEY=float:LO..HI, log:LO..HI (log-uniform), int:LO..HI or"
                   " choice:A,B,C, e.g. --param optim.lr=log:1e-5..1e-3.")
@click.option("--objective", required=True, metavar="DIRECTION.METRIC",
              help="The validation metric to optimize, e.g. AtoB.l1 (lower is better) or AtoB.psnr (higher is"
                   " better); callback.validation must be on.")
@click.option("--trials", default=20, show_default=True, type=click.IntRange(1), metavar="N",
              help="Trials of the whole study (complete, pruned and failed; all workers together).")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True,
              help="How values are drawn (grid: int ranges and choices only).")
@click.option("--pruner", type=click.Choice(["asha", "none"]), default="asha", show_default=True,
              help="Stop poor trials at validation points (asynchronous successive halving); a diverged trial is"
                   " pruned either way.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key in every trial.")
@click.option("--out", type=click.Path(path_type=Path), help="Search folder (default runs/<run.name>-search).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampler.")
def search(recipe: Path, params: tuple[str, ...], objective: str, trials: int, sampler: str, pruner: str,
           overrides: tuple[str, ...], out: Path | None, seed: int) -> None:
    """Search recipe values of RECIPE for the best validation metric, pruning poor trials early. Each call is a
    worker: start several on one --out (on this machine or machines sharing the folder) to search in parallel."""
    from i2i.tools.search import search as run_search

    def show(event: str, number: int, detail: str) -> None:
        style = {"complete": "green", "fail": "red", "pruned": "yellow"}.get(event, "")
        text = Text(f"{event:>8}  trial {number}" + (f"  ({detail})" if detail else ""), style=style)
        stderr.print(text, highlight=False, soft_wrap=True)

    note = lambda text: stderr.print(f"note: {text}", highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    result = run_search(recipe, list(params), objective, trials, sampler, pruner, list(overrides), out, seed,
                        show, note)
    say = lambda text: stdout.print(text, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    say(f"this worker ran {len(result.trials)} trial{'s' * (len(result.trials) != 1)}; the study has {result.ended}"
        f" ended; trials in {result.out / 'trials'}")
    if result.running:
        say(f"{result.running} trial{'s' * (result.running != 1)} still run or wait in other workers: the last"
            " worker to end writes the results (or start this command again once they ended)")
        return
    if result.best:
        say(f"best: trial {result.best['number']}, {objective} = {result.best['value']:.6g}  (run"
            f" {result.best['run']})")
        say(f"best recipe: {result.best_file}  (i2i run {result.best_file} reproduces it)")
    if result.compare:
        say(f"comparison: {result.compare}")
    say(f"objective plot: {result.plot}")
    if not result.best:
        failed = [end for end in result.trials if end.state == "FAIL"]
        why = f" ({len(failed)} failed here; trial {failed[0].number}: {failed[0].detail})" if failed else ""
        raise I2IError(f"no trial of the search in {result.out} completed{why}; see trials/*/trial.json")


@cli.command()
@click.argument("runs", nargs=-1, metavar="RUN [RUN]...", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("compare"), show_default=True,
              help="Folder for compare.html, compare.csv and their images.")
@click.option("--samples", type=click.IntRange(min=0), default=4, show_default=True, metavar="N",
              help="Held-out images translated by every run (0: none).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (for translating).")
def compare(runs: tuple[Path, ...], out: Path, samples: int, device: str) -> None:
    """Compare RUN folders: differing recipe keys, final losses and metrics, loss curves, translations."""
    from i2i.tools.compare import compare_runs

    result = compare_runs(list(runs), out, samples=samples, device=device)
    stdout.print(result.table, highlight=False, markup=False, soft_wrap=True, end="")
    for note in result.notes:
        stderr.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    stdout.print(f"comparison: {result.html}  (table: {result.csv})", highlight=False, markup=False,
                 soft_wrap=True)


@cli.command(epilog=EXIT_CODES)
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), metavar="ROOT",
              help="Dataset folder (default: the run's data.root, or its synthetic data).")
@click.option("--split", default="test", show_default=True, help="Which split to measure on (test/, testA/...).")
@click.option("--inception-weights", type=click.Path(path_type=Path), metavar="FILE",
              help="Inception weights (.pth or .safetensors) for FID and KID (default: those `i2i download inception`"
                   " put in the cache, if there); never downloaded here.")
@click.option("--fid", type=click.Choice(["standard", "torchvision"]), default=None,
              show_default="standard, or what --inception-weights holds",
              help="FID/KID protocol: standard (the TF-Inception of pytorch-fid/torch-fidelity: comparable with"
                   " published FIDs) or torchvision (torchvision's ImageNet Inception v3: not comparable).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, metavar="N",
              help="Images translated together.")
@click.option("--size", type=click.IntRange(min=1), default=None, metavar="N", show_default="the recipe's crop",
              help="Resize images to N x N instead of the recipe's load_size and centre crop_size.")
@checkpoint_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@raw_option
@click.option("--tile", type=click.IntRange(min=0), default=None, metavar="N", show_default="over the budget",
              help="Translate images larger than N x N px in N px tiles, as translate does (0: never tile).")
@allow_skipped_option
def evaluate(run_dir: Path, data: Path | None, split: str, inception_weights: Path | None, fid: str | None,
             batch_size: int, size: int | None, device: str, which: str | None, raw: bool,
             tile: int | None, allow_skipped: bool) -> None:
    """Measure RUN on held-out images: L1/PSNR/SSIM (paired), cycle L1, FID/KID; writes RUN/metrics.json."""
    from i2i.storage.cache import inception_path
    from i2i.tools.evaluate import evaluate as run_evaluation
    from i2i.tools.inception import download_command
    from i2i.tools.generators import weights_note

    with counting_progress("evaluate") as show:
        report = run_evaluation(run_dir, data, split=split, inception_weights=inception_weights,
                                batch_size=batch_size, device=device, size=size, on_progress=show, which=which,
                                raw=raw, fid=fid, tile=tile)
    columns = [c for c in ("images", "l1", "psnr", "ssim", "cycle_l1", "fid", "kid", "kid_std")
               if any(c in m for m in report["metrics"].values())]
    table = Table(box=None, header_style="bold")
    for column in ("direction", *columns):
        table.add_column(column, justify="left" if column == "direction" else "right")
    for direction, found in report["metrics"].items():
        table.add_row(direction, *(_metric_text(found.get(c, "")) for c in columns))
    weights = weights_note([Path(name) for name in report["generators"].values()], raw)
    stdout.print(f"{report['run']} at {report['checkpoint']}{' with the ' + weights if weights else ''} on"
                 f" {report['data']['split']}"
                 f" ({report['data']['dataset']}{', ' + report['data']['root'] if report['data']['root'] else ''})",
                 highlight=False, markup=False, soft_wrap=True)
    stdout.print(table)
    if report["features"]:
        stdout.print(report["features"], highlight=False, markup=False, soft_wrap=True)
    else:  # no weights given and none downloaded: say how to get FID/KID
        protocol = fid or "standard"
        stderr.print(f"note: no FID/KID: no Inception weights of the {protocol} protocol in"
                     f" {inception_path(protocol)}; get them with `{download_command(protocol)}` or pass"
                     " --inception-weights FILE", highlight=False, markup=False, soft_wrap=True)
    stdout.print(f"metrics: {Path(report['run']) / 'metrics.json'}", highlight=False, markup=False, soft_wrap=True)
    skipped = len(report["data"].get("skipped", []))
    if skipped and allow_skipped:
        stderr.print(f"note: the metrics leave out the {skipped} input file{'s' * (skipped != 1)} skipped above",
                     highlight=False, markup=False, soft_wrap=True)
    # images measured: a pair counts once in each direction, an unpaired file in its domain's direction only
    counts = [m.get("images") or 0 for m in report["metrics"].values()]
    check_skipped(skipped, max(counts) if report["data"]["paired"] else sum(counts), allow_skipped,
                  "nothing evaluated")


def _metric_text(value: object) -> str:
    """A metric for the table: integers as they are, others to 4 significant digits, null as n/a."""
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _rank_prefix() -> str:
    """"rank N: " in a process torchrun started, so each line says which process it comes from."""
    from i2i.engine.distributed import launched

    return f"rank {os.environ.get('RANK', '?')}: " if launched() else ""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the source location a user cannot act on (rank 0's alone)."""
    if os.environ.get("RANK", "0") != "0":
        return  # every process of a torchrun run would repeat rank 0's warnings
    stderr.print(f"warning: {message}", highlight=False, markup=False, soft_wrap=True)


@cli.group()
def download() -> None:
    """Fetch the standard datasets, published generators and FID Inception weights (resumable, verified).

    Everything goes into the cache (~/.cache/i2i, or $I2I_CACHE) unless --root is given; a second call finds it
    there and fetches nothing. --url BASE (or $I2I_DOWNLOAD_URL) fetches from a mirror that keeps upstream's paths.
    """


def download_options(command: Callable) -> Callable:
    """--root, --url and --sha256, which every `i2i download` command takes."""
    command = click.option("--sha256", default="", metavar="HEX",
                           help="The digest the file must have (pins one where the catalogue has none).")(command)
    command = click.option("--url", default=None, metavar="BASE",
                           help="Fetch from this mirror instead of upstream, keeping upstream's paths (also"
                                " $I2I_DOWNLOAD_URL).")(command)
    return click.option("--root", type=click.Path(path_type=Path), default=None, metavar="DIR",
                        help="Folder to download into (default: the cache, ~/.cache/i2i or $I2I_CACHE).")(command)


def _download(label: str, fetch: Callable, what: str, next_label: str) -> None:
    """Run `fetch(show_progress)` under a byte progress bar, then say where the result is, what was checked and the
    command that uses it (`next_label: ...`)."""
    with byte_progress(label) as show:
        result = fetch(show)

    def say(text: str) -> None:
        stdout.print(text, highlight=False, markup=False, soft_wrap=True)

    detail = f": {result.detail}" if result.detail else ""
    if result.cached:
        say(f"{what} {result.entry.qualified} is already in {result.path} (nothing fetched){detail}")
    else:
        from i2i.tools.download.transfer import human_size

        fetched = result.fetched
        resumed = "" if not fetched.resumed_from else ", fetched whole by an earlier call" \
            if fetched.resumed_from == fetched.size else f", resumed at {human_size(fetched.resumed_from)}"
        say(f"downloaded {what} {result.entry.qualified} ({human_size(fetched.size)}{resumed}) into"
            f" {result.path}{detail}")
        if result.pinned:
            kind = "sha256" if len(result.pinned) == 64 else "sha256 prefix"
            say(f"verified: {kind} {result.pinned} matches")
        else:
            say(f"sha256 {fetched.sha256} (upstream publishes none: pin this one next time with --sha256"
                f" {fetched.sha256})")
    say(f"{next_label}: {result.next_step}")


@download.command(name="dataset")
@click.argument("name")
@download_options
def download_dataset(name: str, root: Path | None, url: str | None, sha256: str) -> None:
    """Fetch dataset NAME (e.g. horse2zebra, pix2pix/facades) in the layout `i2i run` trains on."""
    from i2i.tools.download import download_dataset as fetch_dataset

    _download(name, lambda show: fetch_dataset(name, root, url, sha256, show), "dataset", "train on it")


@download.command(name="model")
@click.argument("name")
@download_options
def download_model(name: str, root: Path | None, url: str | None, sha256: str) -> None:
    """Fetch published generator NAME (e.g. horse2zebra, pix2pix/edges2shoes), converted to .safetensors."""
    from i2i.tools.download import download_model as fetch_model

    _download(name, lambda show: fetch_model(name, root, url, sha256, show), "model", "translate with")


@download.command(name="inception")
@click.option("--kind", type=click.Choice(["fid", "torchvision"]), default="fid", show_default=True,
              help="fid: the TF-Inception of pytorch-fid/torch-fidelity (FIDs comparable with papers);"
                   " torchvision: torchvision's ImageNet Inception v3.")
@download_options
def download_inception(kind: str, root: Path | None, url: str | None, sha256: str) -> None:
    """Fetch the Inception weights `i2i evaluate` computes FID and KID with."""
    from i2i.tools.download import download_inception as fetch_inception

    _download(f"inception ({kind})", lambda show: fetch_inception(kind, root, url, sha256, show),
              "Inception weights", "evaluate with")


@download.command(name="list")
@click.argument("kind", required=False, type=click.Choice(["dataset", "model", "inception"]))
def download_list(kind: str | None) -> None:
    """List what `i2i download` can fetch (of one KIND), with upstream's URL."""
    from i2i.tools.download import KINDS, entries

    rows = [(k, entry.qualified, entry.layout or entry.protocol, entry.url)
            for k in ([kind] if kind else KINDS) for entry in entries(k)]
    # aligned columns, the URL last and never wrapped or folded (in a narrow terminal or a log), so it stays copyable
    widths = [max(len(row[i]) for row in [("kind", "name", "layout")] + rows) for i in range(3)]
    for number, row in enumerate([("kind", "name", "layout", "url")] + rows):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3]
        stdout.print(line, style="bold" if number == 0 else None, highlight=False, markup=False, soft_wrap=True)



#: (what was being done, what shrinks the memory it needs) for an out-of-memory a command's own code did not
#: name: training's is in the step, so the recipe keys that size it
_TRAINING_FIXES = ("training", "lower data.crop_size, data.batch_size or generator.channels (--set KEY=VALUE), use"
                   " run.precision=bf16 on a GPU, or train on a device with more memory (run.device)")
_MEMORY_FIXES = {"run": _TRAINING_FIXES}  # sweep trains in child processes, each of which says this itself
_MEMORY_FIX = ("", "use smaller images (--size N), tiles (--tile N), a smaller --batch-size, or a device with more"
                   " memory (--device), where the command has them")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `i2i` command: one clear line per error, the traceback only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            cli.main(args, prog_name="i2i", standalone_mode=False)
    except click.exceptions.Abort:
        stderr.print("interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        stderr.print(f"interrupted: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(130)
    except I2IError as exc:
        if debug:
            traceback.print_exc()
        stderr.print(f"{_rank_prefix()}error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # an unexpected failure still ends in one line unless --debug
        if debug:
            traceback.print_exc()
        if is_out_of_memory(exc):  # one the command did not name more closely: say what shrinks its memory
            doing, fixes = _MEMORY_FIXES.get(next((a for a in args if not a.startswith("-")), ""), _MEMORY_FIX)
            stderr.print(f"{_rank_prefix()}error: {out_of_memory_error(exc, doing, fixes)}", highlight=False,
                         markup=False, soft_wrap=True)
            sys.exit(EXIT_ERROR)
        if not debug:
            stderr.print(f"{_rank_prefix()}error: {type(exc).__name__}: {exc} (run again with --debug for the"
                         " traceback)",
                         highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
