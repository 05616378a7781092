"""Hyperparameter search: recipe keys sampled by Optuna, each trial a normal run folder, poor trials pruned early.

The search folder holds an Optuna journal file: every `i2i search` started on the same folder (on this machine or
on others sharing the filesystem) is a worker of the one study, and a worker killed at any point loses nothing:
its running trial is failed by the next worker to start a trial and continued, from its newest checkpoint, by a
new trial with the same values.

    DIR/search.json           the search's settings (a worker with other settings is refused)
    DIR/journal.log           the Optuna study (optuna.storages.JournalStorage)
    DIR/trials/trial-NNNN/    one run folder per trial (trial.json says its state, number, values, objective)
    DIR/best.toml             the best complete trial's resolved recipe: `i2i run DIR/best.toml` reproduces it
    DIR/compare.html          the comparison page of the trials; DIR/objective.png the objective per trial
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import Tensor

from i2i.api import DIRECTIONS, LOWER_IS_BETTER, Callback, TrainingContext, metric_names
from i2i.errors import I2IError, Interrupted
from i2i.recipe import Recipe, load_recipe, parse_override
from i2i.storage.atomic import atomic_file, process_alive
from i2i.storage.rundir import RunFolder

if TYPE_CHECKING:
    import optuna

INSTALL_HINT = 'i2i search needs Optuna, an optional extra: pip install "i2i-toolkit[search]"'
SETTINGS = "search.json"
JOURNAL = "journal.log"
TRIALS_DIR = "trials"
BEST_FILE = "best.toml"
OBJECTIVE_PLOT = "objective.png"
STUDY_NAME = "i2i-search"  # one study per search folder
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("asha", "none")
#: a RUNNING trial of another host whose heartbeat is older than this is taken for dead (same host: its pid)
HEARTBEAT_GRACE_S = 600.0
HEARTBEAT_EVERY_S = 60.0
ASHA_REDUCTION = 3  # ASHA keeps the best third of the trials at each rung (rungs at every, 3 every, 9 every ...)
VALIDATION = "validation"  # the recipe's [callback.validation]: what measures the objective


def import_optuna():
    """The optuna module, or one line naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise I2IError(INSTALL_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trial lines are ours (on_event)
    return optuna


# -- the search space and the objective ----------------------------------------------------------------------------

@dataclass
class Param:
    """One searched recipe key: float, log (log-uniform float), int ranges LO..HI, or choice of values."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: list[str] = field(default_factory=list)  # as typed: each becomes --set KEY=TEXT

    @classmethod
    def parse(cls, text: str) -> "Param":
        """`KEY=float:LO..HI`, `KEY=log:LO..HI`, `KEY=int:LO..HI` or `KEY=choice:A,B,C`."""
        key, _, spec = text.partition("=")
        key, spec = key.strip(), spec.strip()
        kind, sep, body = spec.partition(":")
        usage = (f"--param {text!r}: expected KEY=float:LO..HI, log:LO..HI, int:LO..HI or choice:A,B,C, e.g."
                 " --param optim.lr=log:1e-4..1e-2")
        if not key or not sep or kind not in ("float", "log", "int", "choice"):
            raise I2IError(usage)
        parse_override(f"{key}=0")  # the key's own form (dotted) is checked as --set checks it
        if kind == "choice":
            choices = [c.strip() for c in body.split(",")]
            if not body.strip() or any(not c for c in choices):
                raise I2IError(f"--param {text!r}: an empty choice; give the values, e.g. {key}=choice:1,2,3")
            if len(set(choices)) != len(choices):
                raise I2IError(f"--param {text!r}: a value is given twice")
            return cls(key, kind, choices=choices)
        low_text, dots, high_text = body.partition("..")
        number = int if kind == "int" else float
        try:
            low, high = number(low_text.strip()), number(high_text.strip())
        except ValueError:
            raise I2IError(usage) from None
        if not dots or not (math.isfinite(low) and math.isfinite(high)):
            raise I2IError(usage)
        if low >= high:
            raise I2IError(f"--param {text!r}: the range {low_text.strip()}..{high_text.strip()} is"
                           f" {'empty' if low == high else 'reversed'}; give LO..HI with LO below HI")
        if kind == "log" and low <= 0:
            raise I2IError(f"--param {text!r}: a log range needs LO above 0 (it samples log(LO)..log(HI)); use"
                           f" float:{low_text.strip()}..{high_text.strip()} for a linear one")
        return cls(key, kind, low, high)

    def distribution(self) -> "optuna.distributions.BaseDistribution":
        """The Optuna distribution this parameter samples from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(float(self.low), float(self.high), log=self.kind == "log")

    def grid(self) -> list[Any]:
        """Every value, for the grid sampler (a float range has no grid)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise I2IError(f"--param {self.key}={self.kind}:{self.low}..{self.high}: the grid sampler takes int ranges"
                       " and choices only; list values (choice:A,B,C) or use --sampler tpe or random")

    def ends(self) -> list[Any]:
        """The values that bound what can be sampled, to check against the recipe before anything runs."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def override(self, value: Any) -> str:
        """The --set that gives the key `value`."""
        return f"{self.key}={value if isinstance(value, str) else repr(value)}"


@dataclass
class Objective:
    """A validation metric the runs log: DIRECTION.METRIC, and which way is better."""

    direction: str
    metric: str

    @classmethod
    def parse(cls, text: str) -> "Objective":
        """`AtoB.l1`, `BtoA.psnr`, `AtoB.fid` ..."""
        direction, _, metric = text.partition(".")
        if (direction not in DIRECTIONS and "to_" not in direction) or metric not in LOWER_IS_BETTER:
            raise I2IError(f"--objective {text!r} is not DIRECTION.METRIC: DIRECTION is one of"
                           f" {', '.join(DIRECTIONS)}, to_<domain> or <source>_to_<target>,"
                           f" METRIC one of {', '.join(LOWER_IS_BETTER)} (e.g. AtoB.l1)")
        return cls(direction, metric)

    def __str__(self) -> str:
        return f"{self.direction}.{self.metric}"

    @property
    def minimize(self) -> bool:
        """Whether lower values are better (the evaluation API's LOWER_IS_BETTER)."""
        return LOWER_IS_BETTER[self.metric]

    def value(self, record: dict[str, Any]) -> tuple[int, float | None] | None:
        """(step, value) of a metrics.jsonl record's validation entry (value None when not finite); None without."""
        found = record.get("validation")
        if not isinstance(found, dict):
            return None
        value = found.get(self.direction, {}).get(self.metric)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        return int(found.get("step", record.get("step", 0))), float(value) if finite else None


@dataclass
class Settings:
    """What makes a search: every worker on one folder must be started with the same."""

    recipe: str
    params: list[str]
    objective: str
    trials: int
    sampler: str
    pruner: str
    overrides: list[str]
    seed: int


# -- the reporter: validation values to the trial, and the pruner's answer back to the loop -------------------------

class TrialReporter(Callback):
    """Reports each validation value of the objective to the Optuna trial and stops the run cleanly (a checkpoint,
    outcome "stopped") when the trial should be pruned: by the pruner, or at once when the value or a loss is not
    finite (a diverged trial). Uses only what any callback may; the worker adds it to the trial's trainer."""

    name = "search"
    # after validation (0) has put its result into the record; before the finite-loss check (250), so a diverged
    # trial is known as pruned before that check ends the run with an error
    order = 240

    def __init__(self, trial: "optuna.trial.Trial", objective: Objective, beat: Callable[[], None]) -> None:
        self.trial, self.objective, self.beat = trial, objective, beat
        self.pruned: str | None = None  # why the trial was pruned
        self.pruned_step: int | None = None
        self.bad: Tensor | None = None  # on the device: a loss was not finite since the start (no sync per step)
        self.last_beat = time.monotonic()

    def on_train_start(self, context: TrainingContext) -> None:
        """A continued trial: report again what its run folder logged before the checkpoint it resumed from."""
        for record in context.folder.read_metrics():
            found = self.objective.value(record)
            if found is not None and found[1] is not None:
                self.trial.report(found[1], found[0])

    def on_step_end(self, context: TrainingContext, losses: dict[str, Tensor]) -> None:
        """Note a non-finite loss (read only where the finite-loss check reads it); keep the heartbeat."""
        if losses:
            bad = torch.stack([~torch.isfinite(v.detach().float()).all() for v in losses.values()]).any()
            self.bad = bad if self.bad is None else self.bad | bad
        check = context.due(context.recipe["train"]["log_every"]) or context.control.checkpoint_due
        if check and self.bad is not None and bool(self.bad) and self.pruned is None:
            self._prune(context, "a loss is not finite (diverged)")
        if time.monotonic() - self.last_beat > HEARTBEAT_EVERY_S:
            self.last_beat = time.monotonic()
            self.beat()

    def on_log(self, context: TrainingContext, record: dict[str, Any]) -> None:
        """Report the objective of a validation point and ask the pruner."""
        found = self.objective.value(record)
        if found is None or self.pruned is not None:
            return
        step, value = found
        if value is None:
            self._prune(context, f"{self.objective} is not finite at step {step} (diverged)")
            return
        self.trial.report(value, step)
        if self.trial.should_prune():
            self._prune(context, f"{self.objective} = {value:.4g} at step {step} is behind the other trials")

    def _prune(self, context: TrainingContext, reason: str) -> None:
        self.pruned, self.pruned_step = reason, context.step
        context.control.request_stop(f"pruned by the search: {reason}")


# -- the study ---------------------------------------------------------------------------------------------------

@dataclass
class TrialEnd:
    """How one trial this worker ran ended."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL
    value: float | None
    detail: str


@dataclass
class SearchResult:
    """What a worker did, and the search's results once every trial has ended."""

    out: Path
    trials: list[TrialEnd] = field(default_factory=list)
    ended: int = 0  # trials of the study that ended (all workers)
    running: int = 0  # trials other workers still run
    best: dict[str, Any] | None = None  # number, value, params
    best_file: Path | None = None
    compare: Path | None = None
    plot: Path | None = None


def search(recipe: Path, params: list[str], objective: str, trials: int = 20, sampler: str = "tpe",
           pruner: str = "asha", overrides: list[str] = (), out: Path | None = None, seed: int = 0,
           on_event: Callable[[str, int, str], None] | None = None,
           on_note: Callable[[str], None] | None = None) -> SearchResult:
    """Work on the search of `params` of `recipe` in `out` until the study has `trials` trials; then, if no trial
    runs elsewhere, write best.toml, the comparison page and objective.png."""
    optuna = import_optuna()
    space, goal = _check_search(params, objective, trials, sampler, pruner)
    base = _check_recipe(Path(recipe), list(overrides), space, goal)
    out = Path(out) if out is not None else Path("runs") / f"{base['run']['name']}-search"
    settings = Settings(str(Path(recipe).resolve()), list(params), str(goal), trials, sampler, pruner,
                        list(overrides), seed)
    _claim_folder(out, settings)
    every = base["callback"][VALIDATION]["every"]
    budget = min(trials, math.prod(len(p.grid()) for p in space)) if sampler == "grid" else trials
    if budget < trials and on_note:
        on_note(f"the grid has {budget} points: the search runs {budget} trials")
    study = _study(optuna, out, goal, pruner, every)
    result = SearchResult(out)
    while (trial := _next_trial(optuna, study, out, space, sampler, seed, budget, on_note)) is not None:
        if on_event:
            on_event("started", trial.number, _params_text(trial.params))
        end = _run_trial(study, trial, Path(recipe), list(overrides), space, goal, out)
        result.trials.append(end)
        if on_event:
            on_event(end.state.lower(), end.number, end.detail)
    return _finish(optuna, study, out, goal, result)


def _check_search(params: list[str], objective: str, trials: int, sampler: str,
                  pruner: str) -> tuple[list[Param], Objective]:
    """The parsed space and objective, every flag checked."""
    if not params:
        raise I2IError("nothing to search: give at least one --param KEY=SPEC, e.g. --param optim.lr=log:1e-4..1e-2")
    space = [Param.parse(text) for text in params]
    keys = [p.key for p in space]
    if len(set(keys)) != len(keys):
        raise I2IError(f"--param names a key twice: {', '.join(sorted({k for k in keys if keys.count(k) > 1}))}")
    if sampler not in SAMPLERS or pruner not in PRUNERS:
        raise I2IError(f"--sampler is one of {', '.join(SAMPLERS)} and --pruner one of {', '.join(PRUNERS)}")
    if sampler == "grid":
        for param in space:
            param.grid()
    if trials < 1:
        raise I2IError(f"--trials {trials}: give 1 or more")
    return space, Objective.parse(objective)


def _check_recipe(recipe: Path, overrides: list[str], space: list[Param], goal: Objective) -> Recipe:
    """Every end of every range resolves (an unknown key or a value of the wrong type is named now, not after
    hours), and the runs log the objective; nothing is written."""
    first = [p.override(p.ends()[0]) for p in space]
    base = load_recipe(recipe, [*overrides, *first])
    for param in space:
        for value in param.ends():
            load_recipe(recipe, [*overrides, *first, param.override(value)])
    _check_objective(base, goal)
    return base


def _check_objective(recipe: Recipe, goal: Objective) -> None:
    """The validation callback is on and can measure the objective on this recipe's data and method."""
    from i2i.engine import Trainer

    options = dict(recipe.callbacks()).get(VALIDATION)
    if options is None:
        raise I2IError(f"--objective {goal}: the runs log no validation metric, as callback.validation is off; turn"
                       f" it on: --set callback.{VALIDATION}.enabled=true --set callback.{VALIDATION}.every=N")
    # the run as built (its data and method) says what it can measure; building writes nothing
    with tempfile.TemporaryDirectory() as scratch, Trainer(recipe, Path(scratch) / "probe") as probe:
        directions = list(probe.context.method.generators())
        paired = probe.context.dataset.paired
    features = bool(options.get("inception_weights"))
    given = metric_names(directions, paired, features) if goal.direction in directions else []
    if goal.metric not in given:
        why = (f"the method translates {', '.join(directions)} only" if goal.direction not in directions
               else f"these runs measure {', '.join(given) or 'nothing'}" +
               (" (l1, psnr and ssim need paired data)" if not paired and goal.metric in ("l1", "psnr", "ssim")
                else "") + (" (fid and kid need callback.validation.inception_weights)"
                            if not features and goal.metric in ("fid", "kid") else ""))
        raise I2IError(f"--objective {goal} is never logged: {why}")


def _claim_folder(out: Path, settings: Settings) -> None:
    """Write the settings into a new search folder, or check a worker joining one was given the same."""
    wanted = asdict(settings)
    file = out / SETTINGS
    if not file.exists():
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp") as f:
            json.dump(wanted, f, indent=1, sort_keys=True)
        try:
            os.link(f.name, file)  # exclusive: of two workers starting together, one writes the settings
        except FileExistsError:
            pass
        finally:
            os.unlink(f.name)
    try:
        held = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise I2IError(f"{file} cannot be read ({exc}): pass --out DIR for a new search") from None
    differing = [key for key in wanted if held.get(key) != wanted[key]]
    if differing:
        raise I2IError(f"{out} holds a search with other settings ({', '.join(differing)} differ): start every"
                       f" worker of it with the same arguments, or pass --out DIR for a new search")


def _study(optuna, out: Path, goal: Objective, pruner: str, every: int) -> "optuna.study.Study":
    """The study in the folder's journal file (created by the first worker)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    # ASHA's first rung is the first validation point, so a poor trial stops there
    chosen = (optuna.pruners.SuccessiveHalvingPruner(min_resource=every or "auto", reduction_factor=ASHA_REDUCTION)
              if pruner == "asha" else optuna.pruners.NopPruner())
    return optuna.create_study(storage=storage, study_name=STUDY_NAME, load_if_exists=True, pruner=chosen,
                               direction="minimize" if goal.minimize else "maximize")


def _sampler(optuna, kind: str, seed: int, space: list[Param]):
    """A sampler of `kind` seeded for one trial: workers draw different values, and one worker's search repeats."""
    if kind == "grid":
        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, *args: Any, **kwargs: Any) -> None:
                """Nothing: the budget ends the search (GridSampler's study.stop() works only inside optimize)."""

        return Grid({p.key: p.grid() for p in space}, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


@contextmanager
def _budget_lock(out: Path) -> Iterator[None]:
    """One worker at a time counts the trials and starts one (so the study never exceeds its budget); a lock left
    by a killed worker is broken after optuna's grace period."""
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(out / "budget"))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "beat": time.time()}


