"""Unpacking downloaded .zip and .tar(.gz) archives without trusting them.

Every member is checked before anything is written: no absolute path, no `..`, no link that points outside the
target, no device or pipe, and the unpacked total within a bound (a zip bomb is refused by its declared sizes,
which zipfile and tarfile then hold each member to). Extraction goes into a fresh folder that is deleted when
anything fails, so a refused or damaged archive leaves nothing behind.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from i2i.tools.download.transfer import human_size
from i2i.errors import I2IError, first_line

__all__ = ["MIN_BOUND", "RATIO_BOUND", "BadArchive", "DamagedArchive", "Member", "extract", "members"]

#: the unpacked total an archive may reach: RATIO_BOUND times its own size, and at least MIN_BOUND bytes. The image
#: archives i2i fetches barely compress (JPEG/PNG inside), so 20x leaves room and still refuses a zip bomb.
RATIO_BOUND = 20
MIN_BOUND = 256 << 20


class BadArchive(I2IError):
    """The archive itself is at fault (unsafe, a bomb, damaged): the caller deletes it rather than keep it. Its
    message says what is wrong, not what to do: that depends on how the archive was fetched."""


class DamagedArchive(BadArchive):
    """The archive does not read as a zip or tar to its end: damaged at the source, or truncated on the way."""


@dataclass(frozen=True)
class Member:
    """One archive entry: its path inside the archive, its unpacked size, its type and (links) its target."""

    name: str
    size: int
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    target: str = ""


def members(archive: Path) -> list[Member]:
    """The entries of a .zip or tar archive; DamagedArchive when it is neither or is damaged."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                return [_zip_member(info) for info in z.infolist()]
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                return [_tar_member(info) for info in t.getmembers()]
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _damaged(archive, exc) from None
    raise DamagedArchive(f"{archive.name} is neither a zip nor a tar archive (a truncated file, or an error page"
                         " saved as the file?)")


def extract(archive: Path, into: Path, bound: int | None = None) -> Path:
    """Unpack `archive` into the folder `into` (which must not exist), after checking every member; returns `into`.

    `bound` caps the unpacked total (default: RATIO_BOUND x the archive's size, at least MIN_BOUND).
    """
    entries = members(archive)
    for member in entries:
        problem = _unsafe(member)
        if problem:
            raise BadArchive(f"{archive.name} has {problem}; refusing to unpack it (nothing was written)")
    total = sum(m.size for m in entries)
    limit = bound if bound is not None else max(RATIO_BOUND * archive.stat().st_size, MIN_BOUND)
    if total > limit:
        raise BadArchive(f"{archive.name} would unpack to {human_size(total)}, more than the bound of"
                       f" {human_size(limit)} for an archive of {human_size(archive.stat().st_size)} (a zip bomb?);"
                         " refusing to unpack it (nothing was written)")
    into.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(into.parent).free
    if total > free:
        raise I2IError(f"not enough disk space in {into.parent} to unpack {archive.name}: it needs"
                       f" {human_size(total)}, {human_size(free)} are free")
    staging = Path(tempfile.mkdtemp(dir=into.parent, prefix=f".{into.name}.unpacking-"))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(staging)
        else:
            with tarfile.open(archive) as t:
                # the "data" filter refuses what the checks above refuse, again, as a second line of defence
                t.extractall(staging, filter="data")
        staging.rename(into)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)):
            raise _damaged(archive, exc) from None
        if isinstance(exc, OSError):
            raise I2IError(f"cannot unpack {archive.name} into {into.parent}: {exc.strerror or first_line(exc)}"
                           " (nothing was kept)") from None
        raise
    return into


def _zip_member(info: zipfile.ZipInfo) -> Member:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return Member(info.filename, info.file_size, "symlink", "(a zip symlink)")
    return Member(info.filename, info.file_size, "dir" if info.is_dir() else "file")


def _tar_member(info: tarfile.TarInfo) -> Member:
    if info.issym():
        return Member(info.name, 0, "symlink", info.linkname)
    if info.islnk():
        return Member(info.name, 0, "hardlink", info.linkname)
    if info.isdir():
        return Member(info.name, 0, "dir")
    return Member(info.name, info.size, "file" if info.isreg() else "special")


def _unsafe(member: Member) -> str:
    """What is wrong with `member`, or "" when it stays inside the target folder and is a plain file or folder."""
    name = member.name.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"an entry with an absolute path ({member.name})"
    if ".." in path.parts:
        return f"an entry outside the target folder ({member.name})"
    if member.kind == "special":
        return f"a device, pipe or other special file ({member.name})"
    if member.kind == "symlink" and member.target == "(a zip symlink)":
        return f"a symbolic link ({member.name})"
    if member.kind in ("symlink", "hardlink"):
        target = member.target.replace("\\", "/")
        # a symlink resolves from its own folder, a hard link from the archive's root
        base = path.parent if member.kind == "symlink" else PurePosixPath()
        if target.startswith("/") or not _inside(base / target):
            return f"a link pointing outside the target folder ({member.name} -> {member.target})"
    return ""


def _inside(path: PurePosixPath) -> bool:
    """Whether a relative path stays inside its root once its `..` parts are applied."""
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return False
    return True


def _damaged(archive: Path, exc: BaseException) -> DamagedArchive:
    return DamagedArchive(f"{archive.name} is damaged or truncated ({type(exc).__name__}: {first_line(exc)})")
