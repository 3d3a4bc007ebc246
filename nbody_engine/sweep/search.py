"""Searches: Optuna asks for points, Dask runs them, Optuna is told how each run did.

The sweep process owns the study (ask-and-tell): nothing of Optuna runs on the workers, and a
trial's run is an ordinary run of the sweep, submitted to Dask like a grid point, on every
backend. The study lives in the sweep's folder (``study.journal``, Optuna's journal file
storage, safe on shared filesystems), so running the same search again continues it: its
trials so far stay, the ones a killed sweep left running are redone, and it asks for more
until it holds ``trials``. A running trial reports the chosen per-epoch metric of its
``metrics.jsonl`` to the study's pruner; a trial the pruner gives up on is stopped as Stop
does and recorded ``pruned``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.errors import InputError
from .results import STATUS_OK, STATUS_PRUNED, read_status

if TYPE_CHECKING:
    from .grid import Axis
    from .plan import Run, SweepPlan

STUDY_FILE = "study.journal"
OPTUNA_HINT = "pip install 'optuna>=4.0'"


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise InputError(f"a search needs the optuna package: {OPTUNA_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distribution(axis: Axis):
    """The Optuna distribution of a swept key: its range, or its listed values as choices."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if axis.range is None:
        return CategoricalDistribution([_choice(v) for v in axis.values])
    low, high, log, step = axis.range.low, axis.range.high, axis.range.log, axis.range.step
    if axis.range.integer:
        return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    return FloatDistribution(float(low), float(high), log=log, step=step)


def _choice(value: Any) -> Any:
    """Optuna's choices are scalars: a list value (``hidden_dims``) goes in as its JSON text."""
    return json.dumps(value) if isinstance(value, list) else value


def _value(axis: Axis, param: Any) -> Any:
    if axis.range is None and isinstance(param, str) and any(isinstance(v, list) for v in axis.values):
        return json.loads(param)
    return param


def open_study(plan: SweepPlan):
    """The plan's study, created in its folder or loaded from it."""
    optuna = import_optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    opts = plan.search
    plan.root.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(plan.root / STUDY_FILE)))
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=2),
              "halving": optuna.pruners.SuccessiveHalvingPruner(),
              "none": optuna.pruners.NopPruner()}[opts.pruner]
    study = optuna.create_study(storage=storage, pruner=pruner, study_name=plan.name, direction=opts.direction,
                                load_if_exists=True)
    # seeded by the sweep's seed, moved on by how many trials the study holds: a rerun that
    # continues it draws new points (the same seed would repeat the first ones), reproducibly
    seed = (plan.seed + 7919 * len(study.get_trials(deepcopy=False))) % 2**32
    study.sampler = (optuna.samplers.TPESampler(seed=seed) if opts.sampler == "tpe"
                     else optuna.samplers.RandomSampler(seed=seed))
    _check_same_search(plan, study)
    return study


def _signature(plan: SweepPlan) -> dict:
    """What a study's trials depend on: a rerun that changes any of it is another search."""
    return {"base config": plan.base_record.get("sha1"), "mode": plan.mode, "seed": plan.seed,
            "space": {a.column: a.describe() for a in plan.axes}, "metric": plan.search.metric,
            "direction": plan.search.direction}


def _check_same_search(plan: SweepPlan, study) -> None:
    """A study continues only the search it began: same base config, mode, space and metric."""
    signature = _signature(plan)
    earlier = study.user_attrs.get("search")
    if earlier is None:
        study.set_user_attr("search", signature)
    elif earlier != signature:
        changed = ", ".join(k for k in signature if signature[k] != earlier.get(k))
        raise InputError(f"search '{plan.name}' in '{plan.root}' was started with a different {changed}; "
                         "run it under another --name to start a new search")


