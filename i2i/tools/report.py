"""What a person looks at after a run: sample grids, loss curves and a self-contained report.html."""

from __future__ import annotations

import html
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torchvision.utils import make_grid

from i2i.storage.atomic import atomic_file
from i2i.storage.rundir import LOSSES_PLOT, RECIPE_FILE, VALIDATION_PLOT, RunFolder

PAD = 2  # pixels of white between and around the cells of a sample grid
_EMA_MIN_POINTS = 20  # below this a smoothed line only hides the few points there are
_NOT_PLOTTED = ("images", "kid_std")  # validation entries that are counts or spreads, not scores


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


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None (bools and strings are not losses)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _loss_series(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """Loss name -> (steps, values), names in order of first appearance."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, record in enumerate(records):
        losses = record.get("losses")
        if not isinstance(losses, dict):
            continue
        step = _number(record.get("step"))
        x = float(i) if step is None else step
        for name, value in losses.items():
            # Register the name even for NaN/inf so a diverged loss gets a (labelled) empty panel.
            xs, ys = series.setdefault(str(name), ([], []))
            y = _number(value)
            if y is not None:
                xs.append(x)
                ys.append(y)
    return series


def _ema(values: list[float]) -> list[float]:
    """Bias-corrected exponential moving average, so the first points are not pulled towards zero."""
    # Span grows with the run so long runs get a visibly smooth trend and short ones stay responsive.
    span = max(5.0, len(values) / 20)
    beta = 1 - 2 / (span + 1)
    out, avg = [], 0.0
    for k, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**k))
    return out


def panel_figure(panels: int, top_inches: float = 0.0) -> tuple[Figure, int, int]:
    """A figure sized for `panels` subplots in up to 3 columns (and `top_inches` above them): fig, nrows, ncols."""
    ncols = min(3, max(1, panels))
    nrows = max(1, math.ceil(panels / ncols))
    width, height = 4.2 * ncols, 2.8 * nrows + top_inches
    # Figure + FigureCanvasAgg instead of pyplot: no global backend switch, no leaked figures.
    fig = Figure(figsize=(width, height), dpi=100)
    # Fixed margins rather than a layout engine: constrained layout doubled the time of each report update.
    fig.subplots_adjust(left=0.5 / width, right=1 - 0.15 / width, bottom=0.5 / height,
                        top=1 - (0.3 + top_inches) / height, wspace=0.25, hspace=0.55)
    FigureCanvasAgg(fig)
    return fig, nrows, ncols


def plot_losses(records: list[dict], path: Path) -> None:
    """Plot one subplot per loss name against step (raw line plus EMA when long) and save it as a PNG."""
    series = _loss_series(records)
    fig, nrows, ncols = panel_figure(len(series))
    if not series:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no losses logged yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for k, (name, (xs, ys)) in enumerate(series.items()):
        ax = _panel(fig, nrows, ncols, k, name)
        smooth = len(ys) >= _EMA_MIN_POINTS
        ax.plot(xs, ys, color="C0", alpha=0.3 if smooth else 1.0, linewidth=1, marker=None if len(ys) > 1 else "o")
        if smooth:
            ax.plot(xs, _ema(ys), color="C0", linewidth=1.8)
        if not ys:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    with atomic_file(Path(path)) as f:
        fig.savefig(f, format="png")


def _panel(fig: Figure, nrows: int, ncols: int, k: int, title: str):
    """Subplot `k` of a panel_figure, titled, with a step axis and a light grid."""
    ax = fig.add_subplot(nrows, ncols, k + 1)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    return ax


def _validation_series(records: list[dict]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Validation metric -> direction -> (steps, values), from the records' "validation" entries (each with its
    own step), in order of first appearance."""
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for record in records:
        found = record.get("validation")
        step = _number(found.get("step")) if isinstance(found, dict) else None
        if step is None:
            continue
        for direction, metrics in found.items():
            for name, value in metrics.items() if isinstance(metrics, dict) else ():
                if name in _NOT_PLOTTED:
                    continue
                xs, ys = series.setdefault(str(name), {}).setdefault(str(direction), ([], []))
                if (y := _number(value)) is not None:
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
        ax = _panel(fig, nrows, ncols, k, name)
        for i, (direction, (xs, ys)) in enumerate(directions.items()):
            ax.plot(xs, ys, color=f"C{i}", linewidth=1.5, marker="o" if len(ys) < _EMA_MIN_POINTS else None,
                    markersize=3, label=direction)
        ax.legend(fontsize=8)
    with atomic_file(Path(path)) as f:
        fig.savefig(f, format="png")
    return True


# ---------------------------------------------------------------------------- report

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#222}
main{max-width:1280px;margin:0 auto;padding:1.5rem}
h1{font-size:1.6rem;margin:0 0 1rem}h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
.card{background:#fff;border:1px solid #e2e4e8;border-radius:6px;padding:1rem;margin-bottom:1rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.25rem 1rem;margin:0 0 1rem}dt{color:#666}dd{margin:0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border:1px solid #e2e4e8;padding:.25rem .7rem;text-align:right}th{background:#f0f1f4;font-weight:600}
.plot{max-width:100%;height:auto}
figure{margin:0 0 1.5rem}figcaption{font-weight:600;margin-bottom:.3rem}
.sample{display:block;max-width:100%;text-decoration:none;color:inherit}
.cols{display:grid;box-sizing:border-box;font-size:.8rem;color:#555;text-align:center}
.cols span{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.sample img{display:block;width:100%;height:auto;image-rendering:pixelated}
pre{background:#fff;border:1px solid #e2e4e8;border-radius:6px;padding:1rem;overflow:auto;font-size:.85rem}
.empty{color:#666;font-style:italic}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(relative: Path) -> str:
    """A relative URL for a path under run_dir, so the folder still works when moved or zipped."""
    return "/".join(quote(part) for part in relative.parts)


def _fmt_num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _fmt_elapsed(seconds: Any) -> str:
    s = _number(seconds)
    if s is None:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


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
    return grid_html(png, _href(png.relative_to(run_dir)), f"step {step}", columns, f"samples at step {step}")


def grid_html(png: Path, href: str, caption: str, columns: list[str], alt: str,
              titles: list[str] | None = None) -> str:
    """A figure showing the save_samples grid `png` (linked as `href`) with a label over each column."""
    try:
        with Image.open(png) as im:  # reads only the header
            width, height = im.size
    except OSError:
        return f'<figure><figcaption>{_esc(caption)}</figcaption><p class="empty">unreadable image</p></figure>'
    # Upscale small cells 2-3x (pixelated) so 64 px samples are visible; large ones stay 1x.
    cell = (width - PAD) / len(columns) - PAD if columns else width
    scale = min(3, max(1, math.ceil(192 / max(cell, 1))))
    header = ""
    if columns:
        # Each label spans one cell plus one pad; offsetting by half a pad centres it over its image.
        # Percent padding is relative to the figure width, so it stays right when max-width shrinks it.
        half = PAD / 2 / width * 100
        titles = titles or columns  # a hover title shows a label the ellipsis cut
        labels = "".join(f'<span title="{_esc(t)}">{_esc(c)}</span>' for c, t in zip(columns, titles))
        header = (f'<div class="cols" style="grid-template-columns:repeat({len(columns)},1fr);'
                  f'padding:0 {half:.4f}%">{labels}</div>')
    href = _esc(href)
    return (f'<figure><figcaption>{_esc(caption)}</figcaption>'
            f'<a class="sample" href="{href}" style="width:{width * scale}px">{header}'
            f'<img src="{href}" width="{width}" height="{height}" loading="lazy" alt="{_esc(alt)}"></a>'
            f'</figure>')


def latest_losses(records: list[dict]) -> dict[str, Any]:
    """Each loss name's most recent logged value, names in order of first appearance."""
    latest: dict[str, Any] = {}
    for record in records:  # a method may log some losses only on some steps; keep each one's latest
        if isinstance(record.get("losses"), dict):
            latest.update(record["losses"])
    return latest


def _summary_html(run_dir: Path, records: list[dict]) -> str:
    last = records[-1]
    losses = latest_losses(records)
    items = [("step", last.get("step", "?")), ("records", len(records))]
    if "epoch" in last:
        items.append(("epoch", last["epoch"]))
    items.append(("elapsed", _fmt_elapsed(last.get("elapsed"))))
    if "lr" in last:
        items.append(("lr", _fmt_num(last["lr"])))
    ckpts = [p.name for p in RunFolder(run_dir).checkpoints()]
    if ckpts:
        items.append(("checkpoints", f"{len(ckpts)} (latest {ckpts[-1]})"))
    dl = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items)
    if losses:
        head = "".join(f"<th>{_esc(k)}</th>" for k in losses)
        row = "".join(f"<td>{_esc(_fmt_num(v))}</td>" for v in losses.values())
        table = f"<table><tr>{head}</tr><tr>{row}</tr></table>"
    else:
        table = '<p class="empty">no losses in the logged records</p>'
    return f'<div class="card"><dl>{dl}</dl>{table}</div>'


def html_page(title: str, parts: list[str], css: str = "") -> str:
    """A self-contained HTML page: the report's style (plus `css`), then `parts` in order."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_CSS}{css}</style></head>\n"
            "<body><main>\n" + "\n".join(parts) + "\n</main></body></html>\n")


def write_report(run_dir: Path) -> Path:
    """Write the run's loss plot (when there are metrics) and its report.html; return the html path."""
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    recipe_text = run.read_recipe_text()
    name = _run_name(run_dir, recipe_text)
    records = run.read_metrics()

    parts = [f"<h1>{_esc(name)}</h1>", "<h2>Summary</h2>"]
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

    samples = run.samples()[::-1]  # newest first
    parts.append("<h2>Samples</h2>")
    if samples:
        parts.append("<p>Newest first. Click a grid for the full-size image.</p>")
        parts += [_sample_html(run_dir, step, png) for step, png in samples]
    else:
        parts.append('<p class="empty">No samples yet.</p>')

    parts.append("<h2>Recipe</h2>")
    parts.append(f"<pre>{_esc(recipe_text)}</pre>" if recipe_text else f'<p class="empty">No {RECIPE_FILE}.</p>')

    page = html_page(f"i2i report: {name}", parts)
    out = run.report_file
    with atomic_file(out, "w") as f:
        f.write(page)
    return out
