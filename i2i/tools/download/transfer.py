"""Fetching one file over HTTP(S) the way a download should behave: resumable, verified, never half-written.

The bytes go to `<dest>.part` while in transit. A transfer that is cut (network, Ctrl-C, full disk) keeps the
.part, and the next call asks the server for the rest with an HTTP Range request. Only a complete file whose
size and sha256 check out is renamed to `dest`; one that fails a check is deleted. Every failure is an I2IError
of one line that names the URL or file and says what to do.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import requests
import urllib3

from i2i.storage.digests import file_sha256
from i2i.errors import I2IError, first_line

__all__ = ["CHUNK", "Fetched", "fetch", "human_size"]

CHUNK = 1 << 20  # bytes per read: small enough for a smooth progress bar, large enough to cost nothing
#: seconds to wait for a connection, and for each read of the body
TIMEOUT = (15, 60)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

Progress = Callable[[int, "int | None"], None]


@dataclass
class Fetched:
    """A complete, verified file: where it is, its sha256, its size, and how many bytes an earlier call had."""

    path: Path
    sha256: str
    size: int
    resumed_from: int


def human_size(size: float) -> str:
    """`size` bytes as e.g. 1.5 GB (decimal units, as download sizes are usually given)."""
    units = ("bytes", "kB", "MB", "GB", "TB")
    power = 0
    while abs(size) >= 1000 and power < len(units) - 1:
        size /= 1000
        power += 1
    return f"{size:.0f} bytes" if power == 0 else f"{size:.1f} {units[power]}"


def fetch(url: str, dest: Path, sha256: str = "", size: int | None = None,
          on_progress: Progress | None = None) -> Fetched:
    """Download `url` to `dest` (resuming `dest`.part when an earlier call was cut), checked against `size` and
    `sha256` (a whole digest or a prefix; "" checks none), and renamed to `dest` only when complete and verified."""
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    with requests.Session() as session:
        response = _request(session, url, offset)
        if offset and response.status_code in (200, 416):
            # 200: the server ignores Range; 416: the .part is not a prefix of this file. Either way, from the start.
            response.close()
            part.unlink()
            offset = 0
            response = _request(session, url, 0)
        _raise_for_status(response, url)
        with response:
            start, total = _extent(response, offset)
            if start != offset:  # a server that answered another range than asked: do not splice
                part.unlink(missing_ok=True)
                raise I2IError(f"{url}: the server sent bytes from {start} when asked from {offset}; the partial"
                               " download was deleted, run the same command again")
            dest.parent.mkdir(parents=True, exist_ok=True)  # only now: a refused request leaves no folder behind
            _check_space(dest.parent, (total - offset) if total is not None else None, part)
            received = _receive(response, part, offset, total, url, on_progress)
    if total is not None and received < total:
        raise _cut(url, received, total, "the server closed the connection early")
    return _verify(part, dest, url, sha256, size, offset)


def _request(session: requests.Session, url: str, offset: int) -> requests.Response:
    """GET `url` streamed, from byte `offset`; a network failure is one line saying what to try."""
    headers = {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"} if offset else \
        {"Accept-Encoding": "identity"}  # identity: the bytes on disk are the bytes counted and resumed
    host = urlsplit(url).netloc
    try:
        return session.get(url, headers=headers, stream=True, timeout=TIMEOUT)
    except requests.exceptions.Timeout:
        raise I2IError(f"{host} did not answer within {TIMEOUT[0]} s ({url}): check the network, or fetch from a"
                       " mirror with --url BASE") from None
    except requests.exceptions.ConnectionError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else \
            "name not resolved: offline?" if "resolve" in str(exc).lower() or "name" in str(exc).lower() else \
            _reason(exc)
        raise I2IError(f"cannot reach {host} ({reason}) for {url}: check the network, or fetch from a mirror"
                       " with --url BASE") from None
    except requests.exceptions.RequestException as exc:
        raise I2IError(f"cannot download {url}: {_reason(exc)}") from None


def _raise_for_status(response: requests.Response, url: str) -> None:
    if response.status_code < 400:
        return
    response.close()
    code, reason = response.status_code, response.reason or ""
    if code == 404:
        raise I2IError(f"{url} was not found (HTTP 404): the file may have moved upstream; a mirror that has it can"
                       " be given with --url BASE")
    raise I2IError(f"{url} failed with HTTP {code} {reason}".rstrip() + ": try again later, or a mirror with --url")


def _extent(response: requests.Response, offset: int) -> tuple[int, int | None]:
    """(first byte the response holds, total size of the file or None when the server does not say)."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if not match:
            return -1, None
        start, total = int(match.group(1)), match.group(3)
        return start, int(total) if total != "*" else (start + length if length is not None else None)
    return 0, length if offset == 0 else None


