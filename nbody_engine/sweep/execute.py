"""Running a sweep: one Dask task per run that is not done yet (a grid's runs all at once, a
search's as its study asks for them, as many at a time as the workers have threads), results
written as runs end, per-run events to the sinks, and a clean stop on cancellation or when the
workers are gone.

A stop (the ``cancel`` token, Ctrl-C or SIGTERM in the CLI, no worker alive for too long)
asks the running runs to stop and cancels the tasks; the runs that were running record
themselves ``cancelled`` (their runners are interrupted and save a checkpoint as the runner
does), those that never started stay ``pending``, and a rerun of the sweep does both."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping

from ..config.errors import InputError
from ..events import CancelToken
from ..runs.directory import lock_holder, write_json
from .cluster import Backend, SlurmBackend, SlurmOptions, backend_record, open_backend, slurm_cluster_kwargs, wait_until
from .events import ClusterReady, RunEnded, SweepEnded, SweepStarted, WorkersNotice
from .local_cluster import StartCancelled
from .provenance import sweep_record
from .results import (STATUS_CANCELLED, STATUS_FAILED, STATUS_PENDING, STATUS_RUNNING, is_done, read_status, result_row,
                      settled_record, write_results)
from .signals import SweepSignals
from .sweep_plan import Run, SweepPlan
from .task import execute_run

POLL_S = 1.0  # how often the sweep beats, asks its pruner and looks at its workers
CANCEL_POLL_S = 0.2  # how often it looks at its futures and its cancellation (Ctrl-C is answered at once)
NO_WORKER_NOTICE_S = 15.0  # no worker alive this long: the sweep says so, and why
NO_WORKER_LIMIT_S = 300.0  # no worker alive this long (and no SLURM job queued): the sweep stops
SLURM_CHECK_S = 5.0  # how often the SLURM jobs' states are read
DRAIN_S = 40.0  # how long a stopped sweep waits for its cancelled runs to record themselves
CANCELLED = "the sweep was cancelled"
INTERRUPTED = "the sweep was interrupted"


def _check_options(scheduler, slurm, client, workers, time_limit) -> None:
    if sum(x is not None for x in (scheduler, slurm, client)) > 1:
        raise InputError("give at most one of scheduler, slurm and client")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise InputError(f"'workers' must be a positive integer, not {workers!r}")
    if workers is not None and (scheduler is not None or client is not None):
        raise InputError("--workers sizes a local or SLURM cluster; an existing scheduler has its own workers")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or not time_limit > 0):
        raise InputError(f"the per-run time limit (--run-time-limit) must be a positive number of seconds, "
                         f"not {time_limit!r}")
    if slurm is not None:
        slurm_cluster_kwargs(slurm)  # the dask-jobqueue import and the options, before anything is written


def _settle_interrupted(plan: SweepPlan, run: Run, record: dict) -> dict:
    """A record left ``running`` by a sweep that died becomes ``cancelled`` on disk too."""
    settled = settled_record(plan.run_dir(run), record)
    if settled != record:
        write_json(plan.run_dir(run) / "status.json", settled)
    return settled


def _record_invocation(plan: SweepPlan, backend: dict, argv: list[str] | None) -> None:
    """Append this invocation's provenance to ``provenance.json``; the latest goes in results.json."""
    plan.provenance = sweep_record(plan.base_record, plan.grid_record, backend,
                                   plan.search.__dict__ if plan.search else None, argv)
    path = plan.root / "provenance.json"
    try:
        earlier = json.loads(path.read_text())["sweeps"]
    except (OSError, ValueError, KeyError, TypeError):
        earlier = []
    write_json(path, {"sweep": plan.name, "sweeps": [*earlier, plan.provenance]})


