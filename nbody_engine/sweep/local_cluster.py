"""The embedded local cluster of a sweep: ``n`` Dask worker processes on this machine, every
server on loopback, started so that a Ctrl-C during the start ends it at once."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from contextlib import suppress

from ..events import CancelToken

LOOPBACK = "127.0.0.1"
CANCEL_POLL_S = 0.1  # how often a starting local cluster looks at the sweep's cancellation
DASK_WORKER_PROCESS = "Dask Worker process"  # how Dask's nannies name their workers' processes


class StartCancelled(Exception):
    """The sweep was cancelled while its local cluster was starting (what had started is gone)."""


def local_worker_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def start_local_cluster(n: int, cancel: CancelToken):
    """A ``LocalCluster`` of ``n`` worker processes, every server on loopback (the scheduler, the
    workers and the dashboards). It starts in a thread of its own: Dask cannot close a worker
    that is still starting (a Ctrl-C then waited 4-10 s), so a ``cancel`` meanwhile kills the
    worker processes started since, which ends the start at once, and raises StartCancelled."""
    from distributed import LocalCluster

    started: dict = {}
    before = set(multiprocessing.active_children())

    def start() -> None:
        try:
            started["cluster"] = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host=LOOPBACK,
                                              dashboard_address=f"{LOOPBACK}:0", silence_logs=logging.ERROR)
        except Exception as err:  # noqa: BLE001 - raised again in the caller's thread
            started["error"] = err

    starter = threading.Thread(target=start, name="local-cluster-start", daemon=True)
    starter.start()
    while starter.is_alive() and not cancel.cancelled:
        starter.join(CANCEL_POLL_S)
    if starter.is_alive():
        _kill_processes(p for p in set(multiprocessing.active_children()) - before
                        if p.name.startswith(DASK_WORKER_PROCESS))  # not a dashboard job started meanwhile
        starter.join()
    if "cluster" in started and cancel.cancelled:
        started["cluster"].close()
    if cancel.cancelled:
        raise StartCancelled
    if "error" in started:
        raise started["error"]
    return started["cluster"]


def _kill_processes(processes) -> None:
    """SIGKILL ``processes`` (multiprocessing's) and whatever they started."""
    import psutil

    for proc in processes:
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for child in family:
            with suppress(psutil.NoSuchProcess):
                child.kill()
        proc.kill()
