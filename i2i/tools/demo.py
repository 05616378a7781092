"""`i2i demo`: a small web page (Gradio) to try a trained generator on one image at a time.

A person drops an image, picks the direction (when the checkpoint has both) and optionally a size, and sees the
input beside its translation, with the output as a PNG to download. Loading and translating are `i2i translate`'s
(`i2i.tools.generators`); this module only adds the page, its limits and its messages. Gradio is the optional extra
`i2i-toolkit[demo]`: it is imported only here, and only when a demo is built.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from PIL import Image

from i2i.storage.checkpoint import STATE_FILE
from i2i.engine.checkpoints import offered_directions
from i2i.engine.devices import resolve_device
from i2i.errors import I2IError, first_line, is_out_of_memory
from i2i.data.images import read_image
from i2i.tools.generators import prepare_image, takes_gray, generator_file, generator_values, load_generator, \
    run_generator, to_image, to_tensor, weights_note
from i2i.contract.parts import Generator
from i2i.tiles.plan import Tiling
from i2i.storage.rundir import RunFolder

if TYPE_CHECKING:
    import gradio

__all__ = ["INSTALL_HINT", "DemoModel", "Limits", "UserError", "build_demo", "close_demo", "import_gradio",
           "is_loopback", "launch_demo", "load_model", "read_upload", "serve", "translate_file"]

INSTALL_HINT = 'the demo needs Gradio, an optional extra: pip install "i2i-toolkit[demo]"'
DIRECTIONS = ("AtoB", "BtoA")
MAX_UPLOAD_MB = 20.0
MAX_PIXELS = 16_000_000
_MB = 1_000_000  # Gradio's "mb" is 10^6 bytes too, so its limit and ours agree
_QUEUE = 16  # requests waiting for their turn at most; more are turned away rather than piling up
_CACHE_SECONDS = 3600  # uploads and outputs Gradio keeps are deleted an hour after they were written


@dataclass
class DemoModel:
    """The generators a demo translates with, by direction, and what the page says about them."""

    checkpoint: Path
    generators: dict[str, Generator]
    files: dict[str, Path]
    device: torch.device
    gray: bool = False  # the generators take one channel: inputs are converted to gray first
    weights: str = ""  # e.g. "EMA weights (G_A.ema, G_B.ema)", as `i2i translate` says it

    @property
    def multiple(self) -> int:
        """What the sides of an input must divide by (the largest size multiple of the generators)."""
        return max(max(1, g.size_multiple) for g in self.generators.values())


@dataclass
class Limits:
    """What one request may ask for."""

    max_upload_mb: float = MAX_UPLOAD_MB
    max_pixels: int = MAX_PIXELS


def import_gradio() -> Any:
    """The gradio module, with its usage analytics off; I2IError with the install command when it is missing."""
    # Before the import: Gradio reads this when it loads, and a demo must not phone home.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise I2IError(INSTALL_HINT) from None
    major = gradio.__version__.split(".")[0]
    if not major.isdigit() or int(major) < 6:  # the page uses Gradio 6 arguments (buttons=, run_history=)
        raise I2IError(f'the demo needs Gradio 6 or newer, and {gradio.__version__} is installed: pip install -U'
                       ' "i2i-toolkit[demo]"')
    return gradio


def load_model(checkpoint: Path | str, device: str = "auto", *, raw: bool = False,
               which: str | None = None) -> DemoModel:
    """Every generator CHECKPOINT holds (what `i2i translate` takes), loaded once on `device`."""
    files = _direction_files(checkpoint, raw, which)
    target = resolve_device(device, "--device")
    generators = {d: load_generator(checkpoint, d, target, raw=raw, which=which) for d in files}
    for direction, file in files.items():
        if generator_values(file) is not None:
            # a generator of 16-bit or N-channel data needs its value mapping and array files: translate's job
            raise I2IError(f"{file} was trained on data other than 8-bit RGB, which the demo's page cannot show:"
                           f" translate its files with `i2i translate {checkpoint} FILES... --out DIR`")
    gray = {d: takes_gray(g) for d, g in generators.items()}
    if len(set(gray.values())) > 1:
        raise I2IError(f"the generators of {checkpoint} take different channels ({gray}): the demo needs one input"
                       " kind for both directions")
    return DemoModel(Path(checkpoint), generators, files, target, gray=any(gray.values()),
                     weights=weights_note(list(files.values()), raw))


def _direction_files(checkpoint: Path | str, raw: bool, which: str | None) -> dict[str, Path]:
    """The generator file of each direction CHECKPOINT translates: a two-sided run's two, a one-sided run's one,
    a single generator file's one (labelled AtoB: it translates the way it was trained, whatever it is asked), a
    method of N domains' one file for each target ("to_<domain>")."""
    offered = list(offered_directions(checkpoint, which))
    if offered and all(d.startswith("to_") for d in offered):  # one conditioned generator: a choice per domain
        return {d: generator_file(checkpoint, d, raw=raw, which=which) for d in offered}
    files: dict[str, Path] = {}
    missing: dict[str, I2IError] = {}
    for direction in DIRECTIONS:
        try:
            files[direction] = generator_file(checkpoint, direction, raw=raw, which=which)
        except I2IError as exc:
            missing[direction] = exc
    if not files:
        raise missing["AtoB"]
    if len(set(files.values())) < len(files):  # one file given: the same for both directions
        return {"AtoB": files["AtoB"]}
    folder = next(iter(files.values())).parent
    named = RunFolder.read_state(folder).get("generators") if (folder / STATE_FILE).is_file() else None
    for direction, exc in missing.items():
        if isinstance(named, dict) and direction in named:
            raise exc  # training.json names it, yet it cannot be used: a damaged checkpoint, not a one-sided run
    return files


