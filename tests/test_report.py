"""report.py: sample grids, loss plots, metrics parsing and the self-contained report.html."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from i2i.tools.pages import PAD, PAGE_CSS, html_page
from i2i.tools.report import plot_losses, read_metrics, save_samples, write_report

NAMES = ["real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _visuals(n: int = 2, h: int = 8, w: int = 10) -> dict[str, torch.Tensor]:
    return {name: torch.rand(n, 3, h, w) * 2 - 1 for name in NAMES}


def _fake_run(root: Path, name: str = "cyclegan-test") -> Path:
    run = root / "runs" / "cyclegan"
    run.mkdir(parents=True)
    (run / "recipe.toml").write_text(f'[run]\nname = "{name}"\n\n[model]\nlambda_cycle = 10.0\n')
    lines = []
    for i, step in enumerate((100, 200, 300)):
        losses = {"G_A": 0.4 - 0.01 * i, "cycle_A": 1.2, "D_A": 0.25, "idt_B": 0.6}
        lines.append(json.dumps({"step": step, "epoch": 0, "lr": 0.0002, "elapsed": 12.5 * (i + 1),
                                 "losses": losses}))
    lines.append('{"step": 400, "epoch": 0, "losses": {"G_A": 0.3')  # crashed mid-write
    (run / "metrics.jsonl").write_text("\n".join(lines))
    (run / "checkpoints" / "step-00000200").mkdir(parents=True)
    return run


def test_read_metrics_skips_truncated_and_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "losses": {"a": 1}}\n\n[1, 2]\n{"step": 2, "losses": {"a"')
    assert read_metrics(tmp_path) == [{"step": 1, "losses": {"a": 1}}]
    assert read_metrics(tmp_path / "missing") == []


def test_save_samples_grid_layout_and_sidecar(tmp_path: Path) -> None:
    n, h, w = 2, 8, 10
    visuals = _visuals(n, h, w)
    visuals["real_A"] = torch.full((n, 3, h, w), -1.0)  # first column black
    visuals["fake_B"] = torch.full((n, 3, h, w), 1.0)   # second column white
    path = tmp_path / "samples" / "step-00000100.png"
    save_samples(visuals, path)

    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        # One row per sample, one column per visual, PAD pixels between and around every cell.
        assert im.size == (len(NAMES) * (w + PAD) + PAD, n * (h + PAD) + PAD)
        assert im.getpixel((PAD, PAD)) == (0, 0, 0)
        assert im.getpixel((PAD + w + PAD, h + 2 * PAD)) == (255, 255, 255)  # row 1, column 1
        assert im.getpixel((0, 0)) == (255, 255, 255)  # padding is white
    assert json.loads(path.with_suffix(".json").read_text()) == {"columns": NAMES, "rows": n}
    assert sorted(p.name for p in path.parent.iterdir()) == ["step-00000100.json", "step-00000100.png"]


def test_plot_losses_writes_png(tmp_path: Path) -> None:
    records = [{"step": s, "losses": {"G": 1 / (s + 1), "D": 0.5}} for s in range(50)]
    plot_losses(records, tmp_path / "losses.png")
    assert (tmp_path / "losses.png").read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["losses.png"]


def test_write_report_full_run(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    save_samples(_visuals(), run / "samples" / "step-00000100.png")
    save_samples(_visuals(), run / "samples" / "step-00000200.png")

    out = write_report(run)
    assert out == run / "report.html"
    page = out.read_text(encoding="utf-8")
    assert "cyclegan-test" in page
    for loss in ("G_A", "cycle_A", "D_A", "idt_B"):
        assert loss in page
    for column in NAMES:
        assert column in page
    # Relative links, newest first.
    new, old = page.find('src="samples/step-00000200.png"'), page.find('src="samples/step-00000100.png"')
    assert -1 < new < old
    assert str(tmp_path) not in page
    assert "step-00000200" in page and "lambda_cycle" in page  # checkpoint and recipe shown
    assert "Nothing has been logged" not in page

    png = run / "losses.png"
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == PNG_MAGIC
    with Image.open(png) as im:
        im.verify()
    assert not list(run.glob(".*.tmp"))


def test_write_report_without_metrics(tmp_path: Path) -> None:
    run = tmp_path / "empty-run"
    run.mkdir()
    (run / "recipe.toml").write_text('[run]\nname = "fresh"\n')
    page = write_report(run).read_text(encoding="utf-8")
    assert "fresh" in page
    assert "Nothing has been logged yet" in page
    assert not (run / "losses.png").exists()


def test_write_report_escapes_recipe(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, name="<script>alert(1)</script>")
    page = write_report(run).read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_html_page_is_one_skeleton_with_or_without_the_report_style() -> None:
    own = ".mine{color:red}"
    styled = html_page("a <b> & c", ["<p>x</p>"], own)
    bare = html_page("a <b> & c", ["<p>x</p>"], own, base_css=False)
    for page in (styled, bare):
        assert page.startswith("<!DOCTYPE html>") and "<title>a &lt;b&gt; &amp; c</title>" in page
        assert "<main>\n<p>x</p>\n</main>" in page and own in page
    assert f"<style>{PAGE_CSS}{own}</style>" in styled
    assert f"<style>{own}</style>" in bare and PAGE_CSS not in bare
