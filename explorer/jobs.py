"""Background jobs of one browser session: the engine runs in a daemon thread and reports
through its events into a bounded queue that the session drains on its own event loop.

The worker never touches Panel, HoloViews or Bokeh objects. A process-wide semaphore caps the
number of concurrent jobs so one server cannot be swamped.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from nbody_engine.config.errors import InputError, NonFiniteStateError, RunCancelled, TrainingStalled
from nbody_engine.config.loading import load_configs, parse_toml
from nbody_engine.events import CancelToken, Reporter, TrajectoryChunk
from nbody_engine.jobs.phases import run_phases
from nbody_engine.jobs.simulate import compare_with_analytic

MAX_JOBS = int(os.environ.get("NBODY_EXPLORER_MAX_JOBS", "2"))
QUEUE_SIZE = 20_000
_SLOTS = threading.BoundedSemaphore(MAX_JOBS)


def _warm_up() -> None:
    """The engine's one-time costs: torch imports its compiler front end (torch._dynamo, seconds:
    docs/BENCHMARKS.md) when the first optimizer is made, and the reports import matplotlib."""
    import torch

    from nbody_engine.reporting import plots  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


@functools.cache
def warm_up() -> threading.Thread:
    """Pay the engine's one-time costs once per process, in the background, so that the first
    run a user starts does not (called when a page has loaded)."""
    thread = threading.Thread(target=_warm_up, name="nbody-warm-up", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class JobDone:
    """The last item a job puts on its queue. ``error`` is one line, or None."""

    kind: str
    results: dict
    error: str | None = None
    cancelled: bool = False


class QueueSink:
    """Puts events on a bounded queue; when it is full, trajectory chunks are dropped (the
    plots decimate anyway) while every other event waits for room."""

    def __init__(self, q: queue.Queue) -> None:
        self.queue = q

    def __call__(self, event) -> None:
        if isinstance(event, TrajectoryChunk):
            try:
                self.queue.put_nowait(event)
            except queue.Full:
                pass
        else:
            self.queue.put(event)


class Job:
    """One run of ``kind`` ('train', 'simulate' or 'both') from TOML text, in a thread; or,
    given ``work``, that function of the job's Reporter (its result is the job's results)."""

    def __init__(self, kind: str, toml_text: str, compare: bool = True,
                 work: Callable[[Reporter], dict] | None = None) -> None:
        self.kind = kind
        self.work = work
        self.toml_text = toml_text
        self.compare = compare
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.cancel = CancelToken()
        self.thread = threading.Thread(target=self._work, name=f"nbody-{kind}", daemon=True)

    @staticmethod
    def slot_free() -> bool:
        """Take a job slot if one is free (released when the job ends)."""
        return _SLOTS.acquire(blocking=False)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self.cancel.cancel()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def poll(self, limit: int = 50_000) -> list:
        """Everything the job reported since the last poll."""
        items = []
        try:
            while len(items) < limit:
                items.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        return items

    def _work(self) -> None:
        results: dict = {}
        error, cancelled = None, False
        try:
            reporter = Reporter([QueueSink(self.queue)], self.cancel)
            if self.work is not None:
                results = self.work(reporter)
                return
            if self.kind == "evaluate":
                results = {"evaluate": _evaluate(self.toml_text, reporter)}
                return
            configs = _configs_from_text(self.kind, self.toml_text)
            results = run_phases(configs, reporter)
            sim_cfg = configs.get("simulate")
            if self.compare and sim_cfg is not None and sim_cfg.integrator_mode != "analytic":
                # the live simulation plots keep the learned run; the comparison view shows both
                quiet = Reporter([_without_trajectories(QueueSink(self.queue))], self.cancel)
                results["analytic"] = compare_with_analytic(sim_cfg, quiet)
        except RunCancelled:
            cancelled = True
        except KeyboardInterrupt:
            cancelled = True
        except (InputError, NonFiniteStateError, TrainingStalled) as err:
            error = str(err)
        except Exception as err:  # a failing job must leave the server healthy
            # the page gets no exception text: it may quote a file the server read
            error = f"the job failed with an unexpected {type(err).__name__}; the server's log has the traceback"
            traceback.print_exc()
        finally:
            _SLOTS.release()
            self.queue.put(JobDone(self.kind, results, error, cancelled))


def _without_trajectories(sink):
    def forward(event) -> None:
        if not isinstance(event, TrajectoryChunk):
            sink(event)
    return forward


def _evaluate(toml_text: str, reporter: Reporter) -> dict:
    """``nbody-runner evaluate`` on the simulate settings; its trajectories stay out of the
    live plots (many short runs), the result carries the table and the Pareto plot."""
    from nbody_engine.evaluate import run_evaluation

    cfg = _configs_from_text("evaluate", toml_text)["simulate"]
    return run_evaluation(cfg, Reporter([_without_trajectories(QueueSink(reporter.sinks[0].queue))], reporter.cancel))


def _configs_from_text(kind: str, toml_text: str):
    """The configs of a job, through the very loader the CLI uses."""
    source = "the dashboard's settings"
    return load_configs(kind, parse_toml(toml_text, source), source=source)
