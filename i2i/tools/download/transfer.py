"""Fetching one file over HTTP(S) the way a download should behave: resumable, verified, never half-written.

The bytes go to `<dest>.part` while in transit. A transfer that is cut (network, Ctrl-C, full disk) keeps the
.part, and the next call asks the server for the rest with an HTTP Range request. A server that ignores the
request (it answers 200 with the whole file) gets one warning, and the .part is written again from its first byte,
never appended to; where a server is known not to resume, a cut deletes the .part, which no later call could use.
Only a complete file whose size and sha256 check out is renamed to `dest`; one that fails a check is deleted.
Every failure is an I2IError of one line that names the URL or file and says what to do: what a rerun would do,
or, when a rerun would fetch the same file again, where else to fetch it (`origin`: the mirror option the URL
came from, "" for upstream). Ctrl-C ends in an Interrupted line saying whether a rerun resumes.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import requests
import urllib3

from i2i.storage.digests import file_sha256
from i2i.errors import I2IError, Interrupted, first_line

__all__ = ["CHUNK", "Fetched", "another_source", "check_file", "fetch", "human_size"]

CHUNK = 1 << 20  # bytes per read: small enough for a smooth progress bar, large enough to cost nothing
#: seconds to wait for a connection, and for each read of the body
TIMEOUT = (15, 60)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")

Progress = Callable[[int, "int | None"], None]


@dataclass
class Fetched:
    """A complete, verified file: where it is, its sha256, its size, and how many bytes an earlier call had."""

    path: Path
    sha256: str
    size: int
    resumed_from: int
    sized: bool = False  # the server said the file's size and all of it arrived: the source serves exactly this


def human_size(size: float) -> str:
    """`size` bytes as e.g. 1.5 GB (decimal units, as download sizes are usually given)."""
    units = ("bytes", "kB", "MB", "GB", "TB")
    power = 0
    while abs(size) >= 1000 and power < len(units) - 1:
        size /= 1000
        power += 1
    return f"{size:.0f} bytes" if power == 0 else f"{size:.1f} {units[power]}"


def another_source(origin: str) -> str:
    """Where else to fetch a file the source serves broken or wrong (running the same command again would fetch the
    same bytes): a mirror, or, when `origin` names the mirror the user gave, that mirror to check."""
    if not origin:
        return "fetch it from a mirror that has it with --url BASE"
    return f"check the mirror given with {origin} (it must serve upstream's paths), or fetch from upstream without it"


def fetch(url: str, dest: Path, sha256: str = "", size: int | None = None,
          on_progress: Progress | None = None, origin: str = "") -> Fetched:
    """Download `url` to `dest` (resuming `dest`.part when an earlier call was cut), checked against `size` and
    `sha256` (a whole digest or a prefix; "" checks none), and renamed to `dest` only when complete and verified.

    `origin` names the mirror option `url` comes from (e.g. "--url http://host"; "" for upstream), so that errors
    advise checking that mirror rather than giving one."""
    transfer = _Transfer(url, dest.with_name(dest.name + ".part"), origin)
    try:
        return transfer.run(dest, sha256, size, on_progress)
    except KeyboardInterrupt:
        raise transfer.stopped() from None


def check_file(path: Path, url: str, sha256: str = "", size: int | None = None, origin: str = "") -> Fetched:
    """A file an earlier call fetched whole from `url` (e.g. an archive whose unpacking was stopped), checked as a
    fresh download is; deleted with an I2IError when a check fails."""
    return _verify(path, path, url, sha256, size, path.stat().st_size, True, origin)


class _Transfer:
    """One call of `fetch`: the URL, its .part, and what the server showed of resuming (for the messages)."""

    def __init__(self, url: str, part: Path, origin: str) -> None:
        self.url, self.part, self.origin = url, part, origin
        self.resumable: bool | None = None  # None: the server has not shown whether it honours Range requests
        self.total: int | None = None

    def run(self, dest: Path, sha256: str, size: int | None, on_progress: Progress | None) -> Fetched:
        """The transfer: resume or start, receive, verify."""
        offset = self.part.stat().st_size if self.part.exists() else 0
        with requests.Session() as session:
            response = self.request(session, offset)
            if offset and response.status_code == 416:
                response.close()
                total = _unsatisfied_total(response)
                if total == offset:  # an earlier call got every byte and was stopped before its checks
                    self.resumable, self.total = True, total
                    return _verify(self.part, dest, self.url, sha256, size, offset, True, self.origin)
                of = f" of {human_size(total)}" if total is not None else ""
                warnings.warn(f"{self.part} ({human_size(offset)}) is not the start of the file on the server"
                              f"{of}: downloading {self.url} again from the start")
                self.part.unlink()
                offset = 0
                response = self.request(session, 0)
            self.raise_for_status(response)
            if offset and response.status_code == 200:
                # the server ignored the Range request and sends the whole file: receive writes it over the .part
                self.resumable = False
                warnings.warn(f"the server does not support resuming: downloading {self.url} again from the start"
                              f" (the {human_size(offset)} fetched before are replaced)")
                offset = 0
            else:
                self.resumable = True if response.status_code == 206 else _accepts_ranges(response)
            with response:
                start, self.total = _extent(response, offset)
                if start != offset:  # a server that answered another range than asked: do not splice
                    self.part.unlink(missing_ok=True)
                    raise I2IError(f"{self.url}: the server sent bytes from {start} when asked from {offset}; the"
                                   " partial download was deleted, run the same command again")
                dest.parent.mkdir(parents=True, exist_ok=True)  # only now: a refused request leaves no folder behind
                _check_space(dest.parent, (self.total - offset) if self.total is not None else None, self.part)
                received = self.receive(response, offset, on_progress)
        if self.total is not None and received < self.total:
            raise self.cut(received, "the server closed the connection early")
        return _verify(self.part, dest, self.url, sha256, size, offset, self.total is not None, self.origin)

    def request(self, session: requests.Session, offset: int) -> requests.Response:
        """GET the URL streamed, from byte `offset`; a network failure is one line saying what to try."""
        headers = {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"} if offset else \
            {"Accept-Encoding": "identity"}  # identity: the bytes on disk are the bytes counted and resumed
        host = urlsplit(self.url).netloc
        check = f"check the network and the mirror given with {self.origin}" if self.origin else \
            "check the network, or fetch from a mirror with --url BASE"
        try:
            return session.get(self.url, headers=headers, stream=True, timeout=TIMEOUT)
        except requests.exceptions.Timeout:
            raise I2IError(f"{host} did not answer within {TIMEOUT[0]} s ({self.url}): {check}") from None
        except requests.exceptions.ConnectionError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else \
                "name not resolved: offline?" if "resolve" in str(exc).lower() or "name" in str(exc).lower() else \
                _reason(exc)
            raise I2IError(f"cannot reach {host} ({reason}) for {self.url}: {check}") from None
        except requests.exceptions.RequestException as exc:
            raise I2IError(f"cannot download {self.url}: {_reason(exc)}") from None

    def raise_for_status(self, response: requests.Response) -> None:
        """An I2IError for an HTTP error status: upstream's advises a mirror, a mirror's advises checking it."""
        if response.status_code < 400:
            return
        response.close()
        code, reason = response.status_code, response.reason or ""
        if code == 404 and self.origin:
            raise I2IError(f"{self.url} was not found (HTTP 404): check the mirror given with {self.origin}: it must"
                           f" serve upstream's paths, here {urlsplit(self.url).path}")
        if code == 404:
            raise I2IError(f"{self.url} was not found (HTTP 404): the file may have moved upstream; fetch it from a"
                           " mirror that has it with --url BASE")
        elsewhere = f"check the mirror given with {self.origin}" if self.origin else "fetch from a mirror with --url"
        raise I2IError(f"{self.url} failed with HTTP {code} {reason}".rstrip() + f": try again later, or {elsewhere}")

    def receive(self, response: requests.Response, offset: int, on_progress: Progress | None) -> int:
        """Write the body to the .part from byte `offset` (0: from the start, replacing what it held); returns the
        bytes it then holds. A cut keeps it for the next call where the server can resume."""
        done, total, part = offset, self.total, self.part
        if on_progress is not None:
            on_progress(done, total)
        # unbuffered: the .part holds what arrived (its size is the progress; a kill -9 keeps it too), and a full disk
        # is found at the write that meets it, never later when a buffer is flushed on close
        with open(part, "ab" if offset else "wb", buffering=0) as f:
            while True:
                try:
                    # read1 hands over what has arrived (up to CHUNK) instead of waiting for a full chunk, so a cut
                    # loses nothing that reached us: the .part ends exactly where the connection broke
                    block = response.raw.read1(CHUNK, decode_content=False)
                except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    raise self.cut(done, _reason(exc)) from None
                if not block:
                    break
                try:
                    view = memoryview(block)
                    while view:  # a raw write may take less than it was given
                        view = view[f.write(view):]
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise I2IError(f"the disk is full: {part} stopped at {human_size(done)}; free some space,"
                                       f" then {self.after_cut()}") from None
                    raise I2IError(f"cannot write {part}: {exc.strerror or first_line(exc)}") from None
                done += len(block)
                if on_progress is not None:
                    on_progress(done, total)
        return done

    def after_cut(self) -> str:
        """What becomes of the .part of a cut transfer, as the end of a message: kept for the same command to resume,
        or deleted where the server cannot resume (a rerun starts from the beginning anyway)."""
        if self.resumable is False:
            self.part.unlink(missing_ok=True)
            return ("the server does not support resuming, so the partial file was deleted: run the same command again"
                    " to download it from the start")
        kept = human_size(self.part.stat().st_size) if self.part.exists() else "0 bytes"
        unsure = "" if self.resumable else " if the server allows it (it did not say; if not, it starts again)"
        return f"the {kept} fetched are kept in {self.part}: run the same command again to resume from there{unsure}"

    def cut(self, done: int, why: str) -> I2IError:
        """The error of a transfer that ended early (network, server)."""
        of = f" of {human_size(self.total)}" if self.total is not None else ""
        return I2IError(f"the download of {self.url} was cut at {human_size(done)}{of} ({why}); {self.after_cut()}")

    def stopped(self) -> Interrupted:
        """The line of a transfer stopped with Ctrl-C: what was kept and whether the same command resumes it."""
        kept = self.part.stat().st_size if self.part.exists() else 0
        if not kept:
            return Interrupted(f"the download of {self.url} was stopped before any of it arrived; nothing was kept")
        of = f" of {human_size(self.total)}" if self.total is not None else ""
        return Interrupted(f"the download of {self.url} was stopped at {human_size(kept)}{of}; {self.after_cut()}")


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


def _accepts_ranges(response: requests.Response) -> bool | None:
    """Whether a server's whole-file answer says it honours Range requests (`Accept-Ranges`); None: it did not say."""
    accepts = response.headers.get("Accept-Ranges", "").strip().lower()
    return True if accepts == "bytes" else False if accepts == "none" else None


