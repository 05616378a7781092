"""What `i2i download` delivers: a dataset folder `i2i run` trains on, a converted generator `i2i translate` runs,
the Inception weights `i2i evaluate` looks for. Each is fetched (transfer.py), checked, and put under its final
name only when complete, so a second call finds it and fetches nothing.

Layout under the root (the cache's datasets/, models/ or inception/ folder unless --root is given):
`FAMILY/NAME/` for datasets, `FAMILY/NAME.safetensors` for models, the upstream file name for Inception weights;
downloads in transit and archives being unpacked live in the hidden `.downloads/` beside them.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from i2i.storage.atomic import atomic_file
from i2i.storage.cache import cache_dir
from i2i.tools.download.archives import BadArchive, DamagedArchive, extract
from i2i.tools.download.catalogue import Entry, lookup, mirror_base, mirror_origin
from i2i.tools.download.transfer import Fetched, Progress, another_source, check_file, fetch
from i2i.errors import I2IError, Interrupted
from i2i.data.images import list_images

__all__ = ["MARKER", "STAGING", "Downloaded", "download_dataset", "download_inception", "download_model"]

#: the file a finished dataset download leaves in its folder: what was fetched, from where, its sha256
MARKER = ".i2i-download.json"
#: the hidden folder of a root where transfers and unpacking happen before anything gets its final name
STAGING = ".downloads"
#: --kind of `i2i download inception`, by the FID protocol of `i2i evaluate` the weights serve
INCEPTION_KINDS = ("fid", "torchvision")
_SHA = re.compile(r"[0-9a-fA-F]{8,64}")


@dataclass
class Downloaded:
    """The outcome of one download: the entry, where its product is, and what to do with it next."""

    entry: Entry
    path: Path
    cached: bool  # it was there already: nothing was fetched
    next_step: str  # the command that uses it
    detail: str = ""  # e.g. the image counts of a dataset, the generator a model converted to
    fetched: Fetched | None = None
    pinned: str = ""  # the digest (or prefix) the file was checked against; "" when none was known


def download_dataset(name: str, root: Path | str | None = None, url: str | None = None, sha256: str = "",
                     on_progress: Progress | None = None) -> Downloaded:
    """Fetch and unpack dataset `name` into ROOT/FAMILY/NAME in the layout its recipe trains on."""
    entry = lookup("dataset", name)
    base, origin, pin = mirror_base(url), mirror_origin(url), _pin(sha256, entry)
    root = _root(root, "datasets")
    target = root / entry.family / entry.name
    if (target / MARKER).is_file():
        return Downloaded(entry, target, True, _train_line(entry, target), _image_counts(target))
    if target.exists():
        raise I2IError(f"{target} exists but is not a finished `i2i download` (no {MARKER} in it): move it away, or"
                       " pass --root DIR to download elsewhere")
    staging = root / STAGING
    archive = staging / f"{entry.family}-{entry.file_name}"
    source = entry.url_from(base)
    if archive.is_file():  # fetched whole by a call that was stopped while unpacking it: checked again, not fetched
        fetched = check_file(archive, source, pin, entry.size, origin)
    else:
        fetched = fetch(source, archive, pin, entry.size, on_progress, origin)
    unpacked = staging / f"{entry.family}-{entry.name}"
    shutil.rmtree(unpacked, ignore_errors=True)  # left by a process killed while unpacking
    try:
        extract(archive, unpacked)
        folder = _dataset_folder(unpacked)
        _check_layout(folder, entry, archive)
        with atomic_file(folder / MARKER, "w") as f:
            json.dump({"entry": entry.qualified, "url": entry.url_from(base), "sha256": fetched.sha256,
                       "bytes": fetched.size, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}, f)
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(target)
    except BadArchive as exc:
        archive.unlink(missing_ok=True)
        raise I2IError(f"{exc}; it was deleted: {_after_bad_file(exc, fetched, origin)}") from None
    except KeyboardInterrupt:
        raise Interrupted(f"stopped while unpacking {archive.name}; the whole download is kept in {archive}: run the"
                          " same command again to unpack it without downloading it again") from None
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    archive.unlink(missing_ok=True)  # unpacked and in place: the archive is not needed again
    return Downloaded(entry, target, False, _train_line(entry, target), _image_counts(target), fetched, pin)


def download_model(name: str, root: Path | str | None = None, url: str | None = None, sha256: str = "",
                   on_progress: Progress | None = None) -> Downloaded:
    """Fetch published generator `name` (.pth) and convert it to ROOT/FAMILY/NAME.safetensors."""
    from i2i.tools.convert import convert, options_text  # imported here: it loads the part registry

    entry = lookup("model", name)
    base, origin, pin = mirror_base(url), mirror_origin(url), _pin(sha256, entry)
    root = _root(root, "models")
    target = root / entry.family / f"{entry.name}.safetensors"
    translate = f"i2i translate {target} IMAGES... --out DIR"
    if target.is_file():
        return Downloaded(entry, target, True, translate)
    pth = root / STAGING / f"{entry.family}-{entry.file_name}"
    fetched = fetch(entry.url_from(base), pth, pin, entry.size, on_progress, origin)
    try:
        result = convert(pth, target)  # torch.load(weights_only=True) inside: a hostile pickle is refused
    except I2IError as exc:
        raise I2IError(f"{entry.qualified} arrived but {exc} (the download was deleted):"
                       f" {_after_bad_file(exc, fetched, origin)}") from None
    finally:
        pth.unlink(missing_ok=True)
    detail = f"generator {result.name} ({options_text(result.options)})"
    return Downloaded(entry, target, False, translate, detail, fetched, pin)


def download_inception(kind: str = "fid", root: Path | str | None = None, url: str | None = None,
                       sha256: str = "", on_progress: Progress | None = None) -> Downloaded:
    """Fetch the Inception weights of FID protocol `kind` ("fid": the standard TF-Inception; "torchvision") into the
    folder `i2i evaluate` looks in (or ROOT)."""
    if kind not in INCEPTION_KINDS:
        raise I2IError(f"--kind {kind!r} is not one of {', '.join(INCEPTION_KINDS)}")
    entry = lookup("inception", kind)
    base, origin, pin = mirror_base(url), mirror_origin(url), _pin(sha256, entry)
    folder = _root(root, "inception")
    target = folder / entry.file_name
    protocol = f" --fid {entry.protocol}" if entry.protocol != "standard" else ""
    evaluate = f"i2i evaluate RUN{protocol}" if root is None else \
        f"i2i evaluate RUN --inception-weights {target}{protocol}"
    if target.is_file():
        return Downloaded(entry, target, True, evaluate)
    fetched = fetch(entry.url_from(base), target, pin, entry.size, on_progress, origin)
    return Downloaded(entry, target, False, evaluate, f"FID protocol {entry.protocol}", fetched, pin)


def _after_bad_file(problem: Exception, fetched: Fetched, origin: str) -> str:
    """What to do about a fetched file that turned out unusable: run again where the transfer itself may be at fault
    (resumed from an earlier call, or of a size the server never said), else look elsewhere, since the source serves
    this very file and the same command would fetch it again."""
    if isinstance(problem, BadArchive) and not isinstance(problem, DamagedArchive):
        transfer_at_fault = False  # unsafe, a bomb or the wrong layout: that is what the file holds
    else:
        transfer_at_fault = bool(fetched.resumed_from) or not fetched.sized
    if transfer_at_fault:
        why = "part of it came from an earlier call" if fetched.resumed_from else "the server did not say its size"
        return f"the transfer may be at fault ({why}): run the same command again to download it afresh"
    return f"the source serves it so, and running the same command again would fetch it again: {another_source(origin)}"


def _root(root: Path | str | None, kind: str) -> Path:
    return Path(root).expanduser() if root is not None else cache_dir(kind)


def _pin(sha256: str, entry: Entry) -> str:
    """The digest to check: --sha256 when given (it wins over the catalogue's), else the catalogue's, else ""."""
    if sha256 and not _SHA.fullmatch(sha256):
        raise I2IError(f"--sha256 {sha256!r} is not a sha256 digest: pass 64 hex digits (or a prefix of 8 or more)")
    return (sha256 or entry.sha256).lower()


def _dataset_folder(unpacked: Path) -> Path:
    """The dataset inside an unpacked archive: its one top folder (NAME/ in the reference's archives), else itself."""
    tops = [p for p in unpacked.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else unpacked


def _check_layout(folder: Path, entry: Entry, archive: Path) -> None:
    """BadArchive unless `folder` has the training folders of the entry's layout (what its recipe reads)."""
    wanted = ["trainA", "trainB"] if entry.layout == "unpaired" else ["train"]
    if all((folder / w).is_dir() for w in wanted):
        return
    found = sorted(p.name + "/" for p in folder.iterdir() if p.is_dir()) or ["no folders"]
    raise BadArchive(f"{archive.name} holds {', '.join(found)} but not {' and '.join(w + '/' for w in wanted)} (the"
                     f" {entry.layout} layout {entry.train.split()[2]} trains on); nothing was kept")


def _image_counts(folder: Path) -> str:
    """e.g. "trainA 1067, trainB 1334, testA 120, testB 140 images"."""
    counts = [f"{p.name} {len(list_images(p))}" for p in sorted(folder.iterdir()) if p.is_dir()]
    return f"{', '.join(counts)} images" if counts else ""


def _train_line(entry: Entry, target: Path) -> str:
    return entry.train.format(root=target)
