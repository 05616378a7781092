"""The exception types i2i raises for what a user can fix; the CLI prints their message as a single line and exits
with their `exit_code`. Also the one place that recognises running out of memory (`out_of_memory`)."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Iterator

#: exit status of an error the user can fix (the same as click's usage errors)
EXIT_ERROR = 2
#: exit status of a command that wrote its outputs but skipped some inputs (each named in a warning)
EXIT_SKIPPED = 3


class I2IError(Exception):
    """A problem the user can fix: the message names the bad key, file or value and says what to do."""

    exit_code = EXIT_ERROR


class Interrupted(I2IError):
    """The user stopped a command (Ctrl-C): training after saving a checkpoint, a download keeping what it fetched."""

    exit_code = 130


class InputsSkipped(I2IError):
    """The command wrote what it could, but some inputs were skipped (named in warnings before this)."""

    exit_code = EXIT_SKIPPED


class OutOfMemory(I2IError):
    """An allocation failed: the message names what was being done, at what size, and what shrinks it."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library messages can span many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# torch raises a plain RuntimeError when the CPU allocator fails ("[enforce fail at alloc_cpu.cpp:127] ...
# DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes"; older builds: "not enough memory"),
# torch.OutOfMemoryError (a RuntimeError) on CUDA, and RuntimeErrors naming the device on MPS and in CUDA libraries.
_MEMORY_MARKERS = ("DefaultCPUAllocator", "enforce fail at alloc_cpu", "can't allocate memory", "not enough memory",
                   "out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                   "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")
# how the failed allocation's size is given: the CPU allocator in bytes, CUDA and numpy in a unit
_REQUESTED = re.compile(r"(?:tried to allocate|unable to allocate)\s+([\d.]+)\s*(bytes|[KMGTP]i?B)?", re.IGNORECASE)
_UNITS = {"bytes": 1, **{f"{prefix}ib": 2 ** (10 * power) for power, prefix in enumerate("kmgtp", 1)},
          **{f"{prefix}b": 10 ** (3 * power) for power, prefix in enumerate("kmgtp", 1)}}


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a failed allocation: torch's (CPU allocator, CUDA, MPS) or Python's/numpy's MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    # torch.OutOfMemoryError by name: this module is imported by the CLI before torch is
    return type(exc).__name__ == "OutOfMemoryError" or any(marker in str(exc) for marker in _MEMORY_MARKERS)


def requested_bytes(exc: BaseException) -> int | None:
    """The size of the allocation that failed, when the message says it."""
    found = _REQUESTED.search(str(exc))
    if found is None:
        return None
    return round(float(found.group(1)) * _UNITS[(found.group(2) or "bytes").lower()])


def memory_size(size: float) -> str:
    """`size` bytes in binary units, as memory is counted: e.g. 16 GiB, 1.5 GiB, 256 MiB."""
    for unit, scale in (("PiB", 2 ** 50), ("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} bytes"


def out_of_memory_error(exc: BaseException, doing: str, fixes: str) -> OutOfMemory:
    """The one-line error for an allocation `exc` that failed while `doing` (e.g. "translating a.png (8192x8192 px)
    on cpu"); `fixes` names the flags or recipe keys that shrink what is needed."""
    size = requested_bytes(exc)
    failed = f" (an allocation of {memory_size(size)} failed)" if size else ""
    return OutOfMemory(f"out of memory{' ' + doing if doing else ''}{failed}: {fixes}")


@contextmanager
def out_of_memory(doing: str | Callable[[], str], fixes: str | Callable[[], str]) -> Iterator[None]:
    """Turn a failed allocation inside the block into one OutOfMemory line (see `out_of_memory_error`); `doing` and
    `fixes` may be functions, called only then (e.g. to read an image's size from its header)."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise out_of_memory_error(exc, doing() if callable(doing) else doing,
                                  fixes() if callable(fixes) else fixes) from exc
