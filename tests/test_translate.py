"""`i2i translate`: images and folders in, same-named same-sized images out, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

import i2i
from conftest import RECIPES, TINY, error_line
from i2i.cli import main
from i2i.tools.generators import load_generator

SIZES = {"a.png": (37, 23), "b.jpg": (41, 30), "gray.png": (22, 19), "sub/c.png": (23, 37)}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny trained run folder (4 steps, checkpoints at steps 2 and 4)."""
    folder = tmp_path_factory.mktemp("translate") / "run"
    main(["run", str(RECIPES / "quickstart.toml"), *TINY, "--out", str(folder)])
    return folder


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    w, h = size
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder of odd-sized RGB PNG and JPEG images, a grayscale one, a broken file and a subfolder."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, (name, size) in enumerate(SIZES.items()):
        noise(size, "L" if name.startswith("gray") else "RGB", seed=i).save(folder / name)
    (folder / "broken.jpg").write_text("this is not a jpeg")
    return folder


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def test_folder_keeps_names_sizes_and_skips_the_broken_file(cli, run, images, tmp_path):
    out = tmp_path / "out"
    result = cli("translate", run, images, "--out", out)
    assert result.code == 3, result.err  # written, but an input was skipped (--allow-skipped: 0)
    for name, size in SIZES.items():
        with Image.open(out / name) as image:
            assert image.size == size, name
            assert image.mode == "RGB", name
    assert Image.open(out / "b.jpg").format == "JPEG" and Image.open(out / "a.png").format == "PNG"
    assert "broken.jpg" in result.err and "not an image" in result.err
    assert not (out / "broken.jpg").exists()
    assert "translated 4 images" in result.out and "1 skipped" in result.out
    page = (out / "index.html").read_text()
    for name in SIZES:
        assert f'src="{name}"' in page, name  # the output, linked relative to the page
        assert f'src="../images/{name}"' in page, name  # the input beside it
    assert "broken.jpg" in page and "Skipped (1)" in page


def test_btoa_uses_the_other_generator(cli, run, images, tmp_path):
    assert cli("translate", run, images / "a.png", "--out", tmp_path / "ab").code == 0
    result = cli("translate", run, images / "a.png", "--out", tmp_path / "ba", "--direction", "BtoA")
    assert result.code == 0, result.err
    ab, ba = pixels(tmp_path / "ab" / "a.png"), pixels(tmp_path / "ba" / "a.png")
    assert ab.shape == ba.shape and not np.array_equal(ab, ba)


def test_pixels_equal_the_generator_run_on_the_padded_image(cli, run, images, tmp_path):
    assert cli("translate", run, images / "a.png", "--out", tmp_path / "out").code == 0
    state = json.loads((run / "checkpoints" / "step-00000004" / "training.json").read_text())
    generator = load_generator(run / "checkpoints" / "step-00000004" / f"{state['generators']['AtoB']}.safetensors")
    x = torch.from_numpy(pixels(images / "a.png")).float().permute(2, 0, 1)[None] / 127.5 - 1
    padded = F.pad(x, (0, 40 - 37, 0, 24 - 23), mode="reflect")  # to multiples of 4, the ResNet's
    with torch.no_grad():
        y = generator(padded)[0, :, :23, :37]
    expected = ((y + 1) / 2).clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    assert np.abs(pixels(tmp_path / "out" / "a.png") - expected).max() <= 1


def test_python_api_gives_the_same_pixels_as_the_cli(cli, run, images, tmp_path):
    assert cli("translate", run, images, "--out", tmp_path / "cli", "--allow-skipped").code == 0
    with pytest.warns(UserWarning, match="broken.jpg"):
        result = i2i.translate(run, [images], tmp_path / "api", device="cpu")
    assert sorted(p.relative_to(tmp_path / "api").as_posix() for _, p in result.written) == sorted(SIZES)
    assert [p.name for p, _ in result.skipped] == ["broken.jpg"]
    assert result.index == tmp_path / "api" / "index.html" and result.index.is_file()
    for name in SIZES:
        assert np.array_equal(pixels(tmp_path / "cli" / name), pixels(tmp_path / "api" / name)), name