def _owner_gone(owner: Any) -> bool:
    """Whether the worker that recorded `owner` is dead: its pid on this host, its heartbeat on another."""
    if not isinstance(owner, dict):
        return False
    if owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        return isinstance(pid, int) and not process_alive(pid)
    return time.time() - float(owner.get("beat", 0)) > HEARTBEAT_GRACE_S


def _reap(optuna, study, on_note: Callable[[str], None] | None) -> None:
    """Fail each RUNNING trial whose worker died (Optuna's journal has no heartbeat) and queue its values again,
    so a new trial continues its run folder from the newest checkpoint."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _owner_gone(trial.user_attrs.get("owner")):
            continue
        folder = trial.user_attrs.get("folder", _folder_name(trial.number))
        study._storage.set_trial_user_attr(trial._trial_id, "superseded", True)
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"folder": folder, "continues": trial.number})
        if on_note:
            owner = trial.user_attrs.get("owner", {})
            on_note(f"trial {trial.number}'s worker ({owner.get('host')}, pid {owner.get('pid')}) is gone: a new"
                    f" trial continues its run {folder}")


def _counted(trials: list) -> list:
    """The trials the budget counts: all but those failed because their worker died (a new trial continues each)."""
    return [t for t in trials if not t.user_attrs.get("superseded")]


def _next_trial(optuna, study, out: Path, space: list[Param], sampler: str, seed: int, budget: int,
                on_note: Callable[[str], None] | None):
    """The next trial this worker runs (a queued one first), or None when the study has its budget."""
    from optuna.trial import TrialState

    with _budget_lock(out):
        _reap(optuna, study, on_note)
        trials = study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if len(_counted(trials)) >= budget and not waiting:
            return None
        # the grid's order comes from the seed, so every trial's grid sampler must share it
        study.sampler = _sampler(optuna, sampler, seed if sampler == "grid" else seed * 100_003 + len(trials), space)
        trial = study.ask({p.key: p.distribution() for p in space})
        trial.set_user_attr("owner", _owner())
        if "folder" not in trial.user_attrs:
            trial.set_user_attr("folder", _folder_name(trial.number))
    return trial


def _folder_name(number: int) -> str:
    return f"trial-{number:04d}"


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _run_trial(study, trial, recipe: Path, overrides: list[str], space: list[Param], goal: Objective,
               out: Path) -> TrialEnd:
    """Train one trial in this process, tell the study how it ended, and record it in its run folder."""
    from i2i.engine import Trainer
    from optuna.trial import TrialState

    sets = [p.override(trial.params[p.key]) for p in space]
    folder = RunFolder(out / TRIALS_DIR / trial.user_attrs["folder"])
    record = {"number": trial.number, "params": trial.params, "state": "RUNNING", "objective": str(goal),
              "continues": trial.user_attrs.get("continues")}
    reporter = TrialReporter(trial, goal, lambda: trial.set_user_attr("owner", _owner()))
    state, value, detail = TrialState.FAIL, None, ""
    try:
        resolved = load_recipe(recipe, [*overrides, *sets])
        resume = bool(folder.checkpoints())
        # the reporter belongs to the search, not to the run: the trainer leaves it out of the recipe and the
        # checkpoints (best.toml reproduces the run without it)
        trainer = Trainer(resolved, folder.path, resume=resume, overwrite=not resume and folder.holds_run(),
                          on_note=lambda text: None, callbacks={reporter.name: reporter})
        folder.save_trial(record)
        try:
            trainer.run()
        except I2IError:
            if reporter.pruned is None:
                raise
        if reporter.pruned is not None:
            state, detail = TrialState.PRUNED, f"step {reporter.pruned_step}: {reporter.pruned}"
        else:
            value = _final_value(folder, goal)
            if value is None:
                raise I2IError(f"the run logged no finite {goal} (see {folder.metrics_file})")
            state, detail = TrialState.COMPLETE, f"{goal} = {value:.4g}"
    except Interrupted:
        raise  # Ctrl-C: the trial stays RUNNING, and the next worker continues it from its checkpoint
    except I2IError as exc:
        detail = str(exc)
    except Exception as exc:  # noqa: BLE001 - a trial's crash is the trial's failure; the search goes on
        detail = f"{type(exc).__name__}: {exc}"
    study_value = value if state == TrialState.COMPLETE else None
    if state == TrialState.FAIL:
        trial.set_user_attr("error", detail)
    elif state == TrialState.PRUNED:
        trial.set_user_attr("pruned", {"step": reporter.pruned_step, "reason": reporter.pruned})
    study.tell(trial, study_value, state=state)
    if folder.path.is_dir():
        folder.save_trial({**record, "state": state.name, "value": value, "detail": detail,
                           "step": reporter.pruned_step if state == TrialState.PRUNED else None})
    return TrialEnd(trial.number, state.name, value, detail)


def _final_value(folder: RunFolder, goal: Objective) -> float | None:
    """The objective at the run's last validation point (validation always measures the last step)."""
    found = [v for r in folder.read_metrics() if (v := goal.value(r)) is not None]
    return found[-1][1] if found else None