def run_sweep(plan: SweepPlan, *, scheduler: str | None = None, slurm: SlurmOptions | Mapping | None = None,
              workers: int | None = None, client=None, cancel: CancelToken | None = None,
              sink: Callable[[object], None] | None = None, no_worker_limit: float = NO_WORKER_LIMIT_S,
              time_limit: float | None = None, argv: list[str] | None = None) -> dict:
    """Run the runs of ``plan`` that are not done (for a search, ask its study for the rest of
    its trials); returns the results document.

    Runs on ``client`` (a ``distributed.Client``) when given, else the cluster at
    ``scheduler``, else SLURM jobs (``slurm``: :class:`SlurmOptions` or a dict of its fields;
    ``workers`` = jobs), else a ``LocalCluster`` of ``workers`` processes (default: one per
    core). ``cancel`` stops it from any thread; ``sink`` receives the events of
    :mod:`nbody_engine.sweep.events`; ``time_limit`` (s) stops any run that takes longer
    (recorded failed); ``argv`` is the command line recorded in the provenance (default
    ``sys.argv``). The document's ``stopped`` says why a sweep ended early.
    Bad input raises InputError before anything is written; failed runs are recorded."""
    _check_options(scheduler, slurm, client, workers, time_limit)
    cancel = cancel or CancelToken()
    sink = sink or (lambda _event: None)
    trials = None
    if plan.search is not None:
        from .search import Trials

        trials = Trials(plan)  # loads the study (or makes it): the runs of its trials so far join the plan
    records = {run.id: _settle_interrupted(plan, run, read_status(plan.run_dir(run))) for run in plan.runs}
    todo = [run for run in plan.runs if not is_done(plan, run, records[run.id])]
    rows = {run.id: result_row(plan, run, records[run.id]) for run in plan.runs}
    to_ask = trials.remaining if trials else 0
    _record_invocation(plan, backend_record(scheduler, slurm, workers, client, time_limit), argv)
    sink(SweepStarted(plan.name, len(plan.runs) + to_ask, plan.total or len(plan.runs) + to_ask,
                      len(plan.runs) - len(todo), len(todo) + to_ask, str(plan.root)))
    stopped = None
    if (todo or to_ask) and cancel.cancelled:
        stopped = CANCELLED
    elif todo or to_ask:
        try:
            with open_backend(plan.root, len(todo) + to_ask, scheduler=scheduler, slurm=slurm, workers=workers,
                              client=client, cancel=cancel) as backend:
                sink(ClusterReady(plan.name, backend.label))
                stopped = _Execution(plan, backend, todo, rows, cancel, sink, no_worker_limit, time_limit,
                                     trials).run()
        except StartCancelled:
            stopped = CANCELLED
    doc = write_results(plan, rows, **({"stopped": stopped} if stopped else {}))
    sink(SweepEnded(doc, stopped, str(plan.root / "results.csv")))
    return doc


