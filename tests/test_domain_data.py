"""The N-domain datasets (issue 32): image folders per domain (`domains`) and synthetic shapes in N styles
(`synthetic_domains`), through the public API and the CLI, on tiny files."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import i2i
from i2i.api import Dataset, I2IError, list_images, read_image, transform_image
from i2i_stock.datasets import Synthetic, draw_synthetic

from conftest import RECIPES, SHARED_DATA, error_line

SEASONS = {"summer": 2, "autumn": 3, "winter": 1}  # images per domain, all different counts


def gradient(size: int, colour: tuple[int, int, int], seed: int = 0) -> Image.Image:
    """An RGB image of `colour` darkening from left to right, with a little noise: no two are alike, and a
    horizontal flip or a shifted crop changes it."""
    ramp = np.linspace(1.0, 0.3, size)[None, :, None] * np.array(colour)[None, None, :]
    noise = np.random.default_rng(seed).integers(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8))


COLOURS = {"summer": (250, 200, 40), "autumn": (200, 90, 20), "winter": (60, 120, 250)}


def make_split(root: Path, split: str, counts: dict[str, int], size: int = 40) -> None:
    """root/split/<domain>/NNN.png: counts[domain] images of the domain's colour."""
    for number, (name, count) in enumerate(counts.items()):
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            gradient(size, COLOURS.get(name, (128, 128, 128)), seed=100 * number + i).save(folder / f"{i:03d}.png")


@pytest.fixture
def seasons(tmp_path: Path) -> Path:
    make_split(tmp_path, "train", SEASONS)
    return tmp_path


def domains(root: Path, **options) -> Dataset:
    return i2i.create("dataset", "domains", root=str(root), load_size=36, crop_size=32, **options)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# ---------------------------------------------------------------------------------------------------- folders


def test_items_are_every_image_of_every_domain_in_order(seasons: Path) -> None:
    data = domains(seasons)
    assert isinstance(data, Dataset) and data.paired is False
    assert data.domains() == ("autumn", "summer", "winter")  # every subfolder, sorted
    assert data.domain_channels() == {"autumn": 3, "summer": 3, "winter": 3}
    assert data.value_map() is None  # 8-bit RGB, as the two-domain datasets
    assert data.has_split("train") and not data.has_split("test")

    items = data.load("train", augment=False)
    assert len(items) == 6
    got = [items[i] for i in range(6)]
    assert [item["domain"] for item in got] == [0, 0, 0, 1, 1, 2]
    assert [item["path"] for item in got] == [str(seasons / "train" / name / f"{i:03d}.png")
                                              for name in ("autumn", "summer", "winter") for i in range(SEASONS[name])]
    for item in got:
        assert set(item) == {"image", "domain", "path"}
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert -1 <= item["image"].min() and item["image"].max() <= 1
        # the pixels are the domain's: its colour's strongest channel is the image's
        colour = COLOURS[data.domains()[item["domain"]]]
        assert int(item["image"].mean((1, 2)).argmax()) == int(np.argmax(colour))
    with pytest.raises(IndexError):
        items[6]
    assert items[-1]["path"] == got[-1]["path"]

    batch = next(iter(torch.utils.data.DataLoader(items, batch_size=6)))  # the default collate takes the items
    assert batch["image"].shape == (6, 3, 32, 32) and batch["domain"].tolist() == [0, 0, 0, 1, 1, 2]


def test_data_domains_picks_and_orders_them(seasons: Path) -> None:
    data = domains(seasons, domains=["winter", "summer", "autumn"])
    assert data.domains() == ("winter", "summer", "autumn")
    items = data.load("train", augment=False)
    assert [items[i]["domain"] for i in range(len(items))] == [0, 1, 1, 2, 2, 2]
    assert items[0]["path"].endswith("winter/000.png") and items[3]["path"].endswith("autumn/000.png")

    two = domains(seasons, domains=["summer", "winter"])
    assert two.domains() == ("summer", "winter") and two.domain_channels() == {"summer": 3, "winter": 3}
    items = two.load("train", augment=False)
    assert [Path(items[i]["path"]).parent.name for i in range(len(items))] == ["summer", "summer", "winter"]


def test_test_split_needs_every_domain(seasons: Path) -> None:
    make_split(seasons, "test", {"summer": 1, "autumn": 2})
    data = domains(seasons)
    assert not data.has_split("test")  # winter has no test folder
    with pytest.raises(I2IError, match="no test split: expected folders test/autumn/, test/summer/, test/winter/"):
        data.load("test", augment=False)

    (seasons / "test" / "winter").mkdir()
    assert not domains(seasons).has_split("test")  # an empty folder is no split either
    make_split(seasons, "test", {"winter": 1})
    data = domains(seasons)
    assert data.has_split("test") and not data.has_split("val")
    items = data.load("test", augment=False)
    assert [items[i]["domain"] for i in range(len(items))] == [0, 0, 1, 2]
    assert all("/test/" in items[i]["path"] for i in range(len(items)))
    # a subset of the domains only needs test folders for those
    make_split(seasons, "val", {"summer": 1})
    assert domains(seasons, domains=["summer", "winter"]).has_split("test")
    assert not domains(seasons, domains=["summer", "winter"]).has_split("val")