# ---------------------------------------------------------------------------------------------------------
# One request


class UserError(Exception):
    """A request the page refuses with a one-line message (the server keeps serving)."""


def translate_file(model: DemoModel, path: Path, direction: str, size: int | None, limits: Limits,
                   name: str | None = None) -> Image.Image:
    """The translation of the uploaded image file `path` (shown as `name`) as an 8-bit PIL image."""
    if direction not in model.generators:
        raise UserError(f"direction {direction!r} is not available: use {', '.join(model.generators)}")
    image = read_upload(path, limits, name)
    if size is not None:
        if size < 1:
            raise UserError(f"the size {size} must be at least 1 pixel (0: the image's own size)")
        w, h = image.size
        scaled = w * h * (size / min(w, h)) ** 2
        if scaled > limits.max_pixels:
            raise UserError(f"a shorter side of {size} px would make this {w}x{h} image {scaled / 1e6:.3g}"
                            f" megapixels, more than the {limits.max_pixels / 1e6:g} this demo takes: pick a"
                            " smaller size")
    prepared = prepare_image(image.convert("L") if model.gray else image, size, model.multiple)
    try:
        # images over the memory budget go in tiles, as `i2i translate` does them
        output = run_generator(model.generators[direction], to_tensor(prepared)[None], tiling=Tiling())[0]
    except (RuntimeError, ValueError, MemoryError) as exc:  # e.g. an image too small for the generator's downsamplings
        if is_out_of_memory(exc):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise UserError(f"out of memory translating a {prepared.width}x{prepared.height} image: pick a smaller"
                            " size") from None
        raise UserError(f"cannot translate a {prepared.width}x{prepared.height} image: {first_line(exc)}") from None
    return to_image(output)


def read_upload(path: Path, limits: Limits, name: str | None = None) -> Image.Image:
    """An uploaded file decoded as 8-bit RGB (`read_image`), within the upload and pixel limits."""
    name = name or path.name
    try:
        bytes_ = path.stat().st_size
    except OSError as exc:
        raise UserError(f"cannot read the upload {name}: {first_line(exc)}") from None
    if bytes_ > limits.max_upload_mb * _MB:
        raise UserError(f"{name} is {bytes_ / _MB:.2f} MB, more than the {limits.max_upload_mb:g} MB this demo"
                        " takes (--max-upload-mb)")
    # The header alone gives the size, so an oversized image is refused before it is decoded into memory.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Pillow's warning about a large image: this check is the limit
            with Image.open(path) as header:
                w, h = header.size
    except Exception:  # not an image, or damaged: read_image says which, in its words
        w = h = 0
    if w * h > limits.max_pixels:
        raise UserError(f"{name} is {w}x{h}, {w * h / 1e6:.3g} megapixels, more than the"
                        f" {limits.max_pixels / 1e6:g} this demo takes (--max-pixels)")
    try:
        return read_image(path)
    except I2IError as exc:
        # read_image names the file by its path, which for an upload is Gradio's temporary copy
        raise UserError(str(exc).replace(str(path), name)) from None


