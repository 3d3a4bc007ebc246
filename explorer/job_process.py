"""The child process of a dashboard job: the engine's work runs here, away from the server's
event loop and its GIL, and reports through a ``multiprocessing`` queue that the job's
supervising thread (explorer/jobs.py) forwards to the session.

Children are forked from ``multiprocessing``'s fork server, which imports :data:`PRELOAD` once
(torch, its compiler front end that the first optimizer imports, the engine, matplotlib), so a
job starts in a fraction of a second and pays none of those one-time costs itself.

A job never outlives its server: however the server ends (SIGKILL included), the job sees it
(``multiprocessing.parent_process()`` is the server, even through the fork server) and stops as
Stop would, keeping its checkpoint; before, it trained on, unseen, to its last epoch.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import traceback
from dataclasses import dataclass

from nbody_engine.config.errors import InputError, NonFiniteStateError, RunCancelled, TrainingStalled
from nbody_engine.config.loading import load_configs, parse_toml
from nbody_engine.events import CancelToken, Reporter, TrajectoryChunk
from nbody_engine.jobs.phases import run_phases
from nbody_engine.jobs.simulate import baseline_mode, compare_with_baseline

# A job gives way to the server and the browser when they need the CPU (the page stays quick to
# answer on a busy machine) and takes all of it otherwise: nice 5 weighs a third of nice 0.
NICENESS = 5
PRELOAD = ["torch", "torch._dynamo", "nbody_engine.jobs.phases", "nbody_engine.evaluate",
           "nbody_engine.reporting.plots", "explorer.job_process"]


@dataclass(frozen=True)
class JobDone:
    """The last item a job puts on its queue. ``error`` is one line, or None."""

    kind: str
    results: dict
    error: str | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class JobRequest:
    """What a child needs to run a job as the server would have: its kind, the TOML text, the run
    folder (None: the TOML's), whether a simulation is compared with its classical baseline,
    and the starting process's working directory and environment (the fork server's may differ)."""

    kind: str
    toml_text: str
    save_name: str | None
    compare: bool
    cwd: str
    environ: dict


class QueueSink:
    """Puts events on a bounded queue; when it is full, trajectory chunks are dropped (the
    plots decimate anyway) while every other event waits for room."""

    def __init__(self, q) -> None:
        self.queue = q

    def __call__(self, event) -> None:
        if isinstance(event, TrajectoryChunk):
            try:
                self.queue.put_nowait(event)
            except queue.Full:
                pass
        else:
            self.queue.put(event)


def child_main(request: JobRequest, events, cancel_event) -> None:
    """The child's whole life: run the job, put its events and then its JobDone on ``events``."""
    os.nice(NICENESS)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.environ)
    cancel = CancelToken(cancel_event)
    threading.Thread(target=stop_when_orphaned, args=(cancel,), name="nbody-orphan-watch", daemon=True).start()
    reporter = Reporter([QueueSink(events)], cancel)
    events.put(run_reporting_the_end(request.kind, lambda: run_job(request, reporter)))


def stop_when_orphaned(cancel: CancelToken) -> None:
    """Cancel the job once the server that started it has ended."""
    multiprocessing.parent_process().join()
    cancel.cancel()


def run_reporting_the_end(kind: str, work) -> JobDone:
    """``work()``'s results as a JobDone, or how it ended: stopped, or a one-line error."""
    try:
        return JobDone(kind, work())
    except (RunCancelled, KeyboardInterrupt):
        return JobDone(kind, {}, cancelled=True)
    except (InputError, NonFiniteStateError, TrainingStalled) as err:
        return JobDone(kind, {}, str(err))
    except Exception as err:  # a failing job must leave the server healthy
        # the page gets no exception text: it may quote a file the server read
        traceback.print_exc()
        return JobDone(kind, {}, f"the job failed with an unexpected {type(err).__name__}; "
                                 "the server's log has the traceback")


def run_job(request: JobRequest, reporter: Reporter) -> dict:
    """A train, simulate, both or evaluate job from the dashboard's TOML, through the CLI's loader."""
    configs = configs_from_text(request.kind, request.toml_text, request.save_name)
    if request.kind == "evaluate":
        from nbody_engine.evaluate import run_evaluation

        # many short runs: their trajectories stay out of the live plots
        return {"evaluate": run_evaluation(configs["simulate"], reporter.filtered(_not_a_trajectory))}
    results = run_phases(configs, reporter)
    sim_cfg = configs.get("simulate")
    if request.compare and sim_cfg is not None and baseline_mode(sim_cfg.integrator_mode):
        # the live simulation plots keep the learned run; the comparison view shows both
        results["baseline"] = compare_with_baseline(sim_cfg, reporter.filtered(_not_a_trajectory))
    return results


def _not_a_trajectory(event) -> bool:
    return not isinstance(event, TrajectoryChunk)


def configs_from_text(kind: str, toml_text: str, save_name: str | None = None):
    """The configs of a job, through the very loader the CLI uses (``save_name`` as a
    ``--save-name`` flag would give it)."""
    source = "the dashboard's settings"
    flags = {"save_name": save_name} if save_name else {}
    return load_configs(kind, parse_toml(toml_text, source), flags, source=source)
