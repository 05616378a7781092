"""`i2i demo`: the Gradio page driven in a real headless Chromium (upload, pick a direction and a size, translate,
download; a file that is no image; uploads over the limits) and the command's own lines (a bad checkpoint, no
Gradio, --host 0.0.0.0, Ctrl-C and kill). The screenshot the README shows is taken here
(`I2I_SCREENSHOTS=docs/browser pytest tests/test_demo.py` renews docs/browser/demo.png)."""

from __future__ import annotations

import importlib.util
import io
import select
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from browser import chrome, console_errors, open_page, screenshot, shots  # noqa: F401 (fixtures)
from conftest import RECIPES, TINY, error_line
from i2i_stock.datasets import draw_synthetic

# Gradio's own warnings (its use of pandas, in the server's threads) are Gradio's business, not the demo's
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::Warning:gradio")]
needs_gradio = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                  reason='the demo needs Gradio: pip install "i2i-toolkit[demo]"')

SIZE = (318, 242)  # not multiples of the generator's 4: the page pads and crops back as `i2i translate` does
WAIT = 30  # seconds any one thing in the page may take to appear (a busy CI machine); none takes ~1 s here


def free_port() -> int:
    """A port nothing listens on now (the OS's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained CycleGAN run (both directions)."""
    from i2i.engine import train
    from i2i.recipe import load_recipe

    overrides = [TINY[i + 1] for i in range(0, len(TINY), 2)]
    return train(load_recipe(RECIPES / "quickstart.toml", overrides), tmp_path_factory.mktemp("demo") / "run")


