"""The bad-input corpus (tests/bad_inputs.py) through every command that reads images: `i2i run` (unpaired and
aligned data), `i2i translate`, `i2i evaluate` and `i2i compare`. Each command succeeds (translate and evaluate
with --allow-skipped, else they exit 3); each file is either used or named in exactly one warning line with its
reason."""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bad_inputs import CASES, build, noise
from conftest import RECIPES, Result
from i2i.tools.translate import output_format

TINY_CYCLEGAN = ["--set", "data.load_size=36", "--set", "data.crop_size=32", "--set", "data.workers=0",
                 "--set", "generator.channels=4", "--set", "generator.blocks=1", "--set", "discriminator.channels=4",
                 "--set", "train.log_every=1000", "--set", "train.checkpoint_every=0", "--set", "train.samples=2",
                 # one epoch: every image of trainA is read once (in batches of 4, fewer steps)
                 "--set", "train.epochs=1", "--set", "train.decay_epochs=0", "--set", "data.batch_size=4"]
USED = [(case, path) for case in CASES if not case.skipped for path in case.paths]
SKIPPED = [(case, path) for case in CASES if case.skipped for path in case.paths]
pytestmark = pytest.mark.usefixtures("one_thread")


def lines_naming(result: Result, path: Path) -> list[str]:
    """The lines the command printed that name `path` (a name alone would also match e.g. xloop_a.png)."""
    return [line for line in (result.err + result.out).splitlines() if f"{path}:" in line or f"{path};" in line]


def assert_named_once_each(result: Result, folder: Path) -> None:
    """Every skipped file of the corpus in `folder` is named in exactly one warning line with its reason, and a
    used file only in the warning its case expects."""
    for case, path in SKIPPED:
        found = lines_naming(result, folder / path)
        assert len(found) == 1 and found[0].startswith("warning: ") and case.reason in found[0], (path, found)
    for case, path in USED:
        found = lines_naming(result, folder / path)
        if case.warning:
            assert len(found) == 1 and case.warning in found[0], (path, found)
        else:
            assert not found, (path, found)
    assert "Traceback" not in result.err


