"""Where a sweep's runs execute: a Dask client on an embedded ``LocalCluster``, an existing
scheduler, or SLURM jobs (``dask_jobqueue.SLURMCluster``), each behind a :class:`Backend`
that also watches its workers: how many are alive, and when none is, why (a SLURM job's state
and reason, the last error line of its log). On SLURM, jobs that end are replaced, up to a
limit, so the sweep keeps the number of workers it asked for."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.errors import InputError
from ..events import CancelToken
from .local_cluster import LOOPBACK, local_worker_count, start_local_cluster
from .warm import prepare_local_worker

SLURM_HINT = "pip install 'nbody-explorer[slurm]'"
SCHEDULER_TIMEOUT = "10s"
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_UNKNOWN = "UNKNOWN"  # scontrol did not answer: the job counts as alive until it does
_LIVE_JOB_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", _UNKNOWN}
_JOB_STATE_MEANING = {"TIMEOUT": "its walltime ran out", "CANCELLED": "it was cancelled (scancel)",
                      "NODE_FAIL": "its node failed", "OUT_OF_MEMORY": "it ran out of memory",
                      "PREEMPTED": "it was preempted", "FAILED": "its worker exited with an error",
                      "COMPLETED": "its worker exited"}
_LOG_ERROR = re.compile(r"(Error|error:|Killed|CANCELLED|DUE TO TIME LIMIT)")


@dataclass
class SlurmOptions:
    """``dask_jobqueue.SLURMCluster`` settings; None leaves a value to Dask's jobqueue config.

    ``interface``: the compute nodes' network interface (``ib0``; ``lo`` on one machine);
    ``extra``: extra ``#SBATCH`` options (``["--qos=low"]``); ``prologue``: shell lines run
    before the worker starts (``module load ...``, ``source .venv/bin/activate``);
    ``resubmits``: how many ended jobs the sweep replaces in all."""

    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    cores: int | None = None
    memory: str | None = None
    gpus: int = 0
    interface: str | None = None
    extra: list[str] = field(default_factory=list)
    prologue: list[str] = field(default_factory=list)
    resubmits: int = 3


def import_jobqueue():
    """``dask_jobqueue``, imported without its side effect on Ctrl-C (its import replaces the
    SIGINT handler with one that exits 0); raises InputError where it is not installed."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError(f"--slurm needs the dask-jobqueue package: {SLURM_HINT}") from None
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
    return dask_jobqueue


def _slurm_options(opts: SlurmOptions | Mapping) -> SlurmOptions:
    if isinstance(opts, SlurmOptions):
        return opts
    unknown = set(opts) - set(SlurmOptions.__dataclass_fields__)
    if unknown:
        raise InputError(f"unknown SLURM option '{min(unknown)}'; the options are "
                         + ", ".join(SlurmOptions.__dataclass_fields__))
    return SlurmOptions(**opts)