@pytest.fixture(scope="module")
def model(run: Path) -> Any:
    """The run's generators, loaded once for every demo of this module."""
    from i2i.tools.demo import load_model

    return load_model(run, "cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A picture, a text file, a text file named .png, a 60 kB PNG of noise and a small-file 150x150 PNG."""
    folder = tmp_path_factory.mktemp("uploads")
    made = {name: folder / name for name in ("shapes.png", "notes.txt", "fake.png", "noise.png", "flat.png")}
    draw_synthetic(0, "test", "A", 3, 320).resize(SIZE, Image.BICUBIC).save(made["shapes.png"])
    made["notes.txt"].write_text("a shopping list, not an image\n")
    made["fake.png"].write_text("this is not a PNG\n")
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(made["noise.png"])
    Image.new("RGB", (150, 150), (90, 140, 200)).save(made["flat.png"])
    return made


def serving(run: Path, model: Any, **limits: Any) -> Iterator[str]:
    """A demo of `run` served on a free port of 127.0.0.1 in this process; its URL, until the test module ends."""
    pytest.importorskip("gradio", reason='the demo needs Gradio: pip install "i2i-toolkit[demo]"')
    from i2i.tools.demo import build_demo, close_demo, launch_demo

    demo = build_demo(run, model=model, **limits)
    url = launch_demo(demo, "127.0.0.1", free_port())
    try:
        yield url
    finally:
        close_demo(demo)


@pytest.fixture(scope="module")
def server(run: Path, model: Any) -> Iterator[str]:
    """The demo with its default limits."""
    yield from serving(run, model)


@pytest.fixture(scope="module")
def strict_server(run: Path, model: Any) -> Iterator[str]:
    """A demo that takes uploads up to 10 kB and images up to 0.002 megapixels (e.g. 50x40)."""
    yield from serving(run, model, max_upload_mb=0.01, max_pixels=2000)


# ---------------------------------------------------------------------------------------------------------
# Driving the page


def wait_until(driver: Any, condition: Callable[[], Any], what: str) -> Any:
    """Poll `condition` until it returns something truthy (that); fail naming `what` and the page's status."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda _: condition())
    except TimeoutException:
        pytest.fail(f"timed out waiting for {what}; status: {status(driver)!r}; page: {page_text(driver)[:800]!r}")


def open_demo(driver: Any, url: str) -> None:
    """Load the demo page and wait until its upload box is there."""
    open_page(driver, url)
    wait_until(driver, lambda: driver.find_elements("css selector", "#upload input[type=file]"), "the upload box")


def upload(driver: Any, path: Path) -> None:
    """Drop `path` in the upload box (as a person picking it in the file dialog)."""
    driver.find_element("css selector", "#upload input[type=file]").send_keys(str(path))


def status(driver: Any) -> str:
    found = driver.find_elements("id", "status")
    return found[0].text if found else ""


def page_text(driver: Any) -> str:
    return driver.find_element("tag name", "body").text


def shown_size(driver: Any, elem_id: str) -> tuple[int, int] | None:
    """The natural size of the loaded image in the component `elem_id`, or None while there is none."""
    size = driver.execute_script(
        "const i = document.querySelector(`#${arguments[0]} img`);"
        "return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null;", elem_id)
    return tuple(size) if size else None


# Notes whether the status showed Gradio's progress tracker (it is hidden when idle): a status that reads as before
# the click (the same error again) must not pass for the answer before the request has even gone out.
WATCH_STATUS = """
const status = document.getElementById('status');
window.i2iBusy = false;
if (window.i2iWatch) window.i2iWatch.disconnect();
window.i2iWatch = new MutationObserver(() => {
  const tracker = status.querySelector('[data-testid=status-tracker]');
  if (tracker && !tracker.classList.contains('hide')) window.i2iBusy = true;
});
window.i2iWatch.observe(status, {subtree: true, childList: true, characterData: true, attributes: true});
"""
IDLE_AFTER_BUSY = """
const tracker = document.querySelector('#status [data-testid=status-tracker]');
return window.i2iBusy && (!tracker || tracker.classList.contains('hide'));
"""


def translate(driver: Any, expect: str) -> str:
    """Press Translate and wait for the answer: a status holding `expect`; the status."""
    driver.execute_script(WATCH_STATUS)
    driver.find_element("id", "translate").click()
    return wait_until(driver, lambda: driver.execute_script(IDLE_AFTER_BUSY) and expect in (text := status(driver))
                      and text, f"a status with {expect!r}")


def downloaded(driver: Any) -> Image.Image:
    """The output file the page offers, fetched from the server as the browser would."""
    link = wait_until(driver, lambda: driver.execute_script(
        "const a = document.querySelector('#download a[href]'); return a && a.href;"), "the download link")
    with urllib.request.urlopen(link, timeout=WAIT) as response:
        return Image.open(io.BytesIO(response.read()))


def expected(run: Path, path: Path, direction: str, size: int | None = None) -> np.ndarray:
    """What `i2i translate` writes for `path`: the pixels the page must give."""
    from i2i.cli import main

    out = path.parent / f"expected-{direction}-{size}"
    main(["translate", str(run), str(path), "--out", str(out), "--direction", direction, "--device", "cpu",
          *(["--size", str(size)] if size else [])])
    return pixels(Image.open(out / path.name))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


# ---------------------------------------------------------------------------------------------------------
# The page


def test_an_upload_is_translated_both_ways_and_at_a_size(chrome, server, run, images, shots):  # noqa: F811
    open_demo(chrome, server)
    upload(chrome, images["shapes.png"])
    assert wait_until(chrome, lambda: shown_size(chrome, "input"), "the input preview") == SIZE

    # AtoB (the default) at a shorter side of 64 px: 318x242 scales to 84x64 (rounded to the multiple of 4)
    size_box = chrome.find_element("css selector", "#size input")
    size_box.clear()
    size_box.send_keys("64")
    translate(chrome, "Translated shapes.png AtoB at 84x64")
    assert wait_until(chrome, lambda: shown_size(chrome, "output"), "the output image") == (84, 64)
    assert np.array_equal(pixels(downloaded(chrome)), expected(run, images["shapes.png"], "AtoB", 64))

    # BtoA at the image's own size
    size_box.clear()
    size_box.send_keys("0")
    chrome.find_element("css selector", "#direction input[value=BtoA]").click()
    translate(chrome, "Translated shapes.png BtoA at 318x242")
    assert wait_until(chrome, lambda: shown_size(chrome, "output") == SIZE, "the full-size output")
    output = downloaded(chrome)
    assert output.format == "PNG" and output.size == SIZE
    assert np.array_equal(pixels(output), expected(run, images["shapes.png"], "BtoA"))
    assert not np.array_equal(pixels(output), pixels(Image.open(images["shapes.png"])))
    assert console_errors(chrome) == []
    screenshot(chrome, shots / "demo.png", height=1000)


def test_a_file_that_is_no_image_gets_a_message_and_the_server_keeps_serving(chrome, server, images):  # noqa: F811
    for name in ("notes.txt", "fake.png"):  # refused on upload, and again if Translate is pressed anyway
        open_demo(chrome, server)
        upload(chrome, images[name])
        message = f"Error: cannot read image {name}: not an image file, or a format PIL cannot read"
        wait_until(chrome, lambda: status(chrome) == message, f"the message for {name}")
        assert translate(chrome, "Error") == message
        assert shown_size(chrome, "output") is None
        text = page_text(chrome)
        assert "Traceback" not in text and "/gradio/" not in text  # nor the path of Gradio's copy of the upload
        assert console_errors(chrome) == []
    open_demo(chrome, server)
    upload(chrome, images["shapes.png"])
    translate(chrome, "Translated shapes.png AtoB at 318x242")
    assert wait_until(chrome, lambda: shown_size(chrome, "output"), "the output image") == SIZE


def test_uploads_over_the_limits_get_a_message(chrome, strict_server, images):  # noqa: F811
    # over --max-upload-mb: Gradio itself refuses the upload (max_file_size), before any of it is stored
    open_demo(chrome, strict_server)
    upload(chrome, images["noise.png"])
    # both read from one look at the page: Gradio's toast goes away after a few seconds, and on a loaded machine a
    # second look can come after it (the size message was seen, then the file name was not)
    def with_message() -> str | None:
        text = page_text(chrome)
        return text if "exceed the maximum allowed size" in text else None

    text = wait_until(chrome, with_message, "the size message")
    assert 'noise.png' in text and "Traceback" not in text
    # the browser logs the refused upload's 413 and the status poll of an upload that never started (404)
    assert all("upload" in error or "Response" in error for error in console_errors(chrome)), console_errors(chrome)
    # over --max-pixels (a small file of many pixels): refused from its header, before it is decoded
    open_demo(chrome, strict_server)
    upload(chrome, images["flat.png"])
    message = "Error: flat.png is 150x150, 0.0225 megapixels, more than the 0.002 this demo takes (--max-pixels)"
    wait_until(chrome, lambda: status(chrome) == message, "the pixel message")
    assert console_errors(chrome) == []


# ---------------------------------------------------------------------------------------------------------
# The limits, without a browser


def test_limits_name_the_file_and_the_setting(images, model):
    from i2i.tools.demo import Limits, UserError, read_upload, translate_file

    with pytest.raises(UserError, match=r"^noise\.png is 0\.0[5-9] MB, more than the 0\.01 MB this demo takes"
                                        r" \(--max-upload-mb\)$"):
        read_upload(images["noise.png"], Limits(max_upload_mb=0.01), "noise.png")
    with pytest.raises(UserError, match=r"a shorter side of 4000 px would make this 318x242 image 21"
                                        r" megapixels, more than the 16 this demo takes: pick a smaller size"):
        translate_file(model, images["shapes.png"], "AtoB", 4000, Limits())
    with pytest.raises(UserError, match="the size -3 must be at least 1 pixel"):
        translate_file(model, images["shapes.png"], "AtoB", -3, Limits())
    with pytest.raises(UserError, match="direction 'AtoA' is not available: use AtoB, BtoA"):
        translate_file(model, images["shapes.png"], "AtoA", None, Limits())


# ---------------------------------------------------------------------------------------------------------
# The command


@needs_gradio
def test_a_bad_checkpoint_is_one_line_before_any_server_starts(cli, tmp_path):
    line = error_line(cli("demo", tmp_path / "nowhere"))
    assert "does not exist" in line and "nowhere" in line


def test_without_gradio_the_command_says_how_to_install_it(cli, run, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now fails as if it were not installed
    line = error_line(cli("demo", run))
    assert line == 'error: the demo needs Gradio, an optional extra: pip install "i2i-toolkit[demo]"'


@needs_gradio
def test_other_machines_get_a_warning_and_ctrl_c_stops_cleanly(cli, run, monkeypatch):
    import i2i.tools.demo

    launched = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    # No server: one on 0.0.0.0 would be reachable from the network while the test runs.
    monkeypatch.setattr(i2i.tools.demo, "launch_demo", lambda demo, host, port: launched.append(host) or
                        f"http://{host}:{port}/")
    monkeypatch.setattr(i2i.tools.demo, "_wait_for_ctrl_c", interrupt)
    result = cli("demo", run, "--host", "0.0.0.0", "--port", "8123", "--device", "cpu")
    assert result.code == 0, result.err
    assert result.err.startswith("warning: --host 0.0.0.0 makes the demo reachable from other machines: anyone who"
                                 " reaches port 8123 can run the model"), result.err
    assert f"i2i demo of {run} at http://0.0.0.0:8123/ (Ctrl-C stops it)" in result.out
    assert result.out.rstrip().endswith("stopped the demo") and "Traceback" not in result.err
    result = cli("demo", run, "--device", "cpu")  # 127.0.0.1: no warning
    assert result.code == 0 and "warning" not in result.err and launched == ["0.0.0.0", "127.0.0.1"]


@needs_gradio
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_or_kill_stops_the_server_cleanly(run, stop):
    port = free_port()
    # SIGINT is restored first: a shell that starts the tests in the background leaves it ignored, as terminals don't
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
            " from i2i.cli import main; main(sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", code, "demo", str(run), "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)  # the URL is printed once the server answers
        first = proc.stdout.readline() if ready else "(nothing within 60 s)"
        assert first.startswith(f"i2i demo of {run} at http://127.0.0.1:{port}/"), first + proc.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=WAIT) as page:
            assert page.status == 200
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "stopped the demo" and err == ""
