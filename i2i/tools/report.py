"""What a person looks at after a run: sample grids, loss curves and a self-contained report.html."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Mapping

import torch
from PIL import Image
from torchvision.utils import make_grid

from i2i.storage.atomic import atomic_file
from i2i.storage.rundir import LOSSES_PLOT, RECIPE_FILE, STARTING_FILE, VALIDATION_PLOT, RunFolder
from i2i.tools.pages import (PAD, SMOOTH_MIN_POINTS, esc, fmt_elapsed, fmt_num, grid_html, href, html_page,
                             latest_losses, loss_series, number, panel, panel_figure, plot_curve, starting_frozen,
                             starting_source)

__all__ = ["plot_losses", "plot_validation", "read_metrics", "save_samples", "write_report"]

_NOT_PLOTTED = ("images", "kid_std")  # validation entries that are counts or spreads, not scores
_STARTING_CSS = ".start td{text-align:left}.start code{font-size:.85rem}"
_DIGEST_SHOWN = 12  # hex digits of a source's SHA-256 in the table (the full one is its hover title)


# ---------------------------------------------------------------------------- samples

def _displayable(batch: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images as RGB for a page: 1 channel (or 2) as gray from the first, 3 as they are, more as their
    first three bands (a false-colour view of multispectral data)."""
    channels = batch.shape[1]
    if channels == 3:
        return batch
    return batch[:, :3] if channels > 3 else batch[:, :1].expand(-1, 3, -1, -1)