def _check_counts(opts: SlurmOptions) -> None:
    for flag, value, least in (("--slurm-cores", opts.cores, 1), ("--slurm-gpus", opts.gpus, 0),
                               ("--slurm-resubmits", opts.resubmits, 0)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise InputError(f"{flag} must be a {'positive' if least else 'non-negative'} integer, not {value!r}")


def interface_address(name: str) -> str:
    """The IP address of this machine's network interface ``name`` (IPv4 first), for the
    servers the sweep starts to listen on; raises InputError for an unknown interface."""
    import socket

    import psutil

    addresses = psutil.net_if_addrs()
    if name not in addresses:
        raise InputError(f"--slurm-interface {name!r} is not a network interface of this machine; "
                         f"it has {', '.join(sorted(addresses))}")
    for family in (socket.AF_INET, socket.AF_INET6):
        for address in addresses[name]:
            if address.family == family:
                return address.address if family == socket.AF_INET else f"[{address.address.split('%')[0]}]"
    raise InputError(f"--slurm-interface {name!r} has no IP address; choose one that has (ib0, eth0, lo)")


def slurm_cluster_kwargs(opts: SlurmOptions | Mapping, log_directory: str | Path | None = None) -> dict:
    """Checked keyword arguments for ``SLURMCluster`` (raises InputError)."""
    opts = _slurm_options(opts)
    import_jobqueue()
    import dask
    from dask.utils import parse_bytes

    if opts.walltime is not None and not _WALLTIME.match(opts.walltime):
        raise InputError(f"--slurm-walltime must look like HH:MM:SS (or D-HH:MM:SS, MM, ...), not {opts.walltime!r}")
    _check_counts(opts)
    if opts.memory is not None:
        try:
            parse_bytes(opts.memory)
        except (ValueError, TypeError):
            raise InputError(f"--slurm-memory must be an amount like 4GB or 500MiB, not {opts.memory!r}") from None
    for flag, value, key in (("--slurm-cores", opts.cores, "cores"), ("--slurm-memory", opts.memory, "memory")):
        if value is None and dask.config.get(f"jobqueue.slurm.{key}", None) is None:
            raise InputError(f"--slurm needs {flag} (or jobqueue.slurm.{key} in Dask's configuration)")
    kwargs: dict[str, Any] = {"processes": 1, "python": sys.executable,
                              "scheduler_options": _scheduler_options(opts.interface)}
    for key in ("queue", "account", "walltime", "cores", "memory", "interface"):
        if getattr(opts, key) is not None:
            kwargs[key] = getattr(opts, key)
    extra = [f"--gres=gpu:{opts.gpus}"] * bool(opts.gpus) + [line.strip() for line in opts.extra]
    if extra:
        kwargs["job_extra_directives"] = extra
    # the worker job stops at once, with the reason in its log, where the project cannot be imported
    kwargs["job_script_prologue"] = [*opts.prologue, f"{sys.executable} -c 'import nbody_engine' || exit 3"]
    if log_directory is not None:
        kwargs["log_directory"] = str(log_directory)
    return kwargs


def _scheduler_options(interface: str | None) -> dict:
    """Where the SLURM sweep's scheduler and its dashboard listen: on ``interface`` (default:
    Dask's ``jobqueue.slurm.interface``), else on loopback only, never on every interface (the
    dashboard is an unauthenticated page)."""
    import dask

    interface = interface or dask.config.get("jobqueue.slurm.interface", None)
    if interface is None:
        return {"host": LOOPBACK, "dashboard_address": f"{LOOPBACK}:0"}
    return {"interface": interface, "dashboard_address": f"{interface_address(interface)}:0"}


def backend_record(scheduler: str | None, slurm, workers: int | None, client, time_limit: float | None) -> dict:
    """The backend and its options as provenance records them."""
    if client is not None:
        kind, options = "client", {"scheduler": getattr(client, "scheduler", None) and client.scheduler.address}
    elif scheduler is not None:
        kind, options = "scheduler", {"address": scheduler}
    elif slurm is not None:
        kind, options = "slurm", {**vars(_slurm_options(slurm)), "jobs": workers or 1}
    else:
        kind, options = "local", {"workers": workers}
    return {"kind": kind, **options, "run_time_limit_s": time_limit}


class Backend:
    """A Dask client and its workers. ``label`` says what it is; ``lost_reason`` is called
    while no worker is alive and says why; ``replace_lost`` (SLURM) resubmits ended jobs."""

    def __init__(self, client, label: str) -> None:
        self.client = client
        self.label = label
        self.last_workers: set[str] = set()

    def alive(self) -> int:
        workers = set(self.client.nthreads())
        if workers:
            self.last_workers = workers
        return len(workers)

    def lost_reason(self) -> str:
        gone = f" (the last, {', '.join(sorted(self.last_workers))}, left)" if self.last_workers else ""
        return f"no Dask worker is connected to the scheduler{gone}"

    def replace_lost(self) -> list[str]:
        return []

    @property
    def waiting(self) -> bool:
        return False


def job_state(job_id: str) -> tuple[str, str]:
    """(JobState, Reason) of a SLURM job from ``scontrol``; ("", "") once SLURM forgot it, and
    ("UNKNOWN", why) when scontrol could not answer (a busy controller: ask again later)."""
    try:
        done = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return _UNKNOWN, str(err)
    if done.returncode != 0:
        return ("", "") if "Invalid job id" in done.stderr else (_UNKNOWN, done.stderr.strip())
    fields = dict(item.split("=", 1) for item in done.stdout.split() if "=" in item)
    return fields.get("JobState", ""), fields.get("Reason", "")


class SlurmBackend(Backend):
    """Worker jobs of a ``SLURMCluster``: an ended job is explained from its state and its log
    and replaced, ``resubmits`` times in all."""

    def __init__(self, client, cluster, jobs: int, resubmits: int, log_directory: Path) -> None:
        super().__init__(client, f"{jobs} SLURM job(s); dashboard {cluster.dashboard_link}")
        self.cluster = cluster
        self.jobs = jobs
        self.resubmits_left = resubmits
        self.log_directory = log_directory
        self.ended: dict[str, str] = {}  # job id -> why it ended, in order
        self.submitted = 0  # replacement jobs
        self.live: dict[str, tuple[str, str]] = {}  # job id -> (state, reason) of the jobs not ended

    def _worker_log_line(self, job_id: str) -> str:
        for path in sorted(self.log_directory.glob(f"*-{job_id}.err")):
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if _LOG_ERROR.search(ln)]
            if lines:
                return lines[-1]
        return ""

    def _why_ended(self, job_id: str, state: str, reason: str) -> str:
        meaning = _JOB_STATE_MEANING.get(state.split()[0] if state else "", "SLURM no longer knows it")
        said = f"{state or 'gone'}" + (f", {reason}" if reason not in ("", "None") else "")
        text = f"SLURM job {job_id} ended ({said}): {meaning}"
        line = self._worker_log_line(job_id)
        return text + (f"; its log says: {line}" if line else "")

    def replace_lost(self) -> list[str]:
        """Explain the jobs that ended since the last call and resubmit as many (while allowed)."""
        notes = []
        for name, job in list(self.cluster.workers.items()):
            job_id = getattr(job, "job_id", None)
            if not job_id or job_id in self.ended:
                continue
            state, reason = job_state(job_id)
            self.live.pop(job_id, None)
            if state in _LIVE_JOB_STATES:
                self.live[job_id] = (state, reason)
                continue
            self.cluster.worker_spec.pop(name, None)
            self.ended[job_id] = self._why_ended(job_id, state, reason)
            notes.append(self.ended[job_id])
        missing = self.jobs - len(self.cluster.worker_spec)
        if notes and missing > 0:
            n = min(missing, self.resubmits_left)
            self.resubmits_left -= n
            self._resubmit(n)
            notes.append(f"{n} replacement job(s) submitted; {self.resubmits_left} resubmission(s) left"
                         if n else "no resubmission left (--slurm-resubmits)")
        return notes

    def _resubmit(self, n: int) -> None:
        """Add ``n`` job specs under fresh names (SpecCluster would reuse the name of an ended
        job that it still lists, and start nothing) and let the cluster start them."""
        for _ in range(n):
            self.submitted += 1
            self.cluster.worker_spec[f"replacement-{self.submitted}"] = self.cluster.new_spec
        self.cluster.scale(jobs=len(self.cluster.worker_spec))

    @property
    def waiting(self) -> bool:
        """Whether worker jobs are queued (or SLURM cannot say): no worker yet is no loss then."""
        return any(state in ("PENDING", _UNKNOWN) for state, _ in self.live.values())

    def lost_reason(self) -> str:
        """Where the runs wait: jobs SLURM has not started, jobs started whose worker has not
        connected, jobs whose state scontrol cannot tell, or the last job that ended."""
        said = {"PENDING": "SLURM has not started the worker job(s) yet",
                _UNKNOWN: "scontrol cannot say how the worker job(s) are"}
        for state, text in said.items():
            jobs = [f"{job_id} {state.lower()} ({reason or 'no reason given'})"
                    for job_id, (s, reason) in self.live.items() if s == state]
            if jobs:
                return f"{text}: {', '.join(jobs)}"
        if self.live:
            return (f"SLURM job(s) {', '.join(self.live)} started but no Dask worker of theirs has connected yet "
                    f"(their logs: {self.log_directory})")
        return list(self.ended.values())[-1] if self.ended else super().lost_reason()

    @property
    def exhausted(self) -> bool:
        """No job left running or queued, and none may be submitted."""
        return self.resubmits_left == 0 and not self.cluster.worker_spec


