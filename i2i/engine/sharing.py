"""Runs that share a machine: each CPU run takes an equal share of the CPUs it may use with the other i2i runs on
them, and follows as runs start and end.

torch starts as many threads as the machine has cores. Two runs side by side then keep 2x as many threads busy as
there are cores, and OpenMP threads spin while they wait for each other: on 2 cores, two quick starts took 5.9x the
time of one (issue 30). Here each run on the CPU registers itself in a folder of the machine's temporary directory
(one small file per process: its pid and CPUs) and sets its torch threads to its CPUs divided by the live runs whose
CPUs overlap its own, re-reading that every few seconds. A run that was killed leaves its file behind; its pid is
no longer alive, so it is not counted (and the file is removed by the next run that sees it).

The thread count is managed only when nothing else set it: `[run] threads = N` fixes it, and so do
OMP_NUM_THREADS and a `torch.set_num_threads` call made before the run (e.g. by a test). The floating-point sums of
some CPU kernels depend on the thread count, so runs that must be bit-identical set it (see README "Speed").
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from i2i.engine.devices import usable_cpu_set, usable_cpus
from i2i.storage.atomic import process_alive

__all__ = ["SHARE_ENV", "CpuShare", "share_folder"]

#: seconds between two looks at the other runs
CHECK_EVERY_S = 2.0


#: the environment variable naming another folder to register in: e.g. one that containers on the same machine
#: share, so that their runs see each other (tests point it at a folder of their own)
SHARE_ENV = "I2I_CPU_SHARE"


def share_folder() -> Path:
    """Where the runs of this user on this machine register ($I2I_CPU_SHARE when set; not created here)."""
    if os.environ.get(SHARE_ENV):
        return Path(os.environ[SHARE_ENV]).expanduser()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"i2i-cpu-share-{uid}"


class CpuShare:
    """This run's share of its CPUs among the i2i runs on them: `start()` registers and sizes the threads, `poll()`
    (every step; it looks every CHECK_EVERY_S seconds) resizes them, `stop()` unregisters.

    `fixed` is a thread count the recipe fixed (0: share); `on_change` hears a line when the count changes.
    """

    def __init__(self, fixed: int = 0, on_change: Callable[[str], None] | None = None,
                 folder: Path | None = None, every_s: float = CHECK_EVERY_S) -> None:
        self.cpus = usable_cpu_set()  # which CPUs: runs on other CPUs do not share them
        self.capacity = usable_cpus()  # how many it may keep busy (fewer than `cpus` under a cgroup CPU quota)
        self.fixed = fixed
        self.on_change = on_change or (lambda text: None)
        self.folder = folder or share_folder()
        self.every_s = every_s
        self.file = self.folder / f"{os.getpid()}.json"
        self.threads = torch.get_num_threads()
        #: whether this run sizes its threads: nothing else fixed them
        # torch (OpenMP) starts one thread per CPU of the process's, or of the machine's: anything else was set
        self.managed = (fixed == 0 and not os.environ.get("OMP_NUM_THREADS")
                        and self.threads in {len(self.cpus), os.cpu_count() or 1})
        self._checked = 0.0

    def start(self) -> None:
        """Register this run and take its share (or the fixed count)."""
        if self.fixed:
            self._set(self.fixed, f"[run] threads = {self.fixed}")
            return
        if not self.managed:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "cpus": sorted(self.cpus)}))
            os.replace(tmp, self.file)
        except OSError:  # a read-only or full temp dir: the run keeps torch's threads rather than fail
            self.managed = False
            return
        self._apply()

    def poll(self) -> None:
        """Resize the threads when the runs sharing the CPUs changed (cheap: it looks every few seconds)."""
        if self.managed and time.monotonic() - self._checked >= self.every_s:
            self._apply()

    def stop(self) -> None:
        """Unregister (the other runs take the CPUs back at their next look)."""
        if self.managed:
            self.file.unlink(missing_ok=True)

    def sharing(self) -> int:
        """How many live runs (this one included) use CPUs of this run's."""
        count = 1
        try:
            entries = list(self.folder.glob("*.json"))
        except OSError:
            return count
        for entry in entries:
            if entry == self.file:
                continue
            try:
                other = json.loads(entry.read_text())
                pid, cpus = int(other["pid"]), set(other["cpus"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written, or not ours
            if not process_alive(pid):
                entry.unlink(missing_ok=True)  # a run that was killed
                continue
            count += bool(cpus & self.cpus)
        return count

    def _apply(self) -> None:
        self._checked = time.monotonic()
        runs = self.sharing()
        share = max(1, self.capacity // runs)
        why = (f"{runs} i2i runs share its {self.capacity} CPUs" if runs > 1
               else f"it is the only i2i run on its {self.capacity} CPUs")
        self._set(share, why)

    def _set(self, threads: int, why: str) -> None:
        if threads != self.threads:
            self.on_change(f"CPU threads {self.threads} -> {threads}: {why}")
            torch.set_num_threads(threads)
            self.threads = threads
