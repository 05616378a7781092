"""`i2i compare`: the table of differing recipe keys, losses and metrics, the CSV, the page and its images."""

from __future__ import annotations

import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import RECIPES, TINY, error_line

# Two runs differing in the identity weight, a third also in the generator's depth.
RUNS = {
    "idt0": ["--set", "loss.identity.weight=0"],
    "idt05": ["--set", "loss.identity.weight=0.5"],
    "blocks2": ["--set", "loss.identity.weight=0.5", "--set", "generator.blocks=2"],
}
SHORT = ["--set", "train.max_steps=2", "--set", "train.log_every=1", "--set", "train.checkpoint_every=0"]
CELL = 32 + 2  # data.crop_size plus the grid's padding


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny trained runs (trained once for the module: training dominates this file's time)."""
    from i2i.cli import main

    root = tmp_path_factory.mktemp("runs")
    found = {}
    # One thread: these networks are too small to gain from more, and on a busy CI machine competing threads
    # made training several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, extra in RUNS.items():
            try:
                main(["run", str(RECIPES / "quickstart.toml"), *TINY, *SHORT, *extra, "--out", str(root / name)])
            except SystemExit as exc:
                assert not exc.code, f"training {name} failed"
            found[name] = root / name
    finally:
        torch.set_num_threads(threads)
    # As `i2i evaluate` writes it: metrics per direction, beside numbers that are not metrics (step, sizes).
    (found["blocks2"] / "metrics.json").write_text(json.dumps(
        {"run": str(found["blocks2"]), "step": 2, "data": {"split": "test", "load_size": 36, "crop_size": 32},
         "metrics": {"AtoB": {"l1": 0.25, "psnr": 18.5, "ssim": 0.6}, "BtoA": {"l1": 0.3, "psnr": 17.0}}}))
    return found


class _Page(HTMLParser):
    """The links and images of a page, and the text of its table headers."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.headers: list[str] = []
        self._th: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("src"):
            self.images.append(found["src"])
        if found.get("href"):
            self.links.append(found["href"])
        if tag == "th":
            self._th = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "th" and self._th is not None:
            self.headers.append("".join(self._th).strip())
            self._th = None

    def handle_data(self, data: str) -> None:
        if self._th is not None:
            self._th.append(data)


def _parse(page: Path) -> _Page:
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_compare_three_runs(cli, runs: dict[str, Path], tmp_path: Path) -> None:
    result = cli("compare", *runs.values(), "--samples", "2", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "note:" not in result.err and "Traceback" not in result.err
    out = tmp_path / "compare"  # the default --out
    page = out / "compare.html"
    assert page.is_file() and str(page.relative_to(tmp_path)) in result.out

    parsed = _parse(page)
    assert parsed.images, "the page shows no images"
    for ref in parsed.images + parsed.links:
        target = (out / ref).resolve()
        assert target.is_file(), f"{ref} is referenced but missing"
        if ref in parsed.images:
            assert target.is_relative_to(out.resolve()), f"image {ref} lies outside the comparison folder"
            with Image.open(target) as im:
                im.load()
    # Rows: samples; columns: the input, then one per run.
    for direction in ("AtoB", "BtoA"):
        with Image.open(out / f"compare-{direction}.png") as im:
            assert im.size == (4 * CELL + 2, 2 * CELL + 2)

    # Only the keys that differ are columns; the ones equal everywhere (optim.lr) are counted, not shown.
    for shown in (parsed.headers, result.out):
        assert "loss.identity.weight" in shown and "generator.blocks" in shown
        assert "optim.lr" not in shown and "train.max_steps" not in shown
        assert "AtoB.psnr" in shown and "BtoA.l1" in shown and "G_A" in shown
    assert "split" not in parsed.headers
    assert "recipe keys equal in all runs" in result.out

    with open(out / "compare.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["run"] for row in rows] == list(RUNS)
    assert [row["loss.identity.weight"] for row in rows] == ["0.0", "0.5", "0.5"]
    assert [row["generator.blocks"] for row in rows] == ["1", "1", "2"]
    assert [row["AtoB.psnr"] for row in rows] == ["", "", "18.5"]
    assert all(row["step"] == "2" and float(row["elapsed_s"]) > 0 and float(row["cycle_A"]) > 0 for row in rows)
    assert "optim.lr" not in rows[0]


def test_compare_rejects_a_folder_that_is_not_a_run(cli, runs: dict[str, Path], tmp_path: Path) -> None:
    plain = tmp_path / "photos"
    plain.mkdir()
    line = error_line(cli("compare", runs["idt0"], plain, "--out", tmp_path / "out"))
    assert str(plain) in line and "not a run folder" in line and "recipe.toml" in line
    line = error_line(cli("compare", tmp_path / "missing"))
    assert "missing" in line and "does not exist" in line
    assert "at least one run" in error_line(cli("compare"))
    assert not (tmp_path / "out").exists()


def test_compare_notes_a_damaged_run_and_shows_it_anyway(cli, runs: dict[str, Path], tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["idt0"], damaged)
    (damaged / "metrics.jsonl").unlink()
    generator = damaged / "checkpoints" / "step-00000002" / "G_A.safetensors"
    generator.write_bytes(generator.read_bytes()[:100])  # truncated, as by a full disk

    result = cli("compare", runs["idt05"], damaged, "--samples", "1", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    assert "note: damaged: cannot translate AtoB" in result.err
    page = (tmp_path / "out" / "compare.html").read_text(encoding="utf-8")
    assert "damaged: cannot translate AtoB" in page
    with open(tmp_path / "out" / "compare.csv", newline="", encoding="utf-8") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert rows["damaged"]["step"] == "" and rows["damaged"]["G_A"] == "" and rows["idt05"]["step"] == "2"
    # Its BtoA generator is intact, so that direction still shows both runs.
    with Image.open(tmp_path / "out" / "compare-BtoA.png") as im:
        assert im.size == (3 * CELL + 2, CELL + 2)
