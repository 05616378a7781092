"""The pages i2i writes, opened from disk in a real headless Chromium: report.html, a compare page of 3 runs and a
translate index.html of many images. Every image loads, the console stays free of errors, the layout fits the
window, the pages need no network; a screenshot of each is taken (`I2I_SCREENSHOTS=docs pytest
tests/test_pages_in_browser.py` renews those in docs/ that the README shows)."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import chrome, console_errors, open_page, screenshot, shots, unloaded_images  # noqa: F401 (fixtures)
from conftest import RECIPES, TINY
from i2i_stock.datasets import draw_synthetic

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three tiny CycleGAN runs on synthetic data that differ in one recipe key, and a 1-channel one."""
    from i2i.engine import train
    from i2i.recipe import load_recipe

    overrides = [TINY[i + 1] for i in range(0, len(TINY), 2)]
    root = tmp_path_factory.mktemp("runs")
    made = [train(load_recipe(RECIPES / "quickstart.toml", [*overrides, f"loss.cycle.weight={weight}"]),
                  root / f"cycle-{weight}") for weight in (5, 10, 20)]
    made.append(train(load_recipe(RECIPES / "quickstart.toml", [*overrides, "data.channels=1"]), root / "gray"))
    return made


def page_facts(driver) -> dict:
    """What a page looks like in the window: its widths, and the rendered width of its plots."""
    return driver.execute_script(
        "return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " plots: [...document.querySelectorAll('img.plot')].map(i => i.getBoundingClientRect().width),"
        " external: [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') ||"
        " e.getAttribute('href')).filter(u => /^(https?:)?\\/\\//.test(u))}")


def check_page(driver, page: Path) -> dict:
    """Open `page` from disk and assert every image loaded, no console error and no network reference."""
    open_page(driver, page)
    assert unloaded_images(driver) == [], page
    assert console_errors(driver) == [], page
    facts = page_facts(driver)
    assert facts["external"] == [], f"{page} loads from the network: {facts['external']}"
    return facts


def test_report_pages_load_whole_in_a_browser(chrome, runs, shots):  # noqa: F811
    for run in (runs[3], runs[0]):  # 1-channel and RGB samples (the RGB one is the screenshot)
        facts = check_page(chrome, run / "report.html")
        assert facts["scroll"] <= facts["inner"], "the report is wider than the window"
        assert facts["plots"] and min(facts["plots"]) >= 600, f"loss plots are squeezed: {facts['plots']}"
        assert chrome.execute_script("return document.querySelectorAll('img').length") >= 3
    screenshot(chrome, shots / "report.png", height=1400)


def test_a_compare_page_of_3_runs_loads_whole_and_fits(cli, chrome, runs, shots, tmp_path):  # noqa: F811
    out = tmp_path / "compare"
    result = cli("compare", *runs[:3], "--out", out, "--samples", "2", "--device", "cpu")
    assert result.code == 0, result.err
    facts = check_page(chrome, out / "compare.html")
    assert facts["scroll"] <= facts["inner"], "the compare page is wider than the window (the table scrolls inside)"
    assert facts["plots"] and min(facts["plots"]) >= 600
    text = chrome.find_element("tag name", "body").text
    assert "Comparison of 3 runs" in text and "loss.cycle.weight" in text
    screenshot(chrome, shots / "compare.png", height=1400)


def test_a_translate_index_of_many_images_loads_lazily_and_fits(cli, chrome, runs, shots, tmp_path):  # noqa: F811
    images = tmp_path / "photos"
    images.mkdir()
    for i in range(60):
        draw_synthetic(9, "test", "A", i, 40).save(images / f"{i:02d}.png")
    out = tmp_path / "translated"
    result = cli("translate", runs[0], images, "--out", out, "--device", "cpu", "--batch-size", "8")
    assert result.code == 0, result.err
    open_page(chrome, out / "index.html")
    lazy = chrome.execute_script("return [...document.images].filter(i => i.loading === 'lazy').length")
    assert lazy == 120  # 60 inputs and 60 outputs, loaded as they scroll into view
    facts = check_page(chrome, out / "index.html")
    assert facts["scroll"] <= facts["inner"]
    open_page(chrome, out / "index.html")
    screenshot(chrome, shots / "translate-index.png", height=1000)
