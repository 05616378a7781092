"""The sha256 of a file, read in chunks: what downloads are verified by and what tells published weights apart."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]

CHUNK = 1 << 20


def file_sha256(path: Path | str) -> str:
    """The sha256 hex digest of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