def _unsatisfied_total(response: requests.Response) -> int | None:
    """The file's size a 416 answer gives (`Content-Range: bytes */N`), or None."""
    match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _verify(part: Path, dest: Path, url: str, sha256: str, size: int | None, resumed_from: int, sized: bool,
            origin: str) -> Fetched:
    """Rename `part` to `dest` when its size and digest match; otherwise delete it and say which check failed and
    what a rerun would do: fetch it afresh (a resumed or maybe cut transfer) or the same file again (a wrong source).
    `sized`: the server said the size and all of it arrived."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        if sized:
            raise I2IError(f"{url}: the server sends {actual_size} bytes where {size} were expected (not the published"
                           f" file); it was deleted: running the same command again would fetch it again, so"
                           f" {another_source(origin)}")
        raise I2IError(f"{url}: got {actual_size} bytes where {size} were expected (the server did not say the size,"
                       " so the transfer may have been cut); it was deleted: run the same command again")
    digest = file_sha256(part)
    if sha256 and not digest.startswith(sha256.lower()):
        part.unlink()
        kind = "sha256" if len(sha256) == 64 else "sha256 prefix"
        if resumed_from:
            advice = ("it was resumed from an earlier partial download, which need not be of the same file: run the"
                      " same command again to download it whole")
        elif not sized:
            advice = "the server did not say the size, so the transfer may have been cut: run the same command again"
        else:
            advice = (f"the source serves this file, so running the same command again would fetch it again: check"
                      f" the --sha256 given, if any, or {another_source(origin)}")
        raise I2IError(f"{url}: its sha256 {digest} does not match the expected {kind} {sha256}; it was deleted:"
                       f" {advice}")
    os.replace(part, dest)
    return Fetched(dest, digest, actual_size, resumed_from, sized)


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