def test_crops_and_flips_only_when_augmenting(tmp_path: Path) -> None:
    make_split(tmp_path, "train", {"summer": 1, "winter": 1}, size=48)
    data = i2i.create("dataset", "domains", root=str(tmp_path), load_size=48, crop_size=32)
    source = read_image(tmp_path / "train" / "summer" / "000.png")

    fixed = data.load("train", augment=False)
    state = torch.get_rng_state()
    first = fixed[0]["image"]
    assert torch.equal(state, torch.get_rng_state())  # no random draw without augmentation
    assert torch.equal(first, transform_image(source, 48, 32, augment=False))  # the centre crop
    assert torch.equal(first, fixed[0]["image"])

    augmented = data.load("train", augment=True)
    drawn = []
    for seed in range(8):
        torch.manual_seed(seed)
        drawn.append(augmented[0]["image"])
        torch.manual_seed(seed)
        assert torch.equal(drawn[-1], augmented[0]["image"])  # repeatable under the same torch seed
    assert len({image.numpy().tobytes() for image in drawn}) > 4  # random crops (and flips)

    # crop = load size: augmenting can only flip, and flip = false turns that off
    whole = transform_image(source, 48, 48, augment=False)
    flips = i2i.create("dataset", "domains", root=str(tmp_path), load_size=48, crop_size=48).load("train", True)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        image = flips[0]["image"]
        assert torch.equal(image, whole) or torch.equal(image, whole.flip(-1))
        seen.add(torch.equal(image, whole))
    assert seen == {True, False}
    no_flip = i2i.create("dataset", "domains", root=str(tmp_path), load_size=48, crop_size=48, flip=False)
    items = no_flip.load("train", augment=True)
    for seed in range(6):
        torch.manual_seed(seed)
        assert torch.equal(items[0]["image"], whole)


def test_pixel_options_apply_to_every_domain(tmp_path: Path) -> None:
    for number, name in enumerate(("ct", "mr", "pet")):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        values = np.random.default_rng(number).integers(0, 65536, (40, 40), dtype=np.uint16)
        Image.fromarray(values).save(folder / "000.png")  # 16-bit grayscale
    data = domains(tmp_path, channels=1)
    assert data.domain_channels() == {"ct": 1, "mr": 1, "pet": 1}
    value_map = data.value_map()
    assert value_map.mode == "depth" and set(value_map.domains) == {"ct", "mr", "pet"}
    assert all(r.dtype == "uint16" for r in value_map.domains.values())
    items = data.load("train", augment=False)
    assert [items[i]["image"].shape for i in range(3)] == [(1, 32, 32)] * 3
    assert [items[i]["domain"] for i in range(3)] == [0, 1, 2]

    window = domains(tmp_path, channels=1, values="window", low=1000.0, high=2000.0).value_map()
    assert {(r.low, r.high) for r in window.domains.values()} == {(1000.0, 2000.0)}
    percentile = domains(tmp_path, channels=1, values="percentile", low=1.0, high=99.0).value_map()
    assert len({(r.low, r.high) for r in percentile.domains.values()}) == 3  # each domain's own percentiles

    # an RGB file among grayscale data is refused when the dataset is created, naming it and the fix
    gradient(40, (10, 20, 30)).save(tmp_path / "train" / "mr" / "000.png")
    with pytest.raises(I2IError) as caught:
        domains(tmp_path, channels=1)
    message = one_line(caught)
    assert str(tmp_path / "train" / "mr" / "000.png") in message and "data.channels = 1" in message
    assert "channels_b" not in [o["name"] for o in i2i.describe("dataset", "domains")["options"]]


