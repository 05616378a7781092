"""Files that appear under their name only once completely written, so a crash never leaves half a file."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp file name beside `path`, moved over `path` only once the block succeeded; removed if it fails.

    For writers that take a file name rather than an open file (exporters), and for checking a file before it
    appears under its name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder so os.replace is a rename on one filesystem, hence atomic.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # on disk before the rename, so a crash cannot leave the name on an empty file
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results should be readable like any other file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside `path` and move it over `path` only once writing succeeded."""
    with atomic_path(path) as tmp, open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        yield f


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (owned by anyone): whether a temporary file or registration it left is still
    in use."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
