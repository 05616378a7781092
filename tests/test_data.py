"""Image reading, transforms and the stock datasets (unpaired folders, synthetic shapes), on tiny files."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.errors import I2IError
from i2i.data.images import list_images, read_image, transform_image
from i2i_stock.datasets import Synthetic, UnpairedFolders, draw_synthetic


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A random RGB image (noise compresses badly, so truncating its JPEG really cuts image data)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def make_domain(folder: Path, count: int, size: int = 40, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        noise((size, size), seed * 100 + i).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_domain(tmp_path / "trainA", 3, seed=1)
    make_domain(tmp_path / "trainB", 5, seed=2)
    return tmp_path


# ----------------------------------------------------------------------------------------------- read_image


def rgb(path: Path) -> np.ndarray:
    image = read_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_grayscale_palette_cmyk_and_1bit_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (4, 4), 77).save(tmp_path / "gray.png")
    assert (rgb(tmp_path / "gray.png") == 77).all()

    palette = Image.new("RGB", (4, 4), (200, 10, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.save(tmp_path / "palette.png")
    assert tuple(rgb(tmp_path / "palette.png")[0, 0]) == (200, 10, 30)

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    red = rgb(tmp_path / "cmyk.jpg")[4, 4].astype(int)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    assert tuple(rgb(tmp_path / "cmyk.tif")[0, 0]) == (255, 0, 0)

    one = Image.new("1", (4, 4), 1)
    one.save(tmp_path / "bits.bmp")
    assert (rgb(tmp_path / "bits.bmp") == 255).all()


def test_transparency_is_composited_over_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "rgba.png")
    assert rgb(tmp_path / "rgba.png").tolist() == [[[255, 255, 255], [0, 0, 255]]]

    Image.new("LA", (2, 2), (0, 128)).save(tmp_path / "la.png")
    assert abs(int(rgb(tmp_path / "la.png")[0, 0, 0]) - 127) <= 1  # half-transparent black over white

    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "ptrans.png", transparency=0)
    assert rgb(tmp_path / "ptrans.png").tolist() == [[[255, 255, 255], [0, 255, 0]]]


def test_16bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 0x8080, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    Image.fromarray(values.astype(">u2")).save(tmp_path / "deep.tif")
    for name in ("deep.png", "deep.tif"):
        assert Image.open(tmp_path / name).mode.startswith("I;16")
        assert rgb(tmp_path / name)[0, :, 0].tolist() == [0, 128, 255, 4]  # PIL's convert would give 0,255,255,255

    # 16-bit PGM opens as 32-bit mode "I".
    (tmp_path / "deep.pgm").write_bytes(b"P5\n3 1\n65535\n" + values[0, :3].astype(">u2").tobytes())
    assert Image.open(tmp_path / "deep.pgm").mode == "I"
    assert rgb(tmp_path / "deep.pgm")[0, :, 0].tolist() == [0, 128, 255]

    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "float.tif")
    assert rgb(tmp_path / "float.tif")[0, :, 0].tolist() == [0, 128, 255]


def test_exif_rotation_is_honoured(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (20, 10), (90, 90, 90)).save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").size == (10, 20)


@pytest.mark.parametrize("name, content, reason", [
    ("empty.png", b"", "empty"),
    ("text.jpg", b"this is not an image\n", "not an image"),
])
def test_unreadable_files_raise_one_line_errors(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(I2IError) as caught:
        read_image(tmp_path / name)
    message = str(caught.value)
    assert message.startswith(f"cannot read image {tmp_path / name}: ") and reason in message
    assert "\n" not in message


def test_truncated_directory_and_missing_files_raise(tmp_path: Path) -> None:
    noise((64, 64)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(I2IError, match="cut.jpg: image file is truncated"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(I2IError, match="folder.png: it is a directory"):
        read_image(tmp_path / "folder.png")
    with pytest.raises(I2IError, match="absent.png: no such file"):
        read_image(tmp_path / "absent.png")


@contextlib.contextmanager
def without_root_file_access() -> Iterator[None]:
    """This thread loses the capabilities that let root read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)
    from its effective set, and gets them back after: root then meets file permissions as any user does.

    Linux keeps capabilities per thread, so the rest of the test process keeps them meanwhile.
    """
    if os.geteuid() != 0:
        yield
        return
    if not sys.platform.startswith("linux"):
        pytest.skip("running as root, and giving up root's file access is done here the Linux way only")

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3; pid 0: this thread
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.skip(f"running as root and cannot read this thread's capabilities: {os.strerror(ctypes.get_errno())}")
    saved = data[0].effective
    data[0].effective &= ~((1 << 1) | (1 << 2))  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip(f"running as root and cannot give up root's file access: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0, "could not restore this thread's capabilities"


@pytest.mark.skipif(os.name != "posix", reason="file permissions as on POSIX systems")
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    Image.new("L", (2, 2)).save(path)
    path.chmod(0)
    with without_root_file_access():
        with pytest.raises(PermissionError):
            open(path, "rb").close()  # so the test cannot pass by a reason other than the one it is about
        with pytest.raises(I2IError, match="locked.png: permission denied$"):
            read_image(path)
    if os.geteuid() == 0:
        open(path, "rb").close()  # root's file access came back for the rest of the tests


def test_permission_denied_reason_when_running_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.png"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("i2i.data.images._open_file", refuse)  # tests/test_bad_inputs.py has a real unreadable file
    with pytest.raises(I2IError, match="locked.png: permission denied$"):
        read_image(path)


# ---------------------------------------------------------------------------------------------- list_images


def test_list_images_is_sorted_recursive_and_skips_hidden_and_loops(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "sub/c.webp", "sub/deeper/d.Tiff", ".hidden.png", ".cache/e.png",
                 "notes.txt", "f.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.jpg", "b.PNG", "f.jpeg", "sub/c.webp", "sub/deeper/d.Tiff"]


# ------------------------------------------------------------------------------------------------ transforms


def test_transform_shapes_range_and_center_crop() -> None:
    image = noise((50, 30))
    torch.manual_seed(0)
    augmented = transform_image(image, 36, 32, augment=True, flip=True)
    assert augmented.shape == (3, 32, 32) and augmented.dtype == torch.float32
    assert augmented.min() >= -1 and augmented.max() <= 1 and augmented.is_contiguous()

    plain = Image.new("RGB", (10, 10), (0, 255, 0))
    assert transform_image(plain, 8, 8, augment=False)[:, 0, 0].tolist() == [-1.0, 1.0, -1.0]
    # Without augmentation the result is fixed and no random numbers are drawn.
    state = torch.get_rng_state()
    first = transform_image(image, 36, 32, augment=False)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(first, transform_image(image, 36, 32, augment=False))


# -------------------------------------------------------------------------------------------------- unpaired


def test_unpaired_items(root: Path) -> None:
    data = UnpairedFolders(root=str(root), load_size=36, crop_size=32)
    assert data.has_split("train") and not data.has_split("test")
    items = data.load("train", augment=True)
    assert len(items) == 5  # max(len A, len B)
    item = items[4]
    assert set(item) == {"A", "B", "A_path", "B_path"}
    for key in "AB":
        assert item[key].shape == (3, 32, 32)
        assert -1 <= item[key].min() and item[key].max() <= 1
    assert item["A_path"] == str(root / "trainA" / "001.png")  # A is image i % len(A)

    fixed = data.load("train", augment=False)
    assert [fixed[i]["B_path"] for i in range(5)] == [str(root / "trainB" / f"{i:03d}.png") for i in range(5)]
    with pytest.raises(IndexError):
        fixed[5]


def test_same_torch_seed_gives_identical_items(root: Path) -> None:
    items = UnpairedFolders(root=str(root), load_size=40, crop_size=24).load("train", augment=True)

    def draw(seed: int) -> list[dict]:
        torch.manual_seed(seed)
        return [items[i] for i in range(len(items))]

    first, second, other = draw(3), draw(3), draw(4)
    for a, b in zip(first, second):
        assert a["B_path"] == b["B_path"] and torch.equal(a["A"], b["A"]) and torch.equal(a["B"], b["B"])
    assert any(not torch.equal(a["A"], b["A"]) for a, b in zip(first, other))


def test_test_split(root: Path) -> None:
    make_domain(root / "testA", 2)
    data = UnpairedFolders(root=str(root), load_size=36, crop_size=32)
    assert not data.has_split("test")  # testB is still missing
    make_domain(root / "testB", 1)
    data = UnpairedFolders(root=str(root), load_size=36, crop_size=32)
    assert data.has_split("test") and len(data.load("test", augment=False)) == 2
    with pytest.raises(I2IError, match="no val split"):
        data.load("val", augment=False)


def test_bad_files_are_skipped_with_a_warning(root: Path) -> None:
    (root / "trainA" / "000_empty.png").write_bytes(b"")
    (root / "trainA" / "000_text.jpg").write_text("not an image")
    with pytest.warns(UserWarning) as caught:
        data = UnpairedFolders(root=str(root), load_size=36, crop_size=32)
    messages = " | ".join(str(w.message) for w in caught)
    assert "000_empty.png" in messages and "000_text.jpg" in messages
    items = data.load("train", augment=False)
    assert all("000_" not in items[i]["A_path"] for i in range(len(items)))


def test_truncated_image_is_replaced_by_the_next(root: Path) -> None:
    noise((64, 64), 9).save(root / "trainA" / "000.jpg", quality=95)  # sorts first
    data = (root / "trainA" / "000.jpg").read_bytes()
    (root / "trainA" / "000.jpg").write_bytes(data[: len(data) // 2])
    items = UnpairedFolders(root=str(root), load_size=36, crop_size=32).load("train", augment=False)
    with pytest.warns(UserWarning, match="000.jpg") as caught:
        item = items[0]
    assert len(caught) == 1 and item["A_path"] == str(root / "trainA" / "000.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once only
        assert items[0]["A_path"] == item["A_path"]


def test_all_undecodable_is_an_error(tmp_path: Path) -> None:
    make_domain(tmp_path / "trainB", 1)
    (tmp_path / "trainA").mkdir()
    noise((64, 64)).save(tmp_path / "trainA" / "x.jpg", quality=95)
    data = (tmp_path / "trainA" / "x.jpg").read_bytes()
    (tmp_path / "trainA" / "x.jpg").write_bytes(data[: len(data) // 2])
    items = UnpairedFolders(root=str(tmp_path), load_size=36, crop_size=32).load("train", augment=False)
    with pytest.warns(UserWarning), pytest.raises(I2IError, match="trainA could be decoded"):
        items[0]


def test_configuration_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(I2IError, match="set data.root"):
        UnpairedFolders(root="")
    with pytest.raises(I2IError, match=f"{tmp_path / 'nowhere'} does not exist"):
        UnpairedFolders(root=str(tmp_path / "nowhere"))

    make_domain(tmp_path / "trainA", 1)
    (tmp_path / "testA").mkdir()
    with pytest.raises(I2IError) as caught:
        UnpairedFolders(root=str(tmp_path))
    assert f"{tmp_path} has no trainB/ folder (it has: testA/, trainA/)" in str(caught.value)

    (tmp_path / "trainB").mkdir()
    (tmp_path / "trainB" / "readme.txt").write_text("no images here")
    with pytest.raises(I2IError, match=f"{tmp_path / 'trainB'} has no images"):
        UnpairedFolders(root=str(tmp_path))

    (tmp_path / "trainB" / "x.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="x.png"), pytest.raises(I2IError, match="no readable images"):
        UnpairedFolders(root=str(tmp_path))

    with pytest.raises(I2IError, match="crop_size = 300 is larger than data.load_size = 286"):
        UnpairedFolders(root=str(tmp_path), load_size=286, crop_size=300)


def test_root_one_level_too_high_gets_a_hint(tmp_path: Path) -> None:
    make_domain(tmp_path / "horse2zebra" / "trainA", 1)
    make_domain(tmp_path / "horse2zebra" / "trainB", 1)
    with pytest.raises(I2IError, match=f"did you mean data.root={tmp_path / 'horse2zebra'}"):
        UnpairedFolders(root=str(tmp_path))


# ------------------------------------------------------------------------------------------------- synthetic


def local_variation(image: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels: high for stripes, low for flat fills."""
    return float((image[:, 1:, :] - image[:, :-1, :]).abs().mean() + (image[:, :, 1:] - image[:, :, :-1]).abs().mean())