# ---------------------------------------------------------------------------------------------------------
# The page


def build_demo(checkpoint: Path | str, *, which: str | None = None, raw: bool = False, device: str = "auto",
               max_upload_mb: float = MAX_UPLOAD_MB, max_pixels: int = MAX_PIXELS,
               model: DemoModel | None = None) -> gradio.Blocks:
    """The demo page for CHECKPOINT (its generators loaded now); start it with `launch_demo` (or `.launch`)."""
    gr = import_gradio()
    if max_upload_mb <= 0:
        raise I2IError(f"--max-upload-mb {max_upload_mb:g} must be more than 0")
    if max_pixels < 1:
        raise I2IError(f"--max-pixels {max_pixels} must be at least 1")
    model = model or load_model(checkpoint, device, raw=raw, which=which)
    limits = Limits(max_upload_mb, max_pixels)
    scratch = Path(tempfile.mkdtemp(prefix="i2i-demo-"))  # outputs before Gradio copies them into its cache

    def preview(file: str | None) -> tuple[Any, None, None, str]:
        # a new upload (or none) also clears the previous translation, which belonged to another image
        if file is None:
            return None, None, None, ""
        try:
            return read_upload(Path(file), limits, Path(file).name), None, None, ""
        except UserError as exc:
            return None, None, None, _message(exc)

    def translate(file: str | None, direction: str, size: float | None) -> tuple[Any, Any, str]:
        if file is None:
            return None, None, _message("drop an image in the box first")
        name = Path(file).name  # Gradio keeps an upload's own name, in a folder of its own
        try:
            started = time.perf_counter()
            output = translate_file(model, Path(file), direction, int(size) if size else None, limits, name)
            seconds = time.perf_counter() - started
        except UserError as exc:
            return None, None, _message(exc)
        except Exception as exc:  # anything unforeseen still ends as one line in the page, never a traceback
            return None, None, _message(f"cannot translate {name}: {type(exc).__name__}: {first_line(exc)}")
        # Gradio copies outputs into its own cache once this returns; calls of this event run one at a time
        # (concurrency_limit=1), so the previous call's file is no longer needed when the next one starts.
        for old in scratch.iterdir():
            shutil.rmtree(old, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(dir=scratch))
        # a single generator file translates the way it was trained, which its "AtoB" label need not be
        way = "translated" if one_way else direction
        target = folder / f"{Path(name).stem}-{way}.png"
        output.save(target, format="PNG")
        return str(target), str(target), (f"Translated {name}{'' if one_way else ' ' + direction} at"
                                          f" {output.width}x{output.height} in {seconds:.2f} s.")

    one_way = len(model.generators) == 1
    where = f"{model.checkpoint}" + (f" ({model.weights})" if model.weights else "")
    with gr.Blocks(title="i2i demo", analytics_enabled=False, delete_cache=(_CACHE_SECONDS, _CACHE_SECONDS)) as demo:
        gr.Markdown(f"## i2i demo\nTranslating with `{where}` on {model.device}. Drop an image, then press"
                    f" **Translate**. Files up to {max_upload_mb:g} MB and {max_pixels / 1e6:g} megapixels.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Image file (PNG, JPEG, WebP, TIFF, ...)", file_count="single",
                                 type="filepath", elem_id="upload")
                # a method of N domains offers its target domains ("to_<domain>")
                label = "Target domain" if all(d.startswith("to_") for d in model.generators) else "Direction"
                direction = gr.Radio(list(model.generators), value=next(iter(model.generators)), label=label,
                                     visible=not one_way, elem_id="direction")
                # no `minimum`: Gradio would refuse a bad value with a traceback on the terminal; translate_file
                # refuses it with a line in the page
                size = gr.Number(label="Shorter side in pixels (0: the image's own size)", value=0, precision=0,
                                 elem_id="size")
                button = gr.Button("Translate", variant="primary", elem_id="translate")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                download = gr.File(label="Output (PNG)", interactive=False, elem_id="download")
        with gr.Row(equal_height=True):
            # no "share" button: it would offer to upload the image to a third party
            shown_in = gr.Image(label="Input", type="pil", format="png", interactive=False, elem_id="input",
                                buttons=["download", "fullscreen"])
            shown_out = gr.Image(label="Output", type="filepath", interactive=False, elem_id="output",
                                 buttons=["download", "fullscreen"])
        upload.change(preview, inputs=upload, outputs=[shown_in, shown_out, download, status], concurrency_limit=1)
        button.click(translate, inputs=[upload, direction, size], outputs=[shown_out, download, status],
                     concurrency_limit=1)
    demo.queue(max_size=_QUEUE)
    # launch_demo reads these: Gradio 6 takes its upload limit at launch, not when the page is built
    demo.i2i_max_file_size = int(max_upload_mb * _MB)
    demo.i2i_scratch = scratch
    return demo


