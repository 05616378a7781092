"""Where a sweep's runs go: executors. `local` runs them as subprocesses on this machine; `slurm` submits them to a
SLURM cluster as one job array through submitit; plugins add others (hook `i2i_executors`).

The sweep's state file (sweep.json) stays the truth whatever the executor: per run its status (pending, submitted,
running, finished, failed), its job id where a scheduler gave one, and a detail line. Every run is
`python -m i2i run RECIPE --set ... --out SWEEP/<run> --resume`, so a run started again continues from its newest
checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from i2i.engine.devices import usable_cpus
from i2i.errors import I2IError
from i2i.storage.atomic import atomic_file

if TYPE_CHECKING:
    from i2i.tools.sweep import Combination, SweepResult

__all__ = ["INSTALL_HINT", "Executor", "LocalExecutor", "Placement", "Resources", "SlurmExecutor", "SweepRuns",
           "executor_class", "executor_classes", "run_task"]

INSTALL_HINT = 'the slurm executor needs submitit, an optional extra: pip install "i2i-toolkit[slurm]"'
STATE = "sweep.json"
STATUSES = ("pending", "submitted", "running", "finished", "failed")


def read_state(out: Path) -> dict[str, Any]:
    """A sweep folder's state (an empty one when it has none yet)."""
    try:
        return json.loads((out / STATE).read_text())
    except (OSError, ValueError):
        return {"runs": {}}


def write_state(out: Path, state: dict[str, Any]) -> None:
    """Replace the sweep's state file atomically: a killed sweep never leaves half a file."""
    with atomic_file(out / STATE, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)


@dataclass
class Resources:
    """What each run asks of a cluster: partition ("" = the cluster's default), minutes, GPUs, CPUs, memory in GB."""

    partition: str = ""
    time: int = 60
    gpus: int = 0
    cpus: int = 1
    mem: float = 0.0  # 0: the cluster's default

    def text(self) -> str:
        """For people: what each task asks for."""
        parts = [f"partition {self.partition or '(default)'}", f"{self.time} min", f"{self.cpus} CPU"
                 f"{'s' * (self.cpus != 1)}", f"{self.gpus} GPU{'s' * (self.gpus != 1)}"]
        return ", ".join(parts + [f"{self.mem:g} GB"] * bool(self.mem))