# -- results -------------------------------------------------------------------------------------------------------

def _finish(optuna, study, out: Path, goal: Objective, result: SearchResult) -> SearchResult:
    """Count the study's trials; when none runs or waits any more (this worker is the last), write the results."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    result.ended = sum(t.state.is_finished() and not t.user_attrs.get("superseded") for t in trials)
    result.running = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    if result.running == 0:
        with _budget_lock(out):  # two workers ending together write one after the other
            write_results(study, out, goal, result)
    return result


def write_results(study, out: Path, goal: Objective, result: SearchResult) -> None:
    """best.toml (a copy of the best complete trial's recipe.toml), the comparison page and objective.png."""
    from optuna.trial import TrialState

    from i2i.tools.compare import compare_runs

    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("superseded")]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = min(complete, key=lambda t: t.value if goal.minimize else -t.value)
        folder = RunFolder(out / TRIALS_DIR / best.user_attrs["folder"])
        result.best = {"number": best.number, "value": best.value, "params": best.params,
                       "run": str(folder.path)}
        result.best_file = out / BEST_FILE
        with atomic_file(result.best_file, "w") as f:
            f.write(f"# the best trial of the search in {out}: trial {best.number}, {goal} = {best.value:.6g}"
                    f" ({_params_text(best.params)}); its resolved recipe, run {folder.path}\n")
            f.write(folder.recipe_file.read_text())
    runs = [out / TRIALS_DIR / t.user_attrs["folder"] for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "folder" in t.user_attrs]
    runs = [run for run in runs if RunFolder(run).recipe_file.is_file()]
    if runs:
        result.compare = compare_runs(runs, out).html
    result.plot = plot_objective(trials, goal, out / OBJECTIVE_PLOT)


def plot_objective(trials: list, goal: Objective, path: Path) -> Path:
    """The objective per trial number: complete trials as dots, pruned ones (their last reported value) as
    crosses, the best so far as a line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from optuna.trial import TrialState

    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        complete = sorted(((t.number, t.value) for t in trials if t.state == TrialState.COMPLETE))
        pruned = [(t.number, t.intermediate_values[t.last_step]) for t in trials
                  if t.state == TrialState.PRUNED and t.last_step is not None]
        if complete:
            ax.plot(*zip(*complete), "o", color="tab:blue", label="complete")
            best, line = None, []
            for number, value in complete:
                best = value if best is None else (min(best, value) if goal.minimize else max(best, value))
                line.append((number, best))
            ax.step(*zip(*line), where="post", color="tab:green", label="best so far")
        if pruned:
            ax.plot(*zip(*pruned), "x", color="tab:red", label="pruned (last value)")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{goal} ({'lower' if goal.minimize else 'higher'} is better)")
        ax.set_title(f"{goal} per trial")
        if complete or pruned:
            ax.legend()
        with atomic_file(path, "wb") as f:
            fig.savefig(f, format="png", dpi=80)
    finally:
        plt.close(fig)
    return path