def _message(error: Exception | str) -> str:
    """A status line for the page (Markdown), with the error's text kept literal."""
    text = str(error)
    for special in "\\`*_[]<":  # Markdown and HTML: a file name such as <b>_x_.png is shown as it is
        text = text.replace(special, "&lt;" if special == "<" else "\\" + special)
    return f"**Error:** {text}"


# ---------------------------------------------------------------------------------------------------------
# Serving


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def launch_demo(demo: gradio.Blocks, host: str = "127.0.0.1", port: int = 7860) -> str:
    """Start the demo's server in a background thread (no share link, no analytics); its URL."""
    try:
        # No share link (a public tunnel through Gradio's servers), no run history (its page offers to save runs
        # to a Hugging Face bucket), no server-side rendering (a Node process), no MCP server, no monitoring page.
        _, url, _ = demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True,
                                quiet=True, max_file_size=getattr(demo, "i2i_max_file_size", None), ssr_mode=False,
                                run_history=False, enable_monitoring=False, mcp_server=False, pwa=False,
                                show_error=False)
    except OSError:  # Gradio's words name its own parameters; a failed bind is one of these two
        raise I2IError(f"cannot serve on {host}:{port}: the port is in use, or {host} is not an address of this"
                       " machine; pass another --port (or --host)") from None
    return url


def close_demo(demo: gradio.Blocks) -> None:
    """Stop the demo's server and remove its scratch outputs."""
    demo.close(verbose=False)
    scratch = getattr(demo, "i2i_scratch", None)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def serve(checkpoint: Path | str, *, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          raw: bool = False, which: str | None = None, max_upload_mb: float = MAX_UPLOAD_MB,
          max_pixels: int = MAX_PIXELS, say: Callable[[str], None] = print,
          warn: Callable[[str], None] = print) -> None:
    """Build the demo for CHECKPOINT and serve it until Ctrl-C."""
    import_gradio()  # the install hint before any generator is loaded
    # Warnings from inside Gradio (e.g. its use of pandas) and the asyncio loops it makes for its locks and never
    # closes: noise on every request that a user of the command can do nothing about
    warnings.filterwarnings("ignore", module=r"gradio(\.|$)")
    warnings.filterwarnings("ignore", message="unclosed event loop", category=ResourceWarning)
    demo = build_demo(checkpoint, which=which, raw=raw, device=device, max_upload_mb=max_upload_mb,
                      max_pixels=max_pixels)
    if not is_loopback(host):
        warn(f"--host {host} makes the demo reachable from other machines: anyone who reaches port {port} can run"
             " the model on their uploads, with no login (see SECURITY.md)")
    url = launch_demo(demo, host, port)
    say(f"i2i demo of {checkpoint} at {url} (Ctrl-C stops it)")
    # `kill`, `docker stop` and systemd send SIGTERM: stop as cleanly as on Ctrl-C (uploads deleted, no traceback)
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        _wait_for_ctrl_c()
    except KeyboardInterrupt:
        pass
    finally:
        close_demo(demo)
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    say("stopped the demo")


def _wait_for_ctrl_c() -> None:
    # Gradio serves from its own threads; the main thread only waits, in short sleeps so Ctrl-C lands promptly
    while True:
        time.sleep(0.5)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