@dataclass
class SweepRuns:
    """A sweep as an executor sees it: how to start each run, and where to record what became of it."""

    out: Path
    recipe: Path
    overrides: list[str]
    device: str  # the recipe's [run] device
    jobs: int
    resources: Resources
    state: dict[str, Any]
    result: SweepResult
    on_event: Callable[[str, Combination, str], None] | None = None
    on_note: Callable[[str], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def command(self, combo: Combination) -> list[str]:
        """The command line of one run: it resumes from the run's newest checkpoint when there is one."""
        args = [sys.executable, "-m", "i2i", "run", str(self.recipe)]
        for override in [*self.overrides, *combo.overrides]:
            args += ["--set", override]
        return args + ["--out", str(self.out / combo.name), "--resume"]

    def log(self, combo: Combination) -> Path:
        """The file a run's output goes to."""
        path = log_file(self.out, combo.name)
        path.parent.mkdir(exist_ok=True)
        return path

    def entry(self, name: str) -> dict[str, Any]:
        """What the state file says of run `name` (empty when nothing yet)."""
        return self.state["runs"].get(name, {})

    def record(self, combo: Combination, status: str, detail: str = "", job: str = "", event: bool = True) -> None:
        """Write run `combo`'s new status (and job id) to the state file, the result and the caller's events."""
        with self.lock:  # state, result and messages change one run at a time
            entry = {"status": status, "overrides": combo.overrides, "detail": detail}
            if job:
                entry["job"] = job
            self.state["runs"][combo.name] = entry
            write_state(self.out, self.state)
            if status == "finished":
                self.result.finished.append(combo.name)
            elif status == "failed":
                self.result.failed[combo.name] = detail
            if event and self.on_event:
                self.on_event(status, combo, detail)


def error_detail(log: Path, code: int) -> str:
    """The last `error` line a run printed, or its exit code and where its log is."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error")]
    return errors[-1] if errors else f"exit code {code} (see {log})"


def run_task(args: list[str], log: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run one sweep run as a subprocess, its output in `log`: (exit code, detail line), also written beside the log
    (`outcome_file`) for a sweep that reads it later. Also what a SLURM task runs."""
    started = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    detail = error_detail(Path(log), code) if code else f"{time.perf_counter() - started:.0f} s"
    with atomic_file(outcome_file(Path(log)), "w") as f:
        json.dump({"code": code, "detail": detail}, f)
    return code, detail


def log_file(out: Path, name: str) -> Path:
    """The file the output of the sweep's run `name` goes to."""
    return out / "logs" / f"{name}.log"


def outcome_file(log: Path) -> Path:
    """Where `run_task` writes how the run of `log` ended (JSON: code, detail)."""
    return log.with_suffix(".outcome.json")


class Executor:
    """Runs a sweep's runs somewhere. Subclass it, set `name` (what `--executor` takes) and a one-line docstring,
    and return the class from the `i2i_executors` hook."""

    name: ClassVar[str] = ""

    def check(self) -> None:
        """Refuse (I2IError) before anything is written when this executor cannot work here."""

    def run(self, sweep: SweepRuns, combos: list[Combination]) -> None:
        """Start (or pick up again, after a sweep died) every run of `combos`, none of them finished, and follow
        them until each has ended, recording each change through `sweep.record`."""
        raise NotImplementedError

    def where(self, out: Path, name: str, entry: dict[str, Any]) -> str:
        """Where the run `name` stands now, for `i2i sweep --status`: by default what the state file says."""
        return entry.get("status", "pending")


class LocalExecutor(Executor):
    """Subprocesses on this machine, `--jobs` at a time, placed on its CPUs or GPUs."""

    name = "local"

    def run(self, sweep: SweepRuns, combos: list[Combination]) -> None:
        """Run `combos` in a thread pool of subprocesses, each placed by `Placement`."""
        place = Placement.plan(sweep.device, sweep.jobs, len(combos))
        if sweep.on_note and combos:
            sweep.on_note(place.text)
        lock = threading.Lock()

        def run_one(combo: Combination) -> None:
            with lock:
                gpu = place.take()
                if sweep.on_event:
                    sweep.on_event("started", combo, f"GPU {gpu}" if gpu is not None else "")
            # CPU runs size their threads themselves (i2i.engine.sharing); a run of several GPUs' sweep sees only
            # its own
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": place.visible(gpu)} if gpu is not None else None
            try:
                code, detail = run_task(sweep.command(combo), str(sweep.log(combo)), env)
            finally:
                with lock:
                    place.give_back(gpu)
            sweep.record(combo, "finished" if code == 0 else "failed", detail)

        with ThreadPoolExecutor(max_workers=max(1, sweep.jobs)) as pool:
            list(pool.map(run_one, combos))


# squeue's states of a job that is still to run or running (anything else, or no line, means it has ended)
_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "RESIZING", "SPECIAL_EXIT", "STAGE_OUT", "SIGNALING"}
_RUNNING = {"RUNNING", "COMPLETING"}


