"""A fine-tuned run's starting weights on the pages people read: report.html's "Starting weights" section and the
"starting weights" column of `i2i compare` (source, step, weights variant, digest, what loaded, what is frozen)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from conftest import RECIPES, TINY

# A source folder name with HTML's special characters: every page must show it escaped (Windows forbids < >).
SOURCE = "pre&<b>" if os.name != "nt" else "pre&b"
SHORT = ["--set", "train.max_steps=2", "--set", "callback.checkpoints.every=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A source run with EMA weights (4 steps, no [init]), a fine-tuned run from it with frozen layers, and a
    non-strict one of a deeper generator (trained once for the module, as `i2i run` does)."""
    from i2i.cli import main

    root = tmp_path_factory.mktemp("finetune")
    src = root / SOURCE
    recipes = {
        "src": ["--set", "callback.ema.enabled=true"],
        "ft": [*SHORT, "--set", f"init.from={src}", "--set", 'init.G_A.freeze=["model.1"]',
               "--set", "init.G_A.freeze_steps=1", "--set", 'init.D_A.freeze=["*"]'],
        "loose": [*SHORT, "--set", f"init.from={src}", "--set", "init.strict=false", "--set", "generator.blocks=2"],
    }
    found = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks gain nothing from more threads on a busy machine
    try:
        for name, extra in recipes.items():
            out = src if name == "src" else root / name
            try:
                main(["run", str(RECIPES / "quickstart.toml"), *TINY, *extra, "--out", str(out)])
            except SystemExit as exc:
                assert not exc.code, f"training {name} failed"
            found[name] = out
    finally:
        torch.set_num_threads(threads)
    return found


class _Tables(HTMLParser):
    """Every table of a page (by class) as rows of cell texts, a cell spanning columns repeated over each, the
    hover titles inside cells, and the h2 headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.titles: list[str] = []
        self.headings: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._h2: list[str] | None = None
        self._span = 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(found.get("class") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
            self._span = int(found.get("colspan") or 1)
        elif tag == "h2":
            self._h2 = []
        if self._cell is not None and found.get("title"):
            self.titles.append(found["title"])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1] += ["".join(self._cell).strip()] * self._span  # a group header over each column
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "h2" and self._h2 is not None:
            self.headings.append("".join(self._h2).strip())
            self._h2 = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._h2):
            if part is not None:
                part.append(data)


def _parse(page: Path) -> _Tables:
    parser = _Tables()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _record(run: Path) -> dict:
    return json.loads((run / "starting_weights.json").read_text(encoding="utf-8"))["networks"]


def _digest(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def test_report_shows_what_each_network_started_from(runs: dict[str, Path]) -> None:
    page = runs["ft"] / "report.html"
    parsed = _parse(page)
    assert "Starting weights" in parsed.headings
    head, *rows = parsed.tables["start"]
    assert head == ["network", "source", "file", "sha256", "loaded", "frozen"]
    table = {row[0]: row for row in rows}
    assert sorted(table) == ["D_A", "D_B", "G_A", "G_B"]

    checkpoint = runs["src"] / "checkpoints" / "step-00000004"
    ema = _digest(checkpoint / "G_A.ema.safetensors")
    # generators start from the source's EMA weights (as translate would use them), discriminators from the raw ones
    assert table["G_A"][1:4] == [f"{runs['src']} step 4 (EMA)", "G_A.ema.safetensors", ema[:12]]
    assert table["D_A"][1:4] == [f"{runs['src']} step 4", "D_A.safetensors",
                                 _digest(checkpoint / "D_A.safetensors")[:12]]
    assert table["G_B"][3] == _digest(checkpoint / "G_B.ema.safetensors")[:12]
    tensors = _record(runs["ft"])["G_A"]["tensors"]
    assert table["G_A"][4] == f"{tensors}/{tensors} tensors" and tensors > 0
    assert table["G_A"][5] == "model.1, first 1 step"
    assert table["D_A"][5] == "all layers, whole run"
    assert table["G_B"][5] == table["D_B"][5] == "—"
    # the full digest and path are there on hover
    assert ema in parsed.titles and str(checkpoint / "G_A.ema.safetensors") in parsed.titles

    html = page.read_text(encoding="utf-8")
    if "<" in SOURCE:
        assert SOURCE not in html and "pre&amp;&lt;b&gt; step 4 (EMA)" in html


def test_report_of_a_non_strict_start_says_what_was_skipped_and_left_random(runs: dict[str, Path]) -> None:
    page = runs["loose"] / "report.html"
    table = {row[0]: row for row in _parse(page).tables["start"][1:]}
    entry = _record(runs["loose"])["G_A"]
    skipped, random = entry["skipped"], entry["random"]
    assert skipped and random, "a deeper generator than the source's must have tensors the source lacks"
    assert table["G_A"][4] == (f"{entry['loaded']}/{entry['tensors']} tensors, {len(skipped)} skipped,"
                               f" {len(random)} left random")
    assert table["D_A"][4].endswith(", 0 skipped, 0 left random")
    html = page.read_text(encoding="utf-8")
    assert f"G_A: {len(random)} tensors left random" in html and random[0] in html


def test_report_of_a_run_without_init_has_no_starting_weights(runs: dict[str, Path]) -> None:
    assert not (runs["src"] / "starting_weights.json").exists()
    page = runs["src"] / "report.html"
    parsed = _parse(page)
    assert "Starting weights" not in parsed.headings and "start" not in parsed.tables
    assert ".start" not in page.read_text(encoding="utf-8")  # not even its style


def test_compare_shows_each_runs_starting_weights(cli, runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = cli("compare", runs["src"], runs["ft"], runs["loose"], "--samples", "0", "--out", out)
    assert result.code == 0, result.err
    head, _, *rows = _parse(out / "compare.html").tables["runs"]
    # after the recipe keys that differ (init.from, ...), before the step
    assert head.index("starting weights") == head.index("step") - 1 and head[head.index("step") - 2] == "recipe"
    cells = {row[0]: row[head.index("starting weights")] for row in rows}
    where = f"{runs['src']} step 4"
    assert cells[SOURCE] == "random"
    assert cells["ft"] == (f"D_A, D_B ← {where}; G_A, G_B ← {where} (EMA); D_A frozen: all layers, whole run;"
                           f" G_A frozen: model.1, first 1 step")
    loose = _record(runs["loose"])["G_A"]
    assert f"G_A, G_B ← {where} (EMA) [{len(loose['skipped'])} skipped, {len(loose['random'])} left random]" \
        in cells["loose"]
    html = (out / "compare.html").read_text(encoding="utf-8")
    if "<" in SOURCE:
        assert f"{runs['src']} step 4" not in html  # only escaped

    assert "starting weights" in result.out and f"G_A, G_B ← {where} (EMA)" in result.out
    with open(out / "compare.csv", newline="", encoding="utf-8") as f:
        by_run = {row["run"]: row["starting_weights"] for row in csv.DictReader(f)}
    assert by_run == cells


def test_compare_of_runs_without_starting_weights_has_no_such_column(cli, runs: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = cli("compare", runs["src"], "--samples", "0", "--out", out)
    assert result.code == 0, result.err
    head = _parse(out / "compare.html").tables["runs"][0]
    assert "starting weights" not in head and "step" in head
    assert "starting weights" not in result.out
    assert "starting_weights" not in (out / "compare.csv").read_text(encoding="utf-8")
