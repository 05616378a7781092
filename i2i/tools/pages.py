"""What i2i's self-contained HTML pages are made of: escaping, links, numbers as shown, the page skeleton, sample
grids and loss-curve panels. report.html, compare.html and translate's index.html are written from these."""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["PAD", "PAGE_CSS", "SMOOTH_MIN_POINTS", "esc", "fmt_elapsed", "fmt_num", "grid_html", "href",
           "html_page", "latest_losses", "loss_series", "number", "panel", "panel_figure", "plot_curve",
           "relative_href", "smoothed", "starting_frozen", "starting_source"]

PAD = 2  # pixels of white between and around the cells of a sample grid
SMOOTH_MIN_POINTS = 20  # below this a smoothed line only hides the few points there are

#: the style every page starts from (html_page)
PAGE_CSS = """
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


# ---------------------------------------------------------------------------------------------------------
# Text and links


def esc(value: Any) -> str:
    """`value` as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def href(relative: Path) -> str:
    """A relative URL for a relative path, so a folder of pages still works when moved or zipped."""
    return "/".join(quote(part) for part in relative.parts)


def relative_href(target: Path, base: Path) -> str | None:
    """A relative URL from a page in folder `base` to `target` (symlinks resolved), or None when there is none
    (another drive on Windows)."""
    try:
        return href(Path(os.path.relpath(Path(target).resolve(), Path(base).resolve())))
    except ValueError:
        return None


def number(value: Any) -> float | None:
    """`value` as a finite float, or None (bools and strings are not losses)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt_num(value: Any) -> str:
    """A number as a table shows it: floats to 4 significant digits, anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def fmt_elapsed(seconds: Any) -> str:
    """Seconds as "1h 02m 03s", "2m 03s" or "3s"; "?" when not a finite number."""
    s = number(seconds)
    if s is None:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


# ---------------------------------------------------------------------------------------------------------
# Starting weights (RunFolder.read_starting_weights: the record only informs, so odd values are shown, not refused)


def starting_source(entry: dict[str, Any], network: str = "") -> str:
    """Where a network's starting weights came from: "runs/pre step 1200 (G_B, EMA)", or "random" for a network
    that is only frozen; the source's network is named when it is not `network`."""
    given = entry.get("from")
    if not given:
        return "random"
    step = entry.get("step")
    where = f"{given} step {step}" if isinstance(step, int) and not isinstance(step, bool) else str(given)
    weights = str(entry.get("weights") or "raw")
    detail = [str(entry["network"])] if entry.get("network") and entry.get("network") != network else []
    detail += [weights.upper()] if weights != "raw" else []
    return where + (f" ({', '.join(detail)})" if detail else "")


def starting_frozen(entry: dict[str, Any]) -> str:
    """What of a network is frozen: "model.1, model.4 for the first 200 steps", "all layers for the whole run", or ""
    when nothing is."""
    frozen = entry.get("frozen")
    if not isinstance(frozen, dict):
        return ""
    prefixes = [str(p) for p in frozen.get("prefixes") or []]
    layers = "all layers" if "*" in prefixes or not prefixes else ", ".join(prefixes)
    until = frozen.get("until_step")
    counted = isinstance(until, int) and not isinstance(until, bool) and until > 0
    span = f"first {until} step{'s' * (until != 1)}" if counted else "whole run"
    return f"{layers}, {span}"


# ---------------------------------------------------------------------------------------------------------
# Pages


def html_page(title: str, parts: list[str], css: str = "", *, base_css: bool = True) -> str:
    """A self-contained HTML page: PAGE_CSS (unless not `base_css`) plus `css`, then `parts` in order."""
    style = (PAGE_CSS if base_css else "") + css
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{style}</style></head>\n"
            "<body><main>\n" + "\n".join(parts) + "\n</main></body></html>\n")


def grid_html(png: Path, link: str, caption: str, columns: list[str], alt: str,
              titles: list[str] | None = None) -> str:
    """A figure showing the save_samples grid `png` (linked as `link`) with a label over each column."""
    try:
        with Image.open(png) as im:  # reads only the header
            width, height = im.size
    except OSError:
        return f'<figure><figcaption>{esc(caption)}</figcaption><p class="empty">unreadable image</p></figure>'
    # Upscale small cells 2-3x (pixelated) so 64 px samples are visible; large ones stay 1x.
    cell = (width - PAD) / len(columns) - PAD if columns else width
    scale = min(3, max(1, math.ceil(192 / max(cell, 1))))
    header = ""
    if columns:
        # Each label spans one cell plus one pad; offsetting by half a pad centres it over its image.
        # Percent padding is relative to the figure width, so it stays right when max-width shrinks it.
        half = PAD / 2 / width * 100
        titles = titles or columns  # a hover title shows a label the ellipsis cut
        labels = "".join(f'<span title="{esc(t)}">{esc(c)}</span>' for c, t in zip(columns, titles))
        header = (f'<div class="cols" style="grid-template-columns:repeat({len(columns)},1fr);'
                  f'padding:0 {half:.4f}%">{labels}</div>')
    link = esc(link)
    return (f'<figure><figcaption>{esc(caption)}</figcaption>'
            f'<a class="sample" href="{link}" style="width:{width * scale}px">{header}'
            f'<img src="{link}" width="{width}" height="{height}" loading="lazy" alt="{esc(alt)}"></a>'
            f'</figure>')


# ---------------------------------------------------------------------------------------------------------
# Loss curves


def loss_series(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """Loss name -> (steps, values) of metrics.jsonl records, names in order of first appearance."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, record in enumerate(records):
        losses = record.get("losses")
        if not isinstance(losses, dict):
            continue
        step = number(record.get("step"))
        x = float(i) if step is None else step
        for name, value in losses.items():
            # Register the name even for NaN/inf so a diverged loss gets a (labelled) empty panel.
            xs, ys = series.setdefault(str(name), ([], []))
            y = number(value)
            if y is not None:
                xs.append(x)
                ys.append(y)
    return series


def latest_losses(records: list[dict]) -> dict[str, Any]:
    """Each loss name's most recent logged value, names in order of first appearance."""
    latest: dict[str, Any] = {}
    for record in records:  # a method may log some losses only on some steps; keep each one's latest
        if isinstance(record.get("losses"), dict):
            latest.update(record["losses"])
    return latest


def smoothed(values: list[float]) -> list[float]:
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


def panel(fig: Figure, nrows: int, ncols: int, k: int, title: str) -> Axes:
    """Subplot `k` of a panel_figure, titled, with a step axis and a light grid."""
    ax = fig.add_subplot(nrows, ncols, k + 1)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    return ax


def plot_curve(ax: Axes, xs: list[float], ys: list[float], color: str, linestyle: str = "-",
               faint: float = 0.3) -> None:
    """A logged curve: the raw line, faint (alpha `faint`) under its smoothed trend once it is long enough."""
    smooth = len(ys) >= SMOOTH_MIN_POINTS
    ax.plot(xs, ys, color=color, linestyle=linestyle, alpha=faint if smooth else 1.0, linewidth=1,
            marker=None if len(ys) > 1 else "o")
    if smooth:
        ax.plot(xs, smoothed(ys), color=color, linestyle=linestyle, linewidth=1.8)