def save_samples(visuals: Mapping[str, torch.Tensor], path: Path) -> None:
    """Save a PNG grid (row per sample, column per visual, in order) and a `.json` sidecar naming the columns.

    Visuals of any channel count are shown as `_displayable` makes them (gray, RGB or the first three bands)."""
    path = Path(path)
    names = list(visuals)
    if not names:
        raise ValueError("save_samples needs at least one visual")
    batches = []
    for name in names:
        t = visuals[name].detach().to("cpu", torch.float32)
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4 or t.shape[1] < 1:
            raise ValueError(f"visual {name!r} must be (N, C, H, W), got {tuple(visuals[name].shape)}")
        batches.append(_displayable(t))
    shape = batches[0].shape
    for name, t in zip(names, batches):
        if t.shape != shape:
            raise ValueError(f"visual {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)} like {names[0]!r}")
    n = shape[0]
    # (N, C, 3, H, W) -> (N*C, 3, H, W): row-major order puts sample i's visuals on row i.
    cells = torch.stack(batches, dim=1).flatten(0, 1)
    cells = ((cells + 1) / 2).nan_to_num(0.0).clamp_(0, 1)
    grid = make_grid(cells, nrow=len(names), padding=PAD, pad_value=1.0)
    array = grid.mul(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    with atomic_file(path) as f:
        Image.fromarray(array).save(f, format="PNG")
    with atomic_file(path.with_suffix(".json"), "w") as f:
        json.dump({"columns": names, "rows": int(n)}, f)


# ---------------------------------------------------------------------------- metrics

def read_metrics(run_dir: Path) -> list[dict]:
    """Return the records of the run's metrics.jsonl, skipping blank, truncated or non-object lines."""
    return RunFolder(run_dir).read_metrics()


def plot_losses(records: list[dict], path: Path) -> None:
    """Plot one subplot per loss name against step (raw line plus a smoothed trend when long) and save it as a PNG."""
    series = loss_series(records)
    fig, nrows, ncols = panel_figure(len(series))
    if not series:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no losses logged yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for k, (name, (xs, ys)) in enumerate(series.items()):
        ax = panel(fig, nrows, ncols, k, name)
        plot_curve(ax, xs, ys, "C0")
        if not ys:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    with atomic_file(Path(path)) as f:
        fig.savefig(f, format="png")


def _validation_series(records: list[dict]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Validation metric -> direction -> (steps, values), from the records' "validation" entries (each with its
    own step), in order of first appearance."""
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for record in records:
        found = record.get("validation")
        step = number(found.get("step")) if isinstance(found, dict) else None
        if step is None:
            continue
        for direction, metrics in found.items():
            for name, value in metrics.items() if isinstance(metrics, dict) else ():
                if name in _NOT_PLOTTED:
                    continue
                xs, ys = series.setdefault(str(name), {}).setdefault(str(direction), ([], []))
                if (y := number(value)) is not None:
                    xs.append(step)
                    ys.append(y)
    return series


def plot_validation(records: list[dict], path: Path) -> bool:
    """Plot one subplot per validation metric against step, a line per direction, as a PNG; False (and nothing
    written) when no record holds validation results."""
    series = _validation_series(records)
    if not series:
        return False
    fig, nrows, ncols = panel_figure(len(series))
    for k, (name, directions) in enumerate(series.items()):
        ax = panel(fig, nrows, ncols, k, name)
        for i, (direction, (xs, ys)) in enumerate(directions.items()):
            ax.plot(xs, ys, color=f"C{i}", linewidth=1.5, marker="o" if len(ys) < SMOOTH_MIN_POINTS else None,
                    markersize=3, label=direction)
        ax.legend(fontsize=8)
    with atomic_file(Path(path)) as f:
        fig.savefig(f, format="png")
    return True


# ---------------------------------------------------------------------------- report

def _run_name(run_dir: Path, recipe_text: str) -> str:
    try:
        name = tomllib.loads(recipe_text).get("run", {}).get("name")
    except (tomllib.TOMLDecodeError, AttributeError):
        name = None
    return str(name) if name else run_dir.resolve().name


def _sample_html(run_dir: Path, step: int, png: Path) -> str:
    try:
        meta = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
        columns = [str(c) for c in meta.get("columns", [])]
    except (OSError, ValueError, AttributeError):
        columns = []
    return grid_html(png, href(png.relative_to(run_dir)), f"step {step}", columns, f"samples at step {step}")


def _epoch_text(epoch: Any) -> str:
    """The epoch of a record as people count: metrics.jsonl counts from 0 (as the loop and checkpoints do), so
    the last of 3 epochs is "3", as the progress display says."""
    return str(epoch + 1) if isinstance(epoch, int) and not isinstance(epoch, bool) else fmt_num(epoch)


def _lr_text(lr: Any) -> str:
    """The learning rates of a record: "G 0.0002, D 0.0001" for one per optimizer group, or the one rate."""
    if isinstance(lr, dict):
        return ", ".join(f"{group} {fmt_num(rate)}" for group, rate in lr.items())
    return fmt_num(lr)


def _summary_html(run_dir: Path, records: list[dict]) -> str:
    last = records[-1]
    losses = latest_losses(records)
    items = [("step", last.get("step", "?")), ("records", len(records))]
    if "epoch" in last:
        items.append(("epoch", _epoch_text(last["epoch"])))
    items.append(("elapsed", fmt_elapsed(last.get("elapsed"))))
    if "lr" in last:
        items.append(("lr", _lr_text(last["lr"])))
    ckpts = [p.name for p in RunFolder(run_dir).checkpoints()]
    if ckpts:
        items.append(("checkpoints", f"{len(ckpts)} (latest {ckpts[-1]})"))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    if losses:
        head = "".join(f"<th>{esc(k)}</th>" for k in losses)
        row = "".join(f"<td>{esc(fmt_num(v))}</td>" for v in losses.values())
        table = f"<table><tr>{head}</tr><tr>{row}</tr></table>"
    else:
        table = '<p class="empty">no losses in the logged records</p>'
    return f'<div class="card"><dl>{dl}</dl>{table}</div>'


def _thousands(value: Any) -> str:
    """A count as people read it: 11,517."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else fmt_num(value)


def _loaded_text(entry: dict[str, Any]) -> str:
    """How much of a network its source filled: "16/16 tensors", with what a non-strict load skipped."""
    if not entry.get("from"):
        return "—"
    text = f"{fmt_num(entry.get('loaded', '?'))}/{fmt_num(entry.get('tensors', '?'))} tensors"
    if entry.get("strict") is False:
        text += f", {len(entry.get('skipped') or [])} skipped, {len(entry.get('random') or [])} left random"
    return text


def _starting_row(network: str, entry: dict[str, Any]) -> str:
    """One network's row of the starting-weights table; the full path and digest are hover titles."""
    file, digest = str(entry.get("file") or ""), str(entry.get("sha256") or "")
    frozen = entry.get("frozen") if isinstance(entry.get("frozen"), dict) else {}
    frozen_title = (f"{fmt_num(frozen.get('parameters', '?'))} parameter tensors,"
                    f" {_thousands(frozen.get('values', '?'))} values" if frozen else "")
    cells = [esc(network), esc(starting_source(entry, network)),
             f'<span title="{esc(file)}">{esc(Path(file).name)}</span>' if file else "—",
             f'<code title="{esc(digest)}">{esc(digest[:_DIGEST_SHOWN])}</code>' if digest else "—",
             esc(_loaded_text(entry)),
             f'<span title="{esc(frozen_title)}">{esc(starting_frozen(entry))}</span>' if frozen else "—"]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _starting_html(entries: dict[str, dict[str, Any]]) -> str:
    """The "Starting weights" section: what each network of a fine-tuned run started from and what is frozen, with
    the tensors a non-strict load skipped or left random."""
    head = "".join(f"<th>{h}</th>" for h in ("network", "source", "file", "sha256", "loaded", "frozen"))
    rows = "".join(_starting_row(str(network), entry) for network, entry in entries.items())
    details = []
    for network, entry in entries.items():
        for what, label in (("skipped", "skipped (not in this network, or another shape)"),
                            ("random", "left random (not in the source)")):
            keys = [str(k) for k in entry.get(what) or []]
            if keys:
                details.append(f"<details><summary>{esc(network)}: {len(keys)} tensor{'s' * (len(keys) != 1)}"
                               f" {esc(label)}</summary><pre>{esc(chr(10).join(keys))}</pre></details>")
    return ("<p>What the networks started from when the run began (the recipe's [init] tables, recorded in"
            f" {esc(STARTING_FILE)}); a network not listed started from its random initial weights.</p>"
            f'<div class="card"><table class="start"><tr>{head}</tr>{rows}</table>{"".join(details)}</div>')


def write_report(run_dir: Path) -> Path:
    """Write the run's loss plot (when there are metrics) and its report.html; return the html path."""
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    recipe_text = run.read_recipe_text()
    name = _run_name(run_dir, recipe_text)
    records = run.read_metrics()

    parts = [f"<h1>{esc(name)}</h1>", "<h2>Summary</h2>"]
    if records:
        parts.append(_summary_html(run_dir, records))
        plot_losses(records, run.losses_plot)
        parts += ["<h2>Losses</h2>",
                  f'<div class="card"><img class="plot" src="{LOSSES_PLOT}" alt="loss curves"></div>']
        if plot_validation(records, run.validation_plot):
            parts += ["<h2>Validation</h2>", "<p>The held-out metrics of the weights at each validated step"
                      " (callback.validation), as <code>i2i evaluate</code> measures them.</p>",
                      f'<div class="card"><img class="plot" src="{VALIDATION_PLOT}" alt="validation metrics"></div>']
    else:
        parts.append('<p class="empty">Nothing has been logged yet.</p>')
    starting = run.read_starting_weights()
    if starting:
        parts += ["<h2>Starting weights</h2>", _starting_html(starting)]

    samples = run.samples()[::-1]  # newest first
    parts.append("<h2>Samples</h2>")
    if samples:
        parts.append("<p>Newest first. Click a grid for the full-size image.</p>")
        parts += [_sample_html(run_dir, step, png) for step, png in samples]
    else:
        parts.append('<p class="empty">No samples yet.</p>')

    parts.append("<h2>Recipe</h2>")
    parts.append(f"<pre>{esc(recipe_text)}</pre>" if recipe_text else f'<p class="empty">No {RECIPE_FILE}.</p>')

    page = html_page(f"i2i report: {name}", parts, _STARTING_CSS if starting else "")
    out = run.report_file
    with atomic_file(out, "w") as f:
        f.write(page)
    return out