class Trials:
    """The search's side of the execution: which run each trial is, what to ask next, what to
    tell, and the pruning reports of the runs in flight."""

    def __init__(self, plan: SweepPlan) -> None:
        self.plan = plan
        self.study = open_study(plan)
        self.distributions = {a.column: distribution(a) for a in plan.axes}
        self.live: dict[str, Any] = {}  # run id -> its Trial while it runs
        self.reported: dict[str, int] = {}  # run id -> metrics.jsonl lines reported
        self.epochs: dict[str, int] = {}  # run id -> the last epoch reported
        self.twins: dict[str, list] = {}  # run id -> later trials that drew the same point while it ran
        self._recover()

    def _recover(self) -> None:
        """The runs of the trials so far into the plan; a trial left running by a killed sweep
        is told from its run's record if it ended, else failed and its point asked again (the
        failed one is then not counted: ``redone`` in the study's attributes)."""
        from optuna.trial import TrialState

        for trial in self.study.get_trials(deepcopy=False):
            if trial.state == TrialState.WAITING or set(trial.params) != set(self.distributions):
                continue  # enqueued, not asked yet
            if "refused" in trial.user_attrs:
                continue  # a point that broke a cross-key rule: it has no run
            run = self.plan.make_run({a.column: _value(a, trial.params[a.column]) for a in self.plan.axes})
            if trial.state == TrialState.RUNNING:
                record = read_status(self.plan.run_dir(run))
                if record.get("status") in (STATUS_OK, STATUS_PRUNED):
                    self.tell(trial.number, record)
                else:
                    self.study.tell(trial.number, state=TrialState.FAIL)
                    self.study.set_user_attr("redone", [*self.study.user_attrs.get("redone", []), trial.number])
                    self.study.enqueue_trial(trial.params, skip_if_exists=False)
                    continue
            self.plan.add_run(run)

    @property
    def remaining(self) -> int:
        """How many more trials to ask for: ``trials`` less those finished (not counting the
        ones redone) and those running now."""
        from optuna.trial import TrialState

        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        redone = len(self.study.user_attrs.get("redone", []))
        done = len(self.study.get_trials(deepcopy=False, states=finished)) - redone
        waiting = len(self.live) + sum(len(twins) for twins in self.twins.values())
        return max(0, self.plan.search.trials - done - waiting)

    def ask(self) -> Run | None:
        """The next trial's run (None once the study holds ``trials``). A point that breaks a
        cross-key rule is a failed trial; a point drawn again is told its run's result (or
        waits for it, if it is running) instead of running twice."""
        from optuna.trial import TrialState

        while self.remaining > 0:
            trial = self.study.ask(self.distributions)
            values = {a.column: _value(a, trial.params[a.column]) for a in self.plan.axes}
            try:
                run = self.plan.make_run(values)
            except InputError as err:
                trial.set_user_attr("refused", str(err))
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr("run_id", run.id)
            record = read_status(self.plan.run_dir(run))
            if run.id in self.live:
                self.twins.setdefault(run.id, []).append(trial)
            elif any(r.id == run.id for r in self.plan.runs) and record.get("status") in (STATUS_OK, STATUS_PRUNED):
                self.tell(trial, record)
            else:
                self.live[run.id] = trial
                self.plan.add_run(run)
                return run
        return None

    def tell(self, trial, record: dict) -> None:
        """Tell the study how the trial's run ended."""
        from optuna.trial import TrialState

        value = record.get(self.plan.search.metric)
        if record.get("status") == STATUS_PRUNED:
            self.study.tell(trial, state=TrialState.PRUNED)
        elif record.get("status") == STATUS_OK and isinstance(value, (int, float)) and math.isfinite(value):
            self.study.tell(trial, float(value))
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def ended(self, run: Run, record: dict) -> None:
        trial = self.live.pop(run.id, None)
        for told in ([trial] if trial is not None else []) + self.twins.pop(run.id, []):
            self.tell(told, record)

    def last_epoch(self, run: Run) -> int | None:
        return self.epochs.get(run.id)

    def should_prune(self, run: Run) -> bool:
        """Report the run's new epochs to the pruner; whether it says to stop the run."""
        trial = self.live.get(run.id)
        if trial is None or self.plan.search.pruner == "none":
            return False
        path = Path(self.plan.run_dir(run)) / "data" / run.id / "metrics.jsonl"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return False
        done = self.reported.get(run.id, 0)
        complete = [ln for ln in lines[done:] if ln.endswith("}")]  # a line being written waits
        for line in complete:
            record = json.loads(line)
            value = record.get(self.plan.search.prune_on)
            epoch = int(record.get("epoch", done))
            if isinstance(value, (int, float)) and math.isfinite(value):
                trial.report(float(value), epoch)
                self.epochs[run.id] = epoch
            done += 1
        self.reported[run.id] = done
        return bool(complete) and trial.should_prune()