class SlurmExecutor(Executor):
    """A SLURM cluster, through submitit: one job array of the sweep's runs, resources from the --slurm-* flags."""

    name = "slurm"
    poll_seconds: ClassVar[float] = 1.0

    def check(self) -> None:
        """submitit installed, and SLURM's commands on PATH."""
        try:
            import submitit  # noqa: F401  (only whether it is installed)
        except ImportError:
            raise I2IError(INSTALL_HINT) from None
        missing = [tool for tool in ("sbatch", "squeue", "srun") if shutil.which(tool) is None]
        if missing:
            raise I2IError(f"--executor slurm: {', '.join(missing)} not found on PATH: run the sweep on a SLURM"
                           " login node (or one with SLURM's client commands), or use --executor local")

    def run(self, sweep: SweepRuns, combos: list[Combination]) -> None:
        """Follow the runs whose jobs are still queued or running, collect those that ended, submit the rest as
        one array, then follow everything until it has ended."""
        following: dict[str, tuple[Combination, str]] = {}
        submit = []
        jobs = [sweep.entry(c.name).get("job", "") for c in combos]
        live = queue_states([job for job in jobs if job])
        for combo, job in zip(combos, jobs):
            if job and sweep.entry(combo.name).get("status") in ("submitted", "running"):
                if job in live:
                    following[combo.name] = (combo, job)
                    continue
                code, detail = task_outcome(sweep.log(combo), job)
                if code == 0:  # it finished while nobody was watching
                    sweep.record(combo, "finished", detail, job)
                    continue
            submit.append(combo)
        if submit:
            for combo, job in zip(submit, self._submit(sweep, submit)):
                sweep.record(combo, "submitted", "", job, event=False)
                if sweep.on_event:
                    sweep.on_event("submitted", combo, f"job {job}")
                following[combo.name] = (combo, job)
        elif following and sweep.on_note:
            sweep.on_note(f"following {len(following)} SLURM job{'s' * (len(following) != 1)} submitted earlier")
        self._follow(sweep, following)

    def _submit(self, sweep: SweepRuns, combos: list[Combination]) -> list[str]:
        """Submit `combos` as one job array; their job ids (ARRAY_INDEX), in order."""
        import submitit

        res = sweep.resources
        executor = submitit.SlurmExecutor(folder=sweep.out / "slurm", max_num_timeout=0)
        params: dict[str, Any] = {"job_name": f"i2i-{sweep.out.name}"[:64], "time": res.time,
                                  "cpus_per_task": res.cpus, "ntasks_per_node": 1}
        if res.partition:
            params["partition"] = res.partition
        if res.gpus:
            params["gpus_per_node"] = res.gpus
        if res.mem:
            params["mem"] = f"{int(res.mem * 1024)}MB"
        executor.update_parameters(**params)
        if sweep.on_note:
            sweep.on_note(f"{len(combos)} run{'s' * (len(combos) != 1)} submitted to SLURM as one job array"
                          f" ({res.text()} each); submitit's files in {sweep.out / 'slurm'}")
        for combo in combos:  # a resubmitted run's earlier outcome must not stand for the new task's
            outcome_file(sweep.log(combo)).unlink(missing_ok=True)
        try:
            submitted = executor.map_array(run_task, [sweep.command(c) for c in combos],
                                           [str(sweep.log(c)) for c in combos])
        except Exception as exc:  # sbatch's refusal (bad partition, too many GPUs) comes back as a long message
            lines = [line.strip() for line in str(exc).splitlines() if "error" in line.lower()]
            raise I2IError(f"sbatch refused the sweep's job array: {lines[-1] if lines else exc}") from None
        return [str(job.job_id) for job in submitted]

    def _follow(self, sweep: SweepRuns, following: dict[str, tuple[Combination, str]]) -> None:
        """Poll squeue until every followed job has left the queue, recording each run's changes."""
        while following:
            live = queue_states([job for _, job in following.values()])
            for name, (combo, job) in list(following.items()):
                state = live.get(job)
                if state in _RUNNING and sweep.entry(name).get("status") != "running":
                    sweep.record(combo, "running", "", job, event=False)
                    if sweep.on_event:
                        sweep.on_event("started", combo, f"job {job}")
                elif state is None:
                    code, detail = task_outcome(sweep.log(combo), job)
                    sweep.record(combo, "finished" if code == 0 else "failed", detail, job)
                    del following[name]
            if following:
                time.sleep(self.poll_seconds)

    def where(self, out: Path, name: str, entry: dict[str, Any]) -> str:
        """Queued or running by squeue for a run that was submitted; otherwise what the state file says."""
        status, job = entry.get("status", "pending"), entry.get("job", "")
        if status not in ("submitted", "running") or not job or shutil.which("squeue") is None:
            return status
        state = queue_states([job]).get(job)
        if state in _RUNNING:
            return "running"
        if state is not None:
            return "queued"
        code, _ = task_outcome(log_file(out, name), job)
        return "finished (not collected yet: --resume)" if code == 0 else "ended (resubmitted by --resume)"


def queue_states(jobs: list[str]) -> dict[str, str]:
    """The squeue state of each job id (ARRAY_INDEX or plain) still in the queue; ended jobs are absent. squeue,
    not sacct: clusters without accounting have no sacct."""
    if not jobs:
        return {}
    arrays = sorted({job.split("_")[0] for job in jobs})
    proc = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T", "--jobs", ",".join(arrays)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        # an ended job id that SLURM has already forgotten is an error to squeue, not an empty answer
        if "Invalid job id" in proc.stderr:
            return {}
        message = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise I2IError(f"squeue failed: {message}; the runs go on: follow them later with `i2i sweep --resume`")
    states = {}
    for line in proc.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        states[job] = state
    return {job: states[job] for job in jobs if job in states}