def test_synthetic_domains_differ_and_are_deterministic() -> None:
    items = Synthetic(count=16).load("train", augment=False)
    assert len(items) == 16
    item = items[12]
    assert item["A"].shape == (3, 64, 64) and item["B"].shape == (3, 64, 64)
    assert item["A_path"] == "synthetic/trainA/00012.png" and item["B_path"] == "synthetic/trainB/00012.png"
    assert -1 <= item["A"].min() and item["B"].max() <= 1

    flat = np.mean([local_variation(items[i]["A"]) for i in range(16)])
    striped = np.mean([local_variation(items[i]["B"]) for i in range(16)])
    assert striped > 4 * flat

    again = Synthetic(count=16).load("train", augment=False)[12]
    assert torch.equal(item["A"], again["A"]) and torch.equal(item["B"], again["B"])
    test_item = Synthetic(count=16).load("test", augment=False)[12]
    assert not torch.equal(item["A"], test_item["A"])
    other_seed = Synthetic(count=16, seed=1).load("train", augment=False)[12]
    assert not torch.equal(item["A"], other_seed["A"])


def test_synthetic_splits_and_augmentation() -> None:
    data = Synthetic(count=4, load_size=40, crop_size=32)
    assert data.has_split("train") and data.has_split("test") and not data.has_split("val")
    with pytest.raises(I2IError, match="'val'"):
        data.load("val", augment=True)
    items = data.load("train", augment=True)
    torch.manual_seed(0)
    first = [items[i] for i in range(4)]
    torch.manual_seed(0)
    second = [items[i] for i in range(4)]
    assert all(torch.equal(a["A"], b["A"]) and a["B_path"] == b["B_path"] for a, b in zip(first, second))
    assert first[0]["A"].shape == (3, 32, 32)
    with pytest.raises(I2IError, match="crop_size"):
        Synthetic(load_size=32, crop_size=64)


