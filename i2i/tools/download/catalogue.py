"""The catalogue of what `i2i download` fetches (catalogue.toml beside this module): names, URLs, digests.

One data file owns the URLs; everything else asks `lookup` for an Entry and `Entry.url_from(base)` for where to
fetch it, so a mirror (`--url BASE`, $I2I_DOWNLOAD_URL) changes the host of every URL in one place.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from i2i.errors import I2IError
from i2i.contract.options import closest

__all__ = ["KINDS", "MIRROR_ENV", "Entry", "entries", "lookup", "mirror_base", "mirror_origin"]

CATALOGUE_FILE = Path(__file__).with_name("catalogue.toml")
#: the environment variable that points every download at a mirror (as --url does)
MIRROR_ENV = "I2I_DOWNLOAD_URL"
#: what `i2i download` fetches, with the cache subfolder each goes into
KINDS = ("dataset", "model", "inception")
_HEX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class Entry:
    """One thing the catalogue offers: `family/name` of a kind, its upstream URL and what is known about it."""

    kind: str
    family: str
    name: str
    url: str
    sha256: str = ""  # the whole digest or a published prefix; "" when unknown
    size: int | None = None
    layout: str = ""  # datasets: "unpaired" (trainA/, trainB/) or "aligned" (train/ of A|B images)
    train: str = ""  # datasets: the command that trains on it, with {root}
    protocol: str = ""  # inception: the FID protocol of i2i evaluate these weights serve

    @property
    def qualified(self) -> str:
        """`family/name`, the name that is never ambiguous."""
        return f"{self.family}/{self.name}"

    @property
    def file_name(self) -> str:
        """The name of the file the URL serves, e.g. horse2zebra.zip."""
        return urlsplit(self.url).path.rsplit("/", 1)[-1]

    def url_from(self, base: str | None) -> str:
        """The URL to fetch: upstream's, or with its scheme and host replaced by the mirror `base`."""
        if not base:
            return self.url
        return base.rstrip("/") + urlsplit(self.url).path


def mirror_base(url: str | None) -> str | None:
    """The mirror to use: `url` (--url), else $I2I_DOWNLOAD_URL, else None (upstream); checked to be http(s)."""
    base = url or os.environ.get(MIRROR_ENV) or None
    if base is not None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            where = "--url" if url else f"${MIRROR_ENV}"
            raise I2IError(f"{where} {base!r} is not an http(s) URL: pass e.g. http://mirror.example.org or"
                           " http://127.0.0.1:8000")
    return base


def mirror_origin(url: str | None) -> str:
    """How the mirror was chosen, for error advice: "--url BASE", "$I2I_DOWNLOAD_URL=BASE", or "" (upstream)."""
    if url:
        return f"--url {url}"
    base = os.environ.get(MIRROR_ENV)
    return f"${MIRROR_ENV}={base}" if base else ""


@cache
def _load() -> dict[str, Any]:
    with open(CATALOGUE_FILE, "rb") as f:
        return tomllib.load(f)


def entries(kind: str) -> list[Entry]:
    """Every entry of `kind` in catalogue order."""
    found = []
    for family, table in _load().get(kind, {}).items():
        names = table.get("names", [family])  # a family without names is one entry (the Inception weights)
        for name in names:
            extra = table.get("train_extra", {}).get(name, "")
            train = f"{table.get('train', '')} {extra}".strip()
            sha = table.get("sha256", "")
            if sha and not _HEX.fullmatch(sha):
                raise I2IError(f"{CATALOGUE_FILE}: [{kind}.{family}] sha256 {sha!r} is not 8-64 lowercase hex digits")
            found.append(Entry(kind, family, name, table["url"].format(name=name), sha, table.get("size"),
                               table.get("layout", ""), train, table.get("protocol", "")))
    return found


def lookup(kind: str, name: str) -> Entry:
    """The entry `name` (or `family/name`) of `kind`; an I2IError lists what exists, the closest match, and says
    which families share an ambiguous name."""
    known = entries(kind)
    matches = [e for e in known if name in (e.qualified, e.name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = " or ".join(f"{e.qualified}" + (f" ({e.layout})" if e.layout else "") for e in matches)
        raise I2IError(f"{kind} {name!r} is in more than one family: pass {choices}")
    unavailable = _load().get("unavailable", {}).get(name)
    if kind == "dataset" and unavailable:
        raise I2IError(f"dataset {name!r} cannot be downloaded: {' '.join(unavailable['message'].split())}")
    names = [e.name for e in known]
    near = closest(name, names + [e.qualified for e in known])
    hint = f"did you mean {near!r}? " if near else ""
    raise I2IError(f"unknown {kind} {name!r}: {hint}available: {', '.join(dict.fromkeys(names))}")