def task_outcome(log: Path, job: str) -> tuple[int, str]:
    """How a SLURM task that has left the queue ended: (exit code, detail), from what its `run_task` wrote beside
    the run's `log` (-1 when it wrote nothing: cancelled, preempted, out of time or killed). JSON, not submitit's
    result pickle: a sweep folder's files are never unpickled."""
    try:
        outcome = json.loads(outcome_file(log).read_text())
        return int(outcome["code"]), str(outcome["detail"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1, (f"job {job} ended without finishing its run (cancelled, preempted, out of time or killed);"
                    f" see {log} and the job's files in {log.parent.parent / 'slurm'}")


@dataclass
class Placement:
    """Where a sweep's runs go: CPU runs share the CPUs (each sizes its threads to its share), GPU runs take the
    least busy of the visible GPUs (one each while there are enough)."""

    text: str  # for people: how many at a time, and where
    gpus: list[int]  # the GPUs runs are placed on ([] on the CPU)
    busy: dict[int, int] = field(default_factory=dict)  # runs on each GPU now

    @classmethod
    def plan(cls, device: str, jobs: int, runs: int, gpu_count: int | None = None) -> "Placement":
        """The placement of `runs` runs, `jobs` at a time, on [run] device `device` (`gpu_count`: the visible GPUs,
        asked of torch when None)."""
        at_once = min(jobs, runs) or 1
        head = f"{runs} run{'s' * (runs != 1)}, {at_once} at a time"
        if gpu_count is None:
            gpu_count = _cuda_count() if device in ("auto", "cuda") else 0
        if device in ("auto", "cuda") and gpu_count > 1:
            per = -(-at_once // gpu_count)
            where = (f"one GPU each (GPUs 0-{min(at_once, gpu_count) - 1})" if at_once <= gpu_count
                     else f"over {gpu_count} GPUs, up to {per} on each")
            return cls(f"{head}: {where}, through CUDA_VISIBLE_DEVICES", list(range(gpu_count)))
        if device.startswith("cuda") or (device == "auto" and gpu_count == 1):
            gpu = device.partition(":")[2] or "0"
            return cls(f"{head} on GPU {gpu}" + (" (they share it)" if at_once > 1 else ""), [])
        if device not in ("auto", "cpu"):
            return cls(f"{head} on {device}", [])
        cpus = usable_cpus()
        share = max(1, cpus // at_once)
        return cls(f"{head} on the CPU: each takes an equal share of the {cpus} CPUs ({share} thread"
                   f"{'s' * (share != 1)} each while {at_once} run; more as others end)", [])

    def take(self) -> int | None:
        """The GPU for a run that starts now (the one with the fewest runs), or None when runs are not placed."""
        if not self.gpus:
            return None
        gpu = min(self.gpus, key=lambda g: (self.busy.get(g, 0), g))
        self.busy[gpu] = self.busy.get(gpu, 0) + 1
        return gpu

    @staticmethod
    def visible(gpu: int) -> str:
        """CUDA_VISIBLE_DEVICES for a run on the sweep's `gpu`-th visible GPU (the user's own list respected)."""
        listed = [item.strip() for item in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if item.strip()]
        return listed[gpu] if gpu < len(listed) else str(gpu)

    def give_back(self, gpu: int | None) -> None:
        """A run on `gpu` ended."""
        if gpu is not None:
            self.busy[gpu] -= 1


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def executor_classes() -> dict[str, type[Executor]]:
    """Every executor by name: the core's (local, slurm), then those plugins add (hook `i2i_executors`)."""
    from i2i.contract.registry import default_registry

    found: dict[str, type[Executor]] = {LocalExecutor.name: LocalExecutor, SlurmExecutor.name: SlurmExecutor}
    found.update({name: cls for name, cls in default_registry().executors(taken=found).items()})
    return found


def executor_class(name: str) -> type[Executor]:
    """The executor called `name`; an unknown name lists those that exist and the closest."""
    from i2i.contract.options import closest

    known = executor_classes()
    if name not in known:
        close = closest(name, known)
        raise I2IError(f"unknown executor {name!r}: {f'did you mean {close!r}? ' if close else ''}"
                       f"(executors: {', '.join(known)}); plugins add others through the i2i_executors hook")
    return known[name]


def resources_record(resources: Resources) -> dict[str, Any]:
    """Resources as the state file keeps them, so --resume asks for the same."""
    return asdict(resources)