def test_batches_give_the_same_pixels(cli, run, tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    for i in range(5):
        noise((21, 18), seed=i).save(folder / f"{i}.png")
    assert cli("translate", run, folder, "--out", tmp_path / "one").code == 0
    assert cli("translate", run, folder, "--out", tmp_path / "three", "--batch-size", "3").code == 0
    for i in range(5):
        assert np.abs(pixels(tmp_path / "one" / f"{i}.png") - pixels(tmp_path / "three" / f"{i}.png")).max() <= 1


def test_size_scales_the_shorter_side(cli, run, images, tmp_path):
    result = cli("translate", run, images / "a.png", images / "sub" / "c.png", "--out", tmp_path / "out",
                 "--size", "17")
    assert result.code == 0, result.err
    # 17 rounds to 16 (a multiple of 4); the longer side keeps the aspect ratio, also rounded to 4.
    assert Image.open(tmp_path / "out" / "a.png").size == (24, 16)
    assert Image.open(tmp_path / "out" / "c.png").size == (16, 24)


def test_checkpoint_folder_and_single_generator_file(cli, run, images, tmp_path):
    step2 = run / "checkpoints" / "step-00000002"
    assert cli("translate", step2, images / "a.png", "--out", tmp_path / "folder").code == 0
    assert cli("translate", step2 / "G_A.safetensors", images / "a.png", "--out", tmp_path / "file").code == 0
    assert np.array_equal(pixels(tmp_path / "folder" / "a.png"), pixels(tmp_path / "file" / "a.png"))
    # the run folder uses its newest checkpoint (step 4), which differs from step 2
    assert cli("translate", run, images / "a.png", "--out", tmp_path / "run").code == 0
    assert not np.array_equal(pixels(tmp_path / "run" / "a.png"), pixels(tmp_path / "file" / "a.png"))


def test_same_names_from_two_folders_do_not_overwrite(cli, run, tmp_path):
    for folder, seed in (("x", 1), ("y", 2)):
        (tmp_path / folder).mkdir()
        noise((12, 12), seed=seed).save(tmp_path / folder / "img.png")
    result = cli("translate", run, tmp_path / "x", tmp_path / "y", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    assert (tmp_path / "out" / "img.png").is_file() and (tmp_path / "out" / "img-2.png").is_file()
    assert "img-2.png" in result.err
    assert not np.array_equal(pixels(tmp_path / "out" / "img.png"), pixels(tmp_path / "out" / "img-2.png"))


def test_refuses_to_write_over_the_inputs(cli, run, images):
    before = (images / "a.png").read_bytes()
    line = error_line(cli("translate", run, images, "--out", images))
    assert "input folder" in line and "--out" in line
    assert (images / "a.png").read_bytes() == before


def test_unknown_direction(cli, run, images, tmp_path):
    line = error_line(cli("translate", run, images, "--out", tmp_path / "out", "--direction", "sideways"))
    assert "'sideways'" in line and "AtoB, BtoA" in line
    assert not (tmp_path / "out").exists()


def test_run_folder_without_checkpoints(cli, images, tmp_path):
    empty_run = tmp_path / "run"
    (empty_run / "checkpoints").mkdir(parents=True)
    (empty_run / "recipe.toml").write_text("[run]\n")
    line = error_line(cli("translate", empty_run, images, "--out", tmp_path / "out"))
    assert str(empty_run) in line and "no complete checkpoint" in line


@pytest.mark.parametrize("what, expected", [
    ("missing", "does not exist"),
    ("plain folder", "neither a run folder"),
    ("no metadata", "i2i convert"),
    ("pickle", "i2i convert"),
    ("discriminator", "not a generator"),
])
def test_bad_checkpoints_get_one_line(cli, run, images, tmp_path, what, expected):
    if what == "missing":
        checkpoint = tmp_path / "nowhere"
    elif what == "plain folder":
        checkpoint = tmp_path / "plain"
        checkpoint.mkdir()
    elif what == "no metadata":
        checkpoint = tmp_path / "bare.safetensors"
        save_file({"model.1.weight": torch.zeros(4, 3, 7, 7)}, checkpoint)
    elif what == "pickle":
        checkpoint = tmp_path / "latest_net_G_A.pth"
        torch.save({"model.1.weight": torch.zeros(4, 3, 7, 7)}, checkpoint)
    else:
        checkpoint = run / "checkpoints" / "step-00000004" / "D_A.safetensors"
    line = error_line(cli("translate", checkpoint, images, "--out", tmp_path / "out"))
    assert expected in line and checkpoint.name in line, line


def test_missing_input(cli, run, tmp_path):
    line = error_line(cli("translate", run, tmp_path / "nope.png", "--out", tmp_path / "out"))
    assert "nope.png" in line and "does not exist" in line