def test_synthetic_drawing_is_a_pure_function_of_its_arguments() -> None:
    # Its speed (against reading the same pictures from PNG files) is measured by benchmarks/data_pipeline.py.
    drawn = [draw_synthetic(0, "train", "B", index, 72) for index in range(100)]
    assert all(image.mode == "RGB" and image.size == (72, 72) for image in drawn)
    again = [draw_synthetic(0, "train", "B", index, 72) for index in (0, 37, 99)]
    assert [image.tobytes() for image in again] == [drawn[i].tobytes() for i in (0, 37, 99)]
    assert len({image.tobytes() for image in drawn}) == 100
    flat = draw_synthetic(0, "train", "B", 37, 72, style="A")
    assert flat.tobytes() != drawn[37].tobytes() and flat.getpixel((0, 0)) == drawn[37].getpixel((0, 0))


def test_items_work_in_dataloader_workers() -> None:
    loader = torch.utils.data.DataLoader(Synthetic(count=4).load("train", augment=True), batch_size=2,
                                         num_workers=2, generator=torch.Generator().manual_seed(0))
    first = [batch["A"] for batch in loader]
    loader.generator.manual_seed(0)
    second = [batch["A"] for batch in loader]
    assert first[0].shape == (2, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


# -------------------------------------------------------------------------------------------------- registry


def test_registered_through_the_entry_point() -> None:
    from i2i.contract.registry import Registry

    registry = Registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other plugins of this package may fail to load; not our concern here
        registry.load_entry_points()
    assert registry.available("dataset") == ["aligned", "domains", "synthetic", "synthetic_domains", "unpaired"]
    data = registry.create("dataset", "synthetic", count=4)
    assert isinstance(data, Synthetic) and len(data.load("train", augment=True)) == 4
    assert registry.describe("dataset", "unpaired")["description"].startswith("Unpaired images from folders")
    with pytest.raises(I2IError, match="set data.root"):
        registry.create("dataset", "unpaired")


def test_synthetic_pairs_are_striped_twins_cropped_alike() -> None:
    items = Synthetic(count=4, load_size=40, crop_size=32, paired=True).load("train", augment=True)
    torch.manual_seed(3)
    item = items[1]
    assert item["A_path"] == "synthetic/trainA/00001.png" and item["B_path"] == "synthetic/trainB/00001.png"
    # where A shows background, so does its twin: the shapes sit in the same place after the shared crop/flip
    background_a = (item["A"] > 0.6).all(0)
    background_b = (item["B"] > 0.6).all(0)
    assert (background_a == background_b).float().mean() > 0.97
    assert local_variation(item["B"]) > 2 * local_variation(item["A"])


def test_aligned_pairs_split_side_by_side_images(tmp_path) -> None:
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        pair = Image.new("RGB", (40, 20), (255, 0, 0))
        pair.paste((0, 0, 255), (20, 0, 40, 20))  # A red on the left, B blue on the right
        pair.save(tmp_path / split / "1.png")
    from i2i_stock.datasets import AlignedFolders

    data = AlignedFolders(root=str(tmp_path), load_size=16, crop_size=16)
    assert data.has_split("test")  # val/ stands in for test/, as in pix2pix's datasets
    item = data.load("train", augment=True)[0]
    assert item["A"][0].mean() == 1 and item["A"][2].mean() == -1
    assert item["B"][2].mean() == 1 and item["B"][0].mean() == -1
    swapped = AlignedFolders(root=str(tmp_path), load_size=16, crop_size=16, direction="BtoA")
    assert swapped.load("test", augment=False)[0]["A"][2].mean() == 1
    with pytest.raises(I2IError, match="no train/ folder .*unpaired"):
        (tmp_path / "u" / "trainA").mkdir(parents=True)
        AlignedFolders(root=str(tmp_path / "u"))