class _Execution:
    """The tasks of one sweep on one backend, from submission to the last result."""

    def __init__(self, plan: SweepPlan, backend: Backend, todo: list[Run], rows: dict, cancel: CancelToken,
                 sink, no_worker_limit: float, time_limit: float | None, trials) -> None:
        self.plan, self.backend, self.todo, self.rows = plan, backend, todo, rows
        self.cancel, self.sink, self.no_worker_limit = cancel, sink, no_worker_limit
        self.time_limit, self.trials = time_limit, trials
        self.total = len(todo) + (trials.remaining if trials else 0)  # runs this execution means to end
        self.attempts = {run.id: int(read_status(plan.run_dir(run)).get("attempts") or 0) for run in todo}
        self.futures: dict = {}
        self.pending: set = set()
        self.done = 0
        self.no_worker_since: float | None = None
        self.noticed = False
        self.next_slurm_check = 0.0
        self.token = uuid.uuid4().hex[:8]
        self.signals = SweepSignals(backend.client, self.token)
        self.waiting: str | None = None  # where the runs wait while no worker is alive

    def run(self) -> str | None:
        """Submit and collect; returns why the sweep stopped early, or None."""
        try:
            self.signals.beat()
            for run in self.todo:
                if self.cancel.cancelled:  # Ctrl-C while submitting: _collect stops what was submitted
                    break
                self._submit(run)
            self._ask()
            self._write()
            # cancelled before anything was submitted (Ctrl-C while the cluster started): stopped all the same
            stopped = CANCELLED if self.cancel.cancelled else self._collect()
            if stopped:
                self._stop(stopped)
            return stopped
        finally:
            self.signals.close()

    def _write(self) -> None:
        write_results(self.plan, self.rows, **({"waiting": self.waiting} if self.waiting else {}))

    def _submit(self, run: Run) -> None:
        path = self.plan.run_dir(run) / "run.toml"
        if not path.is_file() or path.read_text() != run.toml:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(run.toml)
        self.attempts.setdefault(run.id, int(read_status(self.plan.run_dir(run)).get("attempts") or 0))
        future = self.backend.client.submit(execute_run, str(self.plan.run_dir(run)), self.plan.mode, self.token,
                                            self.time_limit, pure=False,
                                            key=f"nbody-sweep-{self.plan.name}-{run.id}-{self.token}")
        self.futures[future] = run
        self.pending.add(future)

    def _ask(self) -> None:
        """A search: ask for trials while the workers have free threads and trials are left."""
        if self.trials is None:
            return
        slots = max(1, sum(self.backend.client.nthreads().values()))
        while len(self.pending) < slots and (run := self.trials.ask()) is not None:
            self.rows[run.id] = result_row(self.plan, run, read_status(self.plan.run_dir(run)))
            self._submit(run)
            self._write()

    def _collect(self) -> str | None:
        from distributed import wait

        next_look = 0.0
        while self.pending:
            if self.cancel.cancelled:
                return CANCELLED
            if time.monotonic() >= next_look:  # scheduler calls and the runs' metrics: once a second
                next_look = time.monotonic() + POLL_S
                stopped = self._watch_workers()
                if stopped:
                    return stopped
                self.signals.beat()
                self._prune()
            try:
                done, _ = wait(list(self.pending), timeout=CANCEL_POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in done:
                self.pending.discard(future)
                self._record(future)
            self._ask()
        return None

    def _prune(self) -> None:
        """A search: stop the runs its pruner gives up on, as Stop does."""
        if self.trials is None:
            return
        for future in self.pending:
            run = self.futures[future]
            if run.id not in self.signals.stopped and self.trials.should_prune(run):
                self.signals.stop(run.id, "pruned", f"pruned by the search at epoch {self.trials.last_epoch(run)}")

    def _record(self, future) -> None:
        run = self.futures[future]
        if future.status == "finished":
            record = future.result()
        else:  # the task itself failed (e.g. the run was lost with its workers too often): record it
            try:
                exc = future.exception()
                message = f"dask: {type(exc).__name__}: {exc}".splitlines()[0]
            except Exception as err:  # noqa: BLE001 - cancelled, or anything Dask raises: record it
                message = f"dask: {type(err).__name__}"
            record = {**read_status(self.plan.run_dir(run)), "status": STATUS_FAILED, "error": message}
            write_json(self.plan.run_dir(run) / "status.json", record)
        if self.trials is not None:
            self.trials.ended(run, record)
        self.rows[run.id] = result_row(self.plan, run, record)
        self._write()
        self.done += 1
        self.sink(RunEnded(self.rows[run.id], run.describe(), self.done, self.total))

    def _notice(self, message: str) -> None:
        self.sink(WorkersNotice(self.plan.name, message))

    def _watch_workers(self) -> str | None:
        """Say when no worker is alive, and why; replace ended SLURM jobs; returns a reason to
        stop when no worker can come back."""
        now = time.monotonic()
        backend = self.backend
        if isinstance(backend, SlurmBackend) and now >= self.next_slurm_check:
            self.next_slurm_check = now + SLURM_CHECK_S
            for note in backend.replace_lost():
                self._notice(note)
            if backend.exhausted:
                return f"no worker left: {backend.lost_reason()}"
        if backend.alive():
            if self.waiting:
                self.waiting = None
                self._write()
            self.no_worker_since, self.noticed = None, False
            return None
        self.no_worker_since = self.no_worker_since or now
        waited = now - self.no_worker_since
        if waited >= NO_WORKER_NOTICE_S and not self.noticed:
            self.noticed = True
            self.waiting = backend.lost_reason()
            self._write()
            self._notice(f"no worker alive for {NO_WORKER_NOTICE_S:.0f} s: {self.waiting}; "
                         + ("it waits as long as they are queued" if backend.waiting else
                            f"the sweep stops after {self.no_worker_limit:.0f} s without one"))
        if waited >= self.no_worker_limit and not backend.waiting:  # a queued SLURM job may start any time
            return f"no worker for {waited:.0f} s: {backend.lost_reason()}"
        return None

    def _stop(self, reason: str) -> None:
        """Ask the running runs to stop, cancel the unfinished tasks, let the running runs
        record themselves, settle their rows."""
        client = self.backend.client
        unfinished = {f: run for f, run in self.futures.items() if f.status not in ("finished", "error")}
        self.signals.stop("all", STATUS_CANCELLED, INTERRUPTED)  # the runs running now, and any about to start
        client.cancel(list(unfinished))
        dirs = [self.plan.run_dir(run) for run in unfinished.values()]
        wait_until(lambda: all(lock_holder(d) is None for d in dirs), DRAIN_S, poll=0.1)
        for run in unfinished.values():
            self.rows[run.id] = result_row(self.plan, run, self._settled(run, reason))

    def _settled(self, run: Run, reason: str) -> dict:
        """The record of a run whose task was cancelled: its own if it started in this sweep
        (``running`` left by a lost worker becomes ``cancelled``), else pending."""
        run_dir = self.plan.run_dir(run)
        record = read_status(run_dir)
        if int(record.get("attempts") or 0) <= self.attempts[run.id]:
            return {**record, "status": STATUS_PENDING, "error": f"not run: {reason}"}
        if record.get("status") == STATUS_RUNNING:
            record = {**record, "status": STATUS_CANCELLED, "error": f"cancelled: {reason}"}
            write_json(run_dir / "status.json", record)
        return record
