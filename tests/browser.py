"""A real headless Chromium for the tests that look at i2i's pages: Debian's `chromium` and `chromedriver` (which
`.ci/run` installs) driven with selenium. Tests that need it skip, naming what is missing, only where it cannot be
found; `pytest -m browser` runs just them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

#: where Debian and Ubuntu put the browser and its driver (also looked up on PATH)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1280, 900)


def find_browser() -> tuple[str, str] | str:
    """(browser, chromedriver) paths, or the reason they cannot be used."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed (pip install -e ".[test]")'
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return ("no Chromium here (as root: apt-get install chromium chromium-driver, which .ci/run does); missing:"
                f" {', '.join(n for n, p in (('chromium', browser), ('chromedriver', driver)) if p is None)}")
    return browser, driver


def start_browser() -> Any:
    """A headless Chromium whose console messages can be read back (`console_errors`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if isinstance(found, str):
        pytest.skip(found)
    browser, driver = found
    options = Options()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--allow-file-access-from-files"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $I2I_SCREENSHOTS (e.g. docs, to renew the README's), else a temporary folder, so a
    test run never changes the repository."""
    chosen = os.environ.get("I2I_SCREENSHOTS")
    return Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    """One headless Chromium per test module (starting one takes about half a second)."""
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, page: Path | str) -> None:
    """Load a file (by path) or URL, after clearing the console log of earlier pages."""
    driver.get_log("browser")
    driver.get(Path(page).resolve().as_uri() if isinstance(page, Path) else page)


def unloaded_images(driver: Any) -> list[str]:
    """The src of every <img> on the page that has not loaded (scrolled into view first, so lazy ones load)."""
    driver.execute_script("document.querySelectorAll('img').forEach(i => {i.loading = 'eager';});"
                          "window.scrollTo(0, document.body.scrollHeight);")
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.complete ? null : new Promise(r => {i.onload = i.onerror = r;})))"
        ".then(() => done());")
    return driver.execute_script("return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                                 ".map(i => i.getAttribute('src'))")


def console_errors(driver: Any) -> list[str]:
    """Console messages of level SEVERE (errors, failed loads) since the page was opened."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: Any, path: Path, height: int | None = None) -> Path:
    """Save a PNG of the window (`height`: resize the window first, e.g. to show a whole page)."""
    if height is not None:
        driver.set_window_size(WINDOW[0], height)
    driver.execute_script("window.scrollTo(0, 0)")
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(*WINDOW)
    return path