def good_images(folder: Path, count: int = 3) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        noise((40, 40), seed=100 + i).save(folder / f"good{i}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """An unpaired dataset whose trainA/ and testA/ are the corpus; trainB/ and testB/ hold good images."""
    root = tmp_path_factory.mktemp("corpus") / "data"
    for split in ("train", "test"):
        build(root / f"{split}A")
        good_images(root / f"{split}B")
    return root


@pytest.fixture(scope="module")
def trained(one_thread, data, tmp_path_factory) -> tuple[Path, Result]:
    """One epoch of a tiny CycleGAN on the corpus: the run folder and what `i2i run` printed."""
    run = tmp_path_factory.mktemp("corpus-run") / "run"
    return run, run_captured(["run", RECIPES / "cyclegan.toml", "--set", f"data.root={data}", *TINY_CYCLEGAN,
                              "--out", run])


def run_captured(args: list) -> Result:
    """`i2i ARGS` in this process, as the `cli` fixture runs it, for a module-scoped fixture (capsys is not)."""
    from i2i.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def test_training_uses_what_decodes_and_names_the_rest(trained, data):
    run, result = trained
    assert result.code == 0, result.err
    assert_named_once_each(result, data / "trainA")
    assert (run / "checkpoints").is_dir() and (run / "report.html").is_file()


def exif_references(folder: Path) -> dict[str, tuple[Path, Path]]:
    """For each EXIF case: its raw pixels turned upright by hand, and as stored (PNG files in `folder`)."""
    folder.mkdir()
    turns = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270,
             8: Image.Transpose.ROTATE_90}
    found = {}
    for case in CASES:
        if not case.name.startswith("exif_"):
            continue
        source = folder.parent / "exif-source" / case.name
        source.parent.mkdir(exist_ok=True)
        case.make(source)
        with Image.open(source) as image:
            raw = image.convert("RGB")
            orientation = image.getexif()[0x0112]
        raw.save(folder / f"{source.stem}_raw.png")
        raw.transpose(turns[orientation]).save(folder / f"{source.stem}_upright.png")
        found[case.name] = folder / f"{source.stem}_upright.png", folder / f"{source.stem}_raw.png"
    return found


def coarse(path: Path) -> np.ndarray:
    """An image's means over 4x4 blocks: what a JPEG output keeps of an untrained generator's noisy colours."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    return pixels[:h, :w].reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))


def size_of(path: Path) -> tuple[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broken_exif.jpg's damaged EXIF block
        with Image.open(path) as image:
            return image.size


def test_translate_writes_every_usable_file_at_its_size_and_names_the_rest(cli, trained, data, tmp_path):
    run, _ = trained
    corpus = data / "testA"
    references = exif_references(tmp_path / "references")
    out = tmp_path / "out"
    result = cli("translate", run, corpus, tmp_path / "references", "--out", out, "--allow-skipped")
    assert result.code == 0, result.err
    assert_named_once_each(result, corpus)
    assert f"translated {len(USED) + 2 * len(references)} images" in result.out, result.out
    for case, path in USED:
        size, expected = size_of(out / output_format(Path(path))[0]), case.upright or size_of(corpus / path)
        assert size == expected, (path, size, expected)
    index = (out / "index.html").read_text()
    assert all(str(corpus / path) in index for _, path in SKIPPED)
    # The EXIF rotation is applied to the pixels: each output matches the hand-rotated image's output.
    for name, (upright, raw) in references.items():
        output = coarse(out / name)
        assert np.abs(output - coarse(out / upright.name)).mean() < 2, name
        if output.shape == coarse(out / raw.name).shape:  # 180 degrees and mirrored keep the shape
            assert np.abs(output - coarse(out / raw.name)).mean() > 4, name


def test_evaluate_counts_every_usable_file_once(cli, trained, data):
    run, _ = trained
    result = cli("evaluate", run, "--data", data, "--allow-skipped")
    assert result.code == 0, result.err
    assert_named_once_each(result, data / "testA")
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["AtoB"]["images"] == len(USED) and metrics["BtoA"]["images"] == 3, metrics


def test_compare_names_each_bad_file_at_most_once(cli, trained, data, tmp_path):
    """compare reads only a few held-out images, so a file that fails only when decoded may go unread."""
    run, _ = trained
    result = cli("compare", run, "--out", tmp_path / "compare", "--samples", "2")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    for case, path in SKIPPED:
        for folder in ("trainA", "testA"):
            found = lines_naming(result, data / folder / path)
            assert len(found) <= 1 and all(case.reason in line for line in found), (path, found)
            if not case.decoded_to_tell:
                assert len(found) == 1, (path, found)
    assert (tmp_path / "compare" / "compare.html").is_file()


def test_aligned_training_skips_what_cannot_hold_a_pair(cli, tmp_path):
    root = tmp_path / "aligned"
    cases = build(root / "train")
    narrow = [case for case in cases if case.name in ("one_pixel.png", "one_wide.png")]
    result = cli("run", RECIPES / "pix2pix.toml", "--set", f"data.root={root}", "--set", "data.load_size=36",
                 "--set", "data.crop_size=32", "--set", "data.workers=0", "--set", "generator.downs=5",
                 "--set", "generator.channels=4", "--set", "discriminator.channels=4",
                 "--set", "train.log_every=1000", "--set", "train.checkpoint_every=0", "--set", "train.samples=0",
                 "--set", "train.epochs=1", "--set", "train.decay_epochs=0", "--set", "data.batch_size=4",
                 "--out", tmp_path / "run")
    assert result.code == 0, result.err
    for case in narrow:
        found = lines_naming(result, root / "train" / case.name)
        assert len(found) == 1 and "1 pixel wide, so it cannot hold A and B side by side" in found[0], found
    for case, path in SKIPPED:
        found = lines_naming(result, root / "train" / path)
        assert len(found) == 1 and case.reason in found[0], (path, found)


def without_root_file_access() -> None:
    """Drop the capabilities that let root read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from this
    process's bounding set, so the program it then runs is refused unreadable files as any user is."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="file permissions as on Linux")
def test_an_unreadable_file_is_named_and_skipped(trained, tmp_path):
    run, _ = trained
    good_images(tmp_path / "images", 1)
    locked = tmp_path / "images" / "locked.png"
    noise((40, 40)).save(locked)
    locked.chmod(0)
    args = [sys.executable, "-m", "i2i", "translate", run, tmp_path / "images", "--out", tmp_path / "out",
            "--allow-skipped"]
    try:
        done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, "OMP_NUM_THREADS": "1"},
                              preexec_fn=without_root_file_access if os.geteuid() == 0 else None)
    except subprocess.SubprocessError as exc:
        pytest.skip(f"running as root and cannot give up root's file access here: {exc}")
    result = Result(done.returncode, done.stdout, done.stderr)
    assert result.code == 0, result.err
    found = lines_naming(result, locked)
    assert found == [f"warning: cannot read image {locked}: permission denied; skipped it"], found
    assert (tmp_path / "out" / "good0.png").is_file() and not (tmp_path / "out" / "locked.png").exists()