def _check_space(folder: Path, needed: int | None, part: Path) -> None:
    """An I2IError before the transfer when the disk cannot hold what is still to come."""
    if needed is None:
        return
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise I2IError(f"not enough disk space in {folder}: the download needs {human_size(needed)} more,"
                       f" {human_size(free)} are free; free some space or pass --root DIR on another disk")


def _receive(response: requests.Response, part: Path, offset: int, total: int | None, url: str,
             on_progress: Progress | None) -> int:
    """Append the body to `part`; returns the bytes `part` then holds. A cut keeps `part` for the next call."""
    done = offset
    if on_progress is not None:
        on_progress(done, total)
    with open(part, "ab" if offset else "wb") as f:
        while True:
            try:
                # read1 hands over what has arrived (up to CHUNK) instead of waiting for a full chunk, so a cut
                # loses nothing that reached us: the .part ends exactly where the connection broke
                block = response.raw.read1(CHUNK, decode_content=False)
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise _cut(url, done, total, _reason(exc)) from None
            if not block:
                break
            try:
                f.write(block)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise I2IError(f"the disk is full: {part} stopped at {human_size(done)}; free some space and run"
                                   " the same command again to resume") from None
                raise I2IError(f"cannot write {part}: {exc.strerror or first_line(exc)}") from None
            done += len(block)
            if on_progress is not None:
                on_progress(done, total)
        try:
            f.flush()  # here, so a full disk found at the last write is reported like one found earlier
        except OSError as exc:
            raise I2IError(f"cannot write {part}: {exc.strerror or first_line(exc)}; free some space and run the"
                           " same command again to resume") from None
    return done


def _cut(url: str, done: int, total: int | None, why: str) -> I2IError:
    of = f" of {human_size(total)}" if total is not None else ""
    return I2IError(f"the download of {url} was cut at {human_size(done)}{of} ({why}); run the same command again"
                    " to resume it")


def _verify(part: Path, dest: Path, url: str, sha256: str, size: int | None, resumed_from: int) -> Fetched:
    """Rename `part` to `dest` when its size and digest match; otherwise delete it and say which check failed."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise I2IError(f"{url}: got {actual_size} bytes where {size} were expected (a truncated or different file);"
                       " it was deleted: run again, or try a mirror with --url")
    digest = file_sha256(part)
    if sha256 and not digest.startswith(sha256.lower()):
        part.unlink()
        kind = "sha256" if len(sha256) == 64 else "sha256 prefix"
        raise I2IError(f"{url}: its sha256 {digest} does not match the expected {kind} {sha256} (damaged in transit,"
                       " or not the published file); it was deleted: run again, or check the --sha256 / mirror given")
    os.replace(part, dest)
    return Fetched(dest, digest, actual_size, resumed_from)


def _reason(exc: BaseException) -> str:
    """The innermost useful words of a requests/urllib3 error (they nest several layers of reprs)."""
    text = first_line(exc)
    for marker, words in (("IncompleteRead", "the connection closed early"), ("timed out", "no data arrived for"
                          f" {TIMEOUT[1]} s"), ("reset", "the connection was reset")):
        if marker in text:
            return words
    for pattern in (r"\(Caused by \w+\('?(.*?)'?\)\)", r"Connection broken: (.*)$"):
        match = re.search(pattern, text)
        if match:
            text = match.group(1)
    return text[:160]