def test_bad_files_are_skipped_with_a_warning(seasons: Path) -> None:
    (seasons / "train" / "summer" / "000_empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="000_empty.png"):
        data = domains(seasons)
    items = data.load("train", augment=False)
    assert len(items) == 6 and all("000_empty" not in items[i]["path"] for i in range(6))


@pytest.mark.skipif(not (SHARED_DATA / "horse2zebra").is_dir() or not (SHARED_DATA / "maps").is_dir(),
                    reason=f"the shared datasets horse2zebra and maps are not in {SHARED_DATA}")
def test_shared_data_as_three_domains(tmp_path: Path) -> None:
    links = {"train": {"horse": "horse2zebra/trainA", "zebra": "horse2zebra/trainB", "map": "maps/train"},
             "test": {"horse": "horse2zebra/testA", "zebra": "horse2zebra/testB", "map": "maps/val"}}
    for split, folders in links.items():
        (tmp_path / split).mkdir()
        for name, target in folders.items():
            (tmp_path / split / name).symlink_to(SHARED_DATA / target, target_is_directory=True)
    data = domains(tmp_path, domains=["horse", "zebra", "map"])
    assert data.domains() == ("horse", "zebra", "map") and data.has_split("test")
    counts = [len(list_images(SHARED_DATA / links["train"][name])) for name in data.domains()]
    items = data.load("train", augment=True)
    assert len(items) == sum(counts)
    torch.manual_seed(0)
    for index, domain, folder in [(0, 0, "horse"), (counts[0] - 1, 0, "horse"), (counts[0], 1, "zebra"),
                                  (counts[0] + counts[1], 2, "map"), (len(items) - 1, 2, "map")]:
        item = items[index]
        assert item["domain"] == domain and Path(item["path"]).parent.name == folder
        assert item["image"].shape == (3, 32, 32)
    test = data.load("test", augment=False)
    assert test[0]["domain"] == 0 and test[len(test) - 1]["path"].startswith(str(tmp_path / "test" / "map"))


# -------------------------------------------------------------------------------------------------- bad input


def test_bad_layouts_are_one_line_naming_the_culprit(tmp_path: Path) -> None:
    def refused(root: Path | str, **options) -> str:
        with pytest.raises(I2IError) as caught:
            i2i.create("dataset", "domains", root=str(root), **options)
        return one_line(caught)

    assert "data.root is not set" in refused("")
    assert f"data.root {tmp_path / 'nowhere'} does not exist" in refused(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    assert f"data.root {tmp_path / 'file.txt'} is not a folder" in refused(tmp_path / "file.txt")

    (tmp_path / "trainA").mkdir()
    assert f"{tmp_path} has no train/ folder (it has: trainA/)" in refused(tmp_path)
    make_split(tmp_path / "seasons", "train", {"summer": 1})
    assert f"did you mean data.root={tmp_path / 'seasons'}?" in refused(tmp_path)

    make_split(tmp_path, "train", SEASONS)
    message = refused(tmp_path, domains=["summer", "sprong"])
    assert f"data.domains names 'sprong', but {tmp_path / 'train'} has no sprong/ folder" in message
    assert "(it has: autumn/, summer/, winter/)" in message
    message = refused(tmp_path, domains=["sumer", "winter"])
    assert "has no sumer/ folder" in message and "did you mean 'summer'?" in message
    assert "more than once" in refused(tmp_path, domains=["summer", "winter", "summer"])
    assert "data.domains lists 1 domain: summer, but N-domain data needs at least 2" in refused(
        tmp_path, domains=["summer"])

    (tmp_path / "train" / "spring").mkdir()
    (tmp_path / "train" / "spring" / "notes.txt").write_text("no images")
    message = refused(tmp_path)
    assert f"{tmp_path / 'train' / 'spring'} has no images" in message and "data.domains" in message
    assert domains(tmp_path, domains=["summer", "winter"]).domains() == ("summer", "winter")  # left out: fine

    lonely = tmp_path / "seasons"
    assert f"{lonely / 'train'} holds 1 domain: summer, but N-domain data needs at least 2" in refused(lonely)
    assert "crop_size = 64 is larger than data.load_size = 36" in refused(lonely, load_size=36, crop_size=64)


def test_bad_layout_through_the_cli_is_one_error_line(cli, tmp_path: Path) -> None:
    make_split(tmp_path, "train", {"summer": 1, "winter": 1})
    result = cli("run", RECIPES / "stargan.toml", "--set", f"data.root={tmp_path}", "--set",
                 'data.domains=["summer", "wintr"]', "--out", tmp_path / "run")
    line = error_line(result)
    assert "has no wintr/ folder" in line and "did you mean 'winter'?" in line


# -------------------------------------------------------------------------------------------------- synthetic


def local_variation(image: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels: high for stripes and dots, low for flat fills."""
    return float((image[:, 1:, :] - image[:, :-1, :]).abs().mean() + (image[:, :, 1:] - image[:, :, :-1]).abs().mean())


def test_synthetic_domains_draw_n_styles_deterministically() -> None:
    data = i2i.create("dataset", "synthetic_domains", domains=4, count=6)  # 72 px drawn, 64 px crops
    assert data.domains() == ("flat", "striped", "dotted", "outlined")
    assert data.domain_channels() == dict.fromkeys(data.domains(), 3) and data.value_map() is None
    assert data.has_split("train") and data.has_split("test") and not data.has_split("val")
    items = data.load("train", augment=False)
    assert len(items) == 24
    got = [items[i] for i in range(24)]
    assert [item["domain"] for item in got] == [d for d in range(4) for _ in range(6)]
    assert got[7]["path"] == "synthetic/train/striped/00001.png"
    assert all(item["image"].shape == (3, 64, 64) and -1 <= item["image"].min() <= item["image"].max() <= 1
               for item in got)

    # each style looks its own way: stripes and dots vary most from pixel to pixel; dots (no black) and outlines
    # leave more background than stripes and fills
    variation = [np.mean([local_variation(got[6 * d + i]["image"]) for i in range(6)]) for d in range(4)]
    background = [np.mean([float((got[6 * d + i]["image"] > 0.6).all(0).float().mean()) for i in range(6)])
                  for d in range(4)]
    assert variation[1] > 2.5 * variation[0] and variation[2] > 2.5 * variation[0]
    assert min(background[2], background[3]) > max(background[0], background[1]) + 0.08
    # the same shapes in the four styles are four different pictures on the same background
    styled = [draw_synthetic(0, "train", "A", 5, 72, style=s).tobytes() for s in "ABCD"]
    assert len(set(styled)) == 4

    # the same seed draws the same images; another seed or split others
    again = i2i.create("dataset", "synthetic_domains", domains=4, count=6)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(got, (again.load("train", False)[i]
                                                                        for i in range(24))))
    other = i2i.create("dataset", "synthetic_domains", domains=4, count=6, seed=1)
    assert not torch.equal(got[13]["image"], other.load("train", False)[13]["image"])
    assert not torch.equal(got[13]["image"], data.load("test", False)[13]["image"])
    # flat and striped are the two-domain synthetic set's A and B images
    two = Synthetic(count=6).load("train", augment=False)
    assert torch.equal(got[2]["image"], two[2]["A"]) and torch.equal(got[8]["image"], two[2]["B"])


def test_synthetic_domains_options() -> None:
    data = i2i.create("dataset", "synthetic_domains", count=2, load_size=36, crop_size=32)
    assert data.domains() == ("flat", "striped", "dotted")  # 3 by default
    items = data.load("train", augment=True)
    torch.manual_seed(1)
    first = [items[i]["image"] for i in range(6)]
    torch.manual_seed(1)
    assert all(torch.equal(a, items[i]["image"]) for i, a in enumerate(first))

    gray = i2i.create("dataset", "synthetic_domains", domains=2, count=2, load_size=36, crop_size=32, channels=1)
    assert gray.domain_channels() == {"flat": 1, "striped": 1}
    assert set(gray.value_map().domains) == {"flat", "striped"} and gray.load("test", False)[3]["image"].shape == (
        1, 32, 32)

    for bad, limit in ((1, ">= 2"), (5, "<= 4")):
        with pytest.raises(I2IError, match=f"domains = {bad} is out of range: it must be {limit}"):
            i2i.create("dataset", "synthetic_domains", domains=bad)
    with pytest.raises(I2IError, match="no 'val' split"):
        data.load("val", augment=False)


def test_two_domain_styles_are_drawn_as_before() -> None:
    # what styles A and B draw is pinned: every recipe trained on synthetic data depends on it (pinned weights)
    digest = hashlib.sha256()
    for domain in "AB":
        for index in range(4):
            digest.update(draw_synthetic(0, "train", domain, index, 64).tobytes())
            digest.update(draw_synthetic(0, "test", "A", index, 64, style=domain).tobytes())
    assert digest.hexdigest() == PINNED_AB


PINNED_AB = "190d8f4a4f2d194bd3ec687c3f2795ae7a0770ecc210fa390885708ca4fdb5b3"  # computed before styles C, D existed


# -------------------------------------------------------------------------------------------------------- CLI


def test_cli_lists_and_describes_them(cli) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        listed = cli("list", "dataset")
    assert listed.code == 0
    for name in ("domains", "synthetic_domains", "unpaired"):
        assert any(line.split()[:2] == ["dataset", name] for line in listed.out.splitlines()), listed.out
    info = cli("info", "dataset", "domains")
    assert info.code == 0 and info.out.startswith("dataset domains (i2i-toolkit): Images of N domains")
    options = [line.split()[0] for line in info.out.splitlines()[1:] if line.strip()]
    for name in ("root", "domains", "load_size", "crop_size", "flip", "channels", "values", "low", "high"):
        assert name in options, info.out
    assert "channels_b" not in info.out
    info = cli("info", "dataset", "synthetic_domains")
    assert info.code == 0 and "flat, striped, dotted, outlined" in " ".join(info.out.split())
    assert "<= 4" in info.out
