"""Comparing runs for ablation studies: what differs, final losses and metrics, overlaid curves, translations.

`compare_runs` writes one self-contained page (compare.html, with its PNGs beside it) and a CSV. The files are
prefixed `compare` so that the output folder may also be a run or sweep folder without clobbering anything.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch import Tensor

from i2i.storage.atomic import atomic_file
from i2i.storage.checkpoint import STATE_FILE
from i2i.errors import I2IError, first_line, is_out_of_memory
from i2i.tools.pages import (esc, fmt_elapsed, fmt_num, grid_html, href, html_page, latest_losses, loss_series,
                             number, panel, panel_figure, plot_curve, relative_href, starting_frozen,
                             starting_source)
from i2i.tools.report import save_samples
from i2i.tools.rundata import held_out_items
from i2i.storage.rundir import EVALUATION_FILE, RECIPE_FILE, RunFolder

__all__ = ["CompareResult", "compare_runs"]

HTML_NAME, CSV_NAME, LOSSES_NAME = "compare.html", "compare.csv", "compare-losses.png"
DIRECTIONS = ("AtoB", "BtoA")  # shown first, in this order; any other direction a method records follows
MISSING = "—"
STARTING = "starting weights"  # the column of what each run's networks started from, when any run has a record
_PLACEHOLDER = 0.8  # cell value for a run that has no translation: light grey, so it reads as empty

_CSS = """
main{max-width:1700px}.wide{overflow-x:auto}
.runs{font-size:.85rem}.runs th,.runs td{padding:.2rem .5rem}.runs th.group{text-align:center;background:#e6e8ec}
.runs td.name,.runs th.name{text-align:left;position:sticky;left:0;background:#fff}.runs th.name{background:#f0f1f4}
.runs td.missing{color:#aaa;text-align:center}.runs td.text{text-align:left}
.notes{background:#fff8e1;border-color:#f0d68a}.notes ul{margin:0;padding-left:1.2rem}
details pre{margin:.5rem 0 0}summary{cursor:pointer;color:#444}
"""


@dataclass
class CompareResult:
    """What `compare_runs` wrote (page, CSV, images), the table as plain text, and what it could not show."""

    html: Path
    csv: Path
    table: str
    losses: Path | None = None
    grids: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Run:
    """One run folder and what the comparison reads from it."""

    path: Path
    name: str
    recipe: dict[str, Any]  # flattened dotted keys
    records: list[dict]
    losses: dict[str, Any]
    metrics: dict[str, Any]  # flattened numeric leaves of metrics.json
    directions: list[str] = field(default_factory=list)
    checkpoint: str = ""
    starting: dict[str, dict[str, Any]] = field(default_factory=dict)  # RunFolder.read_starting_weights

    @property
    def step(self) -> Any:
        """The step of the last logged record, or None."""
        return self.records[-1].get("step") if self.records else None

    @property
    def elapsed(self) -> float | None:
        """Seconds of training at the last logged record, or None."""
        return number(self.records[-1].get("elapsed")) if self.records else None


@dataclass
class _Column:
    """A table column: its group (recipe, starting weights, step, loss, metric, elapsed), its key and its CSV
    header."""

    group: str
    key: str
    header: str


# ---------------------------------------------------------------------------------------------------------
# Reading runs


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: {"loss": {"cycle": {"weight": 10}}} -> {"loss.cycle.weight": 10}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _numeric_leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """The numbers in a JSON tree under dotted keys; strings (like "split") and lists are not metrics."""
    if isinstance(tree, dict):
        found: dict[str, Any] = {}
        for key, value in tree.items():
            found.update(_numeric_leaves(value, f"{prefix}{key}."))
        return found
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix.rstrip("."): tree}
    return {}


def _check_runs(runs: list[Path]) -> list[Path]:
    """The run folders, each checked to be one (has recipe.toml), duplicates dropped."""
    if not runs:
        raise I2IError("nothing to compare: pass at least one run folder (written by `i2i run`)")
    seen: dict[Path, Path] = {}
    for given in (Path(p).expanduser() for p in runs):
        if not given.exists():
            raise I2IError(f"run folder {given} does not exist: pass folders written by `i2i run`")
        if not given.is_dir() or not RunFolder(given).recipe_file.is_file():
            raise I2IError(f"{given} is not a run folder (it has no {RECIPE_FILE}): pass folders written by `i2i run`")
        seen.setdefault(given.resolve(), given)
    return list(seen.values())


def _names(paths: list[Path]) -> list[str]:
    """Folder names; runs of the same name get as many parent folders as it takes to tell them apart."""
    # abspath, not resolve: a run reached through a symlink is named as the user named it.
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    depths = [1] * len(parts)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depths)]
        clashing = [i for i, name in enumerate(names) if names.count(name) > 1 and depths[i] < len(parts[i])]
        if not clashing:
            break
        for i in clashing:
            depths[i] += 1
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # only the same folder given twice over different paths (hard links) still clashes
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def _read_run(path: Path, name: str, notes: list[str]) -> _Run:
    """What the comparison shows of one run; unreadable extras become notes rather than errors."""
    folder = RunFolder(path)
    recipe = folder.read_recipe()
    records = folder.read_metrics()
    metrics: dict[str, Any] = {}
    metrics_file = folder.evaluation_file
    if metrics_file.is_file():
        try:
            # only the metrics: the file also records the step and data sizes it was measured at
            metrics = _numeric_leaves(json.loads(metrics_file.read_text(encoding="utf-8")).get("metrics", {}))
        except (OSError, ValueError, AttributeError) as exc:
            notes.append(f"{name}: cannot read {metrics_file.name} ({first_line(exc)}); its metrics are not shown")
    run = _Run(path, name, _flatten(recipe), records, latest_losses(records), metrics,
               starting=folder.read_starting_weights())
    checkpoint = folder.newest_checkpoint()
    if checkpoint is not None:
        run.checkpoint = checkpoint.name
        state_file = f"{checkpoint.name}/{STATE_FILE}"
        try:
            generators = folder.read_state(checkpoint).get("generators")  # checksum-verified
            run.directions = [str(d) for d in generators] if isinstance(generators, dict) else []
        except I2IError as exc:
            notes.append(f"{name}: {first_line(exc)}; its translations are not shown")
        else:
            if not run.directions:  # checkpoints of older i2i versions did not record it
                notes.append(f"{name}: {state_file} does not say which generator translates which way; its"
                             " translations are not shown")
    return run


# ---------------------------------------------------------------------------------------------------------
# The table


def _differing_keys(runs: list[_Run]) -> tuple[list[str], dict[str, Any]]:
    """Recipe keys whose values differ between runs (in recipe order), and the keys equal in all of them."""
    order: dict[str, None] = {}
    for run in runs:
        order.update(dict.fromkeys(run.recipe))
    differing, equal = [], {}
    for key in order:
        # Compared as shown rather than with ==, for which 1, 1.0 and true are all equal.
        if all(key in run.recipe for run in runs) and len({_recipe_text(run.recipe[key]) for run in runs}) == 1:
            equal[key] = runs[0].recipe[key]
        else:
            differing.append(key)
    return differing, equal


def _recipe_text(value: Any) -> str:
    """A recipe value as shown: strings bare, booleans lower-case, numbers as Python writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _starting_summary(entries: dict[str, dict[str, Any]]) -> str:
    """One cell of what a run's networks started from and what is frozen, e.g. "G_A, G_B ← pre step 6 (EMA);
    G_A frozen: model.1, first 100 steps"; "random" for a run without a record."""
    sources: dict[str, list[str]] = {}
    frozen = []
    for network, entry in entries.items():
        if entry.get("from"):
            where = starting_source(entry, network)
            left = (len(entry.get("skipped") or []), len(entry.get("random") or []))
            if any(left):
                where += f" [{left[0]} skipped, {left[1]} left random]"
            sources.setdefault(where, []).append(str(network))
        if what := starting_frozen(entry):
            frozen.append(f"{network} frozen: {what}")
    started = [f"{', '.join(networks)} ← {where}" for where, networks in sources.items()] or ["random"]
    return "; ".join(started + frozen)


def _columns(runs: list[_Run], differing: list[str]) -> list[_Column]:
    """Every table column in order: run keys that differ, starting weights (when a run has a record), step, final
    losses, metrics, elapsed."""
    columns = [_Column("recipe", key, key) for key in differing]
    if any(run.starting for run in runs):
        columns.append(_Column(STARTING, STARTING, STARTING.replace(" ", "_")))
    columns.append(_Column("step", "step", "step"))
    losses = dict.fromkeys(name for run in runs for name in run.losses)
    metrics = dict.fromkeys(name for run in runs for name in run.metrics)
    taken = {"run", "elapsed_s", *(c.header for c in columns)}
    for group, keys in (("loss", losses), ("metric", metrics)):
        for key in keys:
            # A loss named like a recipe key or a metric (unlikely) gets its group as prefix in the CSV header.
            header = key if key not in taken else f"{group}:{key}"
            taken.add(header)
            columns.append(_Column(group, key, header))
    columns.append(_Column("elapsed", "elapsed", "elapsed_s"))
    return columns


def _value(run: _Run, column: _Column) -> Any:
    """The raw value of a cell, or None when the run has none."""
    if column.group == "recipe":
        return run.recipe.get(column.key)
    if column.group == STARTING:
        return _starting_summary(run.starting)
    if column.group == "step":
        return run.step
    if column.group == "loss":
        return run.losses.get(column.key)
    if column.group == "metric":
        return run.metrics.get(column.key)
    return run.elapsed


def _cell(run: _Run, column: _Column) -> str:
    """A cell as shown on the page and in the terminal."""
    value = _value(run, column)
    if value is None:
        return MISSING
    if column.group == "recipe":
        return _recipe_text(value)
    if column.group == "elapsed":
        return fmt_elapsed(value)
    return fmt_num(value)


def _csv_cell(run: _Run, column: _Column) -> Any:
    """A cell as written to the CSV: full precision, empty when missing."""
    value = _value(run, column)
    if value is None:
        return ""
    return _recipe_text(value) if column.group == "recipe" else value


_GROUP_TITLES = {"recipe": "recipe", STARTING: "", "step": "", "loss": "final losses", "metric": "evaluation",
                 "elapsed": ""}


def _text_table(runs: list[_Run], columns: list[_Column], equal: int) -> str:
    """The table for a terminal: one column per run (ablations have few runs but many values), sections by group."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("")
    for run in runs:
        table.add_column(Text(run.name), justify="right")
    group = None
    for column in columns:
        title = _GROUP_TITLES[column.group]
        if column.group != group:
            if group is not None:
                table.add_section()
            if title:
                table.add_row(f"{title}:")
            group = column.group
        # Text, not str: rich would read a run name or value such as "[red]" as markup.
        table.add_row(Text(("  " if title else "") + column.key), *(Text(_cell(run, column)) for run in runs))
    console = Console(file=io.StringIO(), width=100_000, color_system=None, force_terminal=False,
                      legacy_windows=False)
    console.print(table)
    lines = [line.rstrip() for line in console.file.getvalue().strip("\n").splitlines()]
    return "\n".join([*lines, f"({equal} recipe key{'s' * (equal != 1)} equal in all runs not shown)"]) + "\n"


def _write_csv(runs: list[_Run], columns: list[_Column], path: Path) -> None:
    with atomic_file(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["run", *(c.header for c in columns)])
        for run in runs:
            writer.writerow([run.name, *(_csv_cell(run, c) for c in columns)])


def _table_html(runs: list[_Run], columns: list[_Column], out: Path) -> str:
    groups: list[tuple[str, int]] = []
    for column in columns:
        if groups and groups[-1][0] == column.group:
            groups[-1] = (column.group, groups[-1][1] + 1)
        else:
            groups.append((column.group, 1))
    top = '<th class="name" rowspan="2">run</th>'
    for group, span in groups:
        if _GROUP_TITLES[group]:
            top += f'<th class="group" colspan="{span}">{esc(_GROUP_TITLES[group])}</th>'
        else:  # a single column (step, elapsed) spans both header rows
            top += f'<th rowspan="2">{esc(group)}</th>'
    # <wbr> after dots lets long keys (loss.identity.weight, AtoB.psnr) break there instead of widening the table.
    second = "".join(f"<th>{esc(c.key).replace('.', '.<wbr>')}</th>" for c in columns if _GROUP_TITLES[c.group])
    rows = []
    for run in runs:
        report = RunFolder(run.path).report_file
        link = relative_href(report, out) if report.is_file() else None
        name = f'<a href="{esc(link)}">{esc(run.name)}</a>' if link else esc(run.name)
        cells = []
        for column in columns:
            value = _value(run, column)
            # Words (part names) read better left-aligned; numbers stay right-aligned to compare digits.
            cls = ' class="missing"' if value is None else ' class="text"' if isinstance(value, str) else ""
            cells.append(f"<td{cls}>{esc(_cell(run, column))}</td>")
        rows.append(f'<tr><td class="name">{name}</td>{"".join(cells)}</tr>')
    return (f'<div class="card wide"><table class="runs"><thead><tr>{top}</tr><tr>{second}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


# ---------------------------------------------------------------------------------------------------------
# Loss curves


def _plot_losses(runs: list[_Run], path: Path) -> bool:
    """One subplot per loss name, one line per run; False (nothing written) when no run logged a loss."""
    series = {run.name: loss_series(run.records) for run in runs}
    names = list(dict.fromkeys(name for s in series.values() for name in s))
    if not names:
        return False
    # tab10's colours, then dashed ones: past 10 runs colours alone repeat. A run keeps its style whether or
    # not the others logged anything, so the same run has the same colour in every comparison of these runs.
    styles = {run.name: (f"C{i % 10}", "-" if i < 10 else "--") for i, run in enumerate(runs)}
    logged = [run.name for run in runs if series[run.name]]
    # The legend (one entry per run that logged losses) sits above the panels, in rows of up to 4 runs.
    legend_cols = min(4, len(logged))
    legend_rows = math.ceil(len(logged) / legend_cols)
    fig, nrows, ncols = panel_figure(len(names), top_inches=0.28 * legend_rows + 0.1)
    for k, name in enumerate(names):
        ax = panel(fig, nrows, ncols, k, name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole; no 1.5 ticks on short runs
        for run in logged:
            color, dash = styles[run]
            xs, ys = series[run].get(name, ([], []))
            plot_curve(ax, xs, ys, color, dash, faint=0.25)
    handles = [Line2D([], [], color=styles[run][0], linestyle=styles[run][1], linewidth=2) for run in logged]
    fig.legend(handles, logged, loc="upper center", ncols=legend_cols, frameon=False, fontsize=10,
               bbox_to_anchor=(0.5, 1 - 0.05 / fig.get_figheight()))
    with atomic_file(path) as f:
        fig.savefig(f, format="png")
    return True


# ---------------------------------------------------------------------------------------------------------
# Translations


def _held_out(runs: list[_Run], samples: int, notes: list[str]) -> tuple[dict[str, Tensor], str] | None:
    """The first `samples` held-out items (A and B batches) of the first run whose dataset builds, and whence."""
    for run in runs:
        try:
            inputs, split, name = held_out_items(run.path, samples)
        except Exception as exc:  # any failure here costs the translations, never the rest of the page
            notes.append(f"{run.name}: cannot load its data for the translations ({first_line(exc)})")
            continue
        count = len(inputs["image" if "image" in inputs else "A"])
        return inputs, (f"The first {count} {split} image{'s' * (count != 1)} of {run.name}'s data ({name}),"
                        " translated by each run's newest checkpoint.")
    return None


def _translate(run: _Run, direction: str, inputs: Tensor, device: str, notes: list[str]) -> Tensor | None:
    """`inputs` translated by the run's generator for `direction`, or None (with a note) when it cannot be."""
    from i2i.tools.generators import load_generator, run_generator

    if not run.checkpoint or not run.directions:
        return None  # noted once per run when it was read, not once per direction
    if direction not in run.directions:
        notes.append(f"{run.name}: its checkpoint has no {direction} generator")
        return None
    try:
        generator = load_generator(run.path, direction, device=device)
        output = run_generator(generator, inputs).float().cpu()
    except Exception as exc:  # a damaged or incompatible checkpoint costs its column, not the page
        reason = (f"out of memory on {device} for {tuple(inputs.shape)} inputs" if is_out_of_memory(exc)
                  else first_line(exc))
        notes.append(f"{run.name}: cannot translate {direction} with {run.checkpoint} ({reason})")
        return None
    n, _, h, w = inputs.shape
    if output.dim() != 4 or output.shape[0] != n or output.shape[1] not in (1, 3) or output.shape[2:] != (h, w):
        notes.append(f"{run.name}: its {direction} generator gave outputs of shape {tuple(output.shape)} for inputs"
                     f" of shape {tuple(inputs.shape)}; not shown")
        return None
    return output


def _translations(runs: list[_Run], samples: int, device: str, out: Path, notes: list[str]
                  ) -> tuple[str, dict[str, Path]]:
    """The translations section of the page and the grid PNG of each direction."""
    if samples <= 0:
        return "", {}
    for run in runs:
        if not run.checkpoint:
            notes.append(f"{run.name}: no complete checkpoint yet, so no translations")
    found = list(dict.fromkeys(d for run in runs for d in run.directions))
    directions = [d for d in DIRECTIONS if d in found] + sorted(d for d in found if d not in DIRECTIONS)
    if not directions:
        return '<p class="empty">No run has a checkpoint to translate with.</p>', {}
    held = _held_out(runs, samples, notes)
    if held is None:
        return '<p class="empty">No run\'s data could be loaded to translate.</p>', {}
    inputs, whence = held
    parts = []
    grids: dict[str, Path] = {}
    missing = False
    for direction in directions:
        # N-domain data: images of several domains, which a conditioned generator takes to any target
        source = inputs["image"] if "image" in inputs else inputs["B" if direction == "BtoA" else "A"]
        visuals = {"input": source}
        titles = ["input"]
        for run in runs:
            output = _translate(run, direction, source, device, notes)
            visuals[run.name] = torch.full_like(source, _PLACEHOLDER) if output is None else output
            missing = missing or output is None
            titles.append(f"{run.name}: {run.checkpoint}" if output is not None else f"{run.name}: not available")
        png = out / f"compare-{direction}.png"
        save_samples(visuals, png)
        grids[direction] = png
        caption = {"AtoB": "A → B", "BtoA": "B → A"}.get(direction, direction.replace("to_", "→ ", 1))
        parts.append(grid_html(png, href(Path(png.name)), caption, list(visuals), f"{direction} translations",
                               titles))
    grey = " Grey cells: no translation (the notes above say why)." if missing else ""
    return "\n".join([f"<p>{esc(whence + grey)}</p>", *parts]), grids


# ---------------------------------------------------------------------------------------------------------
# The page


def compare_runs(runs: list[Path], out: Path, samples: int = 4, device: str = "auto") -> CompareResult:
    """Compare run folders: write out/compare.html (+ PNGs) and out/compare.csv, return the table as text."""
    paths = _check_runs([Path(p) for p in runs])
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise I2IError(f"--out {out} is a file: pass a folder for the comparison")
    if samples < 0:
        raise I2IError(f"--samples {samples} must be 0 or more")
    notes: list[str] = []
    infos = [_read_run(path, name, notes) for path, name in zip(paths, _names(paths))]
    differing, equal = _differing_keys(infos)
    columns = _columns(infos, differing)
    out.mkdir(parents=True, exist_ok=True)

    table = _text_table(infos, columns, len(equal))
    csv_path = out / CSV_NAME
    _write_csv(infos, columns, csv_path)
    losses_path = out / LOSSES_NAME
    plotted = _plot_losses(infos, losses_path)
    translations, grids = _translations(infos, samples, device, out, notes)

    count = len(infos)
    title = f"Comparison of {count} run{'s' * (count != 1)}"
    parts = [f"<h1>{esc(title)}</h1>"]
    keys = (f"the {len(differing)} recipe key{'s' * (len(differing) != 1)} that differ between the runs"
            if differing else "no recipe key differs between the runs")
    if any(c.group == STARTING for c in columns):
        keys += ", what its networks started from (its [init] tables) and which layers are frozen"
    parts.append(f"<p>One row per run: {esc(keys)}, the last logged step and losses, evaluation metrics (from"
                 f" the run's {EVALUATION_FILE}, where present) and training time. Click a run for its report; the table"
                 f' is also in <a href="{esc(CSV_NAME)}">{esc(CSV_NAME)}</a>.</p>')
    parts.append(_table_html(infos, columns, out))
    if equal:
        lines = "\n".join(f"{key} = {_recipe_text(value)}" for key, value in equal.items())
        parts.append(f"<details><summary>{len(equal)} recipe key{'s' * (len(equal) != 1)} equal in all runs"
                     f"</summary><pre>{esc(lines)}</pre></details>")
    if notes:
        items = "".join(f"<li>{esc(note)}</li>" for note in notes)
        parts.append(f'<h2>Notes</h2><div class="card notes"><ul>{items}</ul></div>')
    parts.append("<h2>Losses</h2>")
    if plotted:
        parts.append(f'<div class="card"><img class="plot" src="{esc(LOSSES_NAME)}" alt="loss curves of every'
                     ' run"></div>')
    else:
        parts.append('<p class="empty">No run has logged losses yet.</p>')
    if translations:
        parts += ["<h2>Translations</h2>", translations]

    html_path = out / HTML_NAME
    with atomic_file(html_path, "w") as f:
        f.write(html_page(f"i2i: {title}", parts, _CSS))
    return CompareResult(html_path, csv_path, table, losses_path if plotted else None, grids, notes)
