"""Images per second of the unpaired training data: decode + resize + random crop + flip, through a DataLoader.

    python benchmarks/data_pipeline.py [--root ../shared/data/horse2zebra] [--images 200] [--draw 100]

Uses the horse2zebra folders when present (JPEG decoding included), else the built-in synthetic data. Each
item is one image per domain, so images/s counts both. With real files it also times decoding alone: PIL (what
i2i.data.images.read_image uses) against torchvision.io.decode_image on the same files. It always times the
synthetic dataset's drawing (`draw_synthetic`, striped domain B) against its baseline, reading the same pictures
back from PNG files with read_image (what the folder datasets would do), in the same run. Run by hand; never
from the tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import describe_device  # noqa: E402

from i2i.data.loader import SeededItems  # noqa: E402
from i2i.contract.registry import default_registry  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "horse2zebra"))
    parser.add_argument("--images", type=int, default=200, help="items timed per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--load-size", type=int, default=286)
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--draw", type=int, default=100, help="synthetic images drawn per size (0: skip)")
    parser.add_argument("--draw-sizes", type=int, nargs="+", default=[72, 286])
    args = parser.parse_args()
    registry = default_registry()
    if (Path(args.root) / "trainA").is_dir():
        name, options = "unpaired", {"root": args.root}
    else:
        name, options = "synthetic", {"count": args.images}
    dataset = registry.create("dataset", name, load_size=args.load_size, crop_size=args.crop_size, **options)
    items = dataset.load("train", augment=True)
    count = min(args.images, len(items))
    print(f"{describe_device(torch.device('cpu'))}; torch {torch.__version__}")
    print(f"data: {name} {options.get('root', '')} ({len(items)} training items), load {args.load_size} px,"
          f" random crop {args.crop_size} px, flip; {count} items (2 images each) per setting, batch 1")
    for workers in args.workers:
        loader = DataLoader(SeededItems(items), batch_size=1, shuffle=False, num_workers=workers,
                            sampler=[(i, i) for i in range(count)], persistent_workers=False)
        t0 = time.perf_counter()
        n = 0
        for batch in loader:
            n += batch["A"].shape[0] + batch["B"].shape[0]
        elapsed = time.perf_counter() - t0
        print(f"workers {workers}: {n / elapsed:8.1f} images/s ({elapsed:.2f} s for {n} images, worker start-up"
              " included)")
    if name == "unpaired":
        compare_decoders(sorted((Path(args.root) / "trainA").glob("*.jpg"))[:count])
    for size in args.draw_sizes if args.draw else []:
        compare_drawing(args.draw, size)


def compare_decoders(files: list[Path]) -> None:
    """Decode-only images/s of the same files by PIL (to RGB) and by torchvision.io (to a uint8 tensor)."""
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_image, read_file

    from i2i.data.images import read_image

    def pil(path: Path) -> object:
        with Image.open(path) as image:
            return image.convert("RGB")

    def tv(path: Path) -> object:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)

    for label, decode in [("PIL open + convert RGB", pil), ("i2i.data.images.read_image (PIL, checks, EXIF)", read_image),
                          ("torchvision.io decode_image RGB", tv)]:
        for path in files[:5]:
            decode(path)  # warm the page cache and the libraries
        t0 = time.perf_counter()
        for path in files:
            decode(path)
        elapsed = time.perf_counter() - t0
        print(f"decode only, {label}: {len(files) / elapsed:8.1f} images/s ({len(files)} JPEGs)")


def compare_drawing(count: int, size: int) -> None:
    """ms per image of draw_synthetic against read_image of the same pictures saved as PNG, best of 3 rounds."""
    from i2i.data.images import read_image
    from i2i_stock.datasets import draw_synthetic

    def draw(index: int) -> object:
        return draw_synthetic(0, "train", "B", index, size)

    with tempfile.TemporaryDirectory() as folder:
        files = [Path(folder) / f"{index:05d}.png" for index in range(count)]
        for index, file in enumerate(files):
            draw(index).save(file)
        best = {}
        for _ in range(3):  # alternated, so a burst of load on a shared machine hits both alike
            for label, job in (("draw", draw), ("read", lambda index: read_image(files[index]))):
                t0 = time.perf_counter()
                for index in range(count):
                    job(index)
                best[label] = min(best.get(label, float("inf")), (time.perf_counter() - t0) / count)
    print(f"synthetic {size} px: draw_synthetic {best['draw'] * 1e3:.2f} ms/image, read_image of the same"
          f" pictures as PNG (baseline) {best['read'] * 1e3:.2f} ms/image: drawing takes"
          f" {best['draw'] / best['read']:.2f}x the baseline's time ({count} images, best of 3)")


if __name__ == "__main__":
    main()