@contextmanager
def open_backend(root: Path, todo: int, *, scheduler: str | None = None, slurm: SlurmOptions | Mapping | None = None,
                 workers: int | None = None, client=None, cancel: CancelToken | None = None) -> Iterator[Backend]:
    """The sweep's backend; what it starts, it closes. A ``cancel`` while a local cluster
    starts raises :class:`StartCancelled` at once."""
    if client is not None:
        yield Backend(client, "the given Dask client")
    elif scheduler is not None:
        with _scheduler_backend(scheduler) as backend:
            yield backend
    elif slurm is not None:
        with _slurm_backend(root, _slurm_options(slurm), workers or 1) as backend:
            yield backend
    else:
        with _local_backend(workers or max(1, min(local_worker_count(), todo)), cancel or CancelToken()) as backend:
            yield backend


@contextmanager
def _scheduler_backend(address: str) -> Iterator[Backend]:
    from distributed import Client

    try:
        client = Client(address, timeout=SCHEDULER_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot connect to the Dask scheduler at {address!r}: {first}") from None
    try:
        _warm_workers(client)
        n = len(client.nthreads())
        yield Backend(client, f"scheduler {address} with {n} worker(s)"
                      + ("" if n else f"; waiting for workers (start them with: dask worker {address})"))
    finally:
        client.close()


@contextmanager
def _slurm_backend(root: Path, opts: SlurmOptions, jobs: int) -> Iterator[Backend]:
    from distributed import Client

    logs = root / "slurm-logs"
    kwargs = slurm_cluster_kwargs(opts, logs)
    cluster = import_jobqueue().SLURMCluster(**kwargs)
    try:
        cluster.scale(jobs=jobs)
        client = Client(cluster)
        try:
            _warm_workers(client)
            yield SlurmBackend(client, cluster, jobs, opts.resubmits, logs)
        finally:
            client.close()
    finally:
        cluster.close()


@contextmanager
def _local_backend(n: int, cancel: CancelToken) -> Iterator[Backend]:
    from distributed import Client

    cluster = start_local_cluster(n, cancel)
    try:
        client = Client(cluster)
        try:
            client.run(prepare_local_worker)
            _warm_workers(client)
            yield Backend(client, f"local cluster of {n} worker(s); dashboard {cluster.dashboard_link}")
        finally:
            client.close()
    finally:
        cluster.close()


def _warm_workers(client) -> None:
    """Every worker, now and later, starts its warm zygote (:mod:`.warm`) at once."""
    from .warm_plugin import WarmRunsPlugin

    client.register_plugin(WarmRunsPlugin(), name=WarmRunsPlugin.name)


def wait_until(predicate, timeout: float, poll: float = 0.5) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True
