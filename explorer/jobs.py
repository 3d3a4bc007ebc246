"""Background jobs of one browser session: the engine runs in a daemon thread and reports
through its events into a bounded queue that the session drains on its own event loop.

The worker never touches Panel, HoloViews or Bokeh objects. A process-wide semaphore caps the
number of concurrent jobs so one server cannot be swamped.
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nbody_engine.config.errors import InputError, NonFiniteStateError, RunCancelled, TrainingStalled
from nbody_engine.config.loading import load_configs, parse_toml
from nbody_engine.events import CancelToken, Reporter, TrajectoryChunk
from nbody_engine.jobs.phases import run_phases
from nbody_engine.jobs.simulate import compare_with_analytic
from nbody_engine.runs.directory import DATA_DIR

MAX_JOBS = int(os.environ.get("NBODY_EXPLORER_MAX_JOBS", "2"))
QUEUE_SIZE = 20_000
POLL_LIMIT = 2_000  # events taken per drain: bounded work on the session's loop, the rest waits
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


class JobSlot:
    """One of the server's job slots (at most MAX_JOBS jobs run at once), held by a context that
    always gives it back: ``with JobSlot() as slot:`` takes one if one is free (``slot.taken``),
    and :meth:`start` hands it to a job, which gives it back when its thread ends. A slot not
    handed over, because the block raised or returned first, is given back on leaving."""

    def __init__(self) -> None:
        self.taken = False
        self._handed = False

    def __enter__(self) -> JobSlot:
        self.taken = _SLOTS.acquire(blocking=False)
        return self

    def start(self, job: Job) -> None:
        """Start ``job`` in this slot (which must be taken)."""
        if not self.taken or self._handed:
            raise RuntimeError("a job slot starts one job, and only once taken")
        job.start(on_end=_SLOTS.release)
        self._handed = True

    def __exit__(self, *exc) -> None:
        if self.taken and not self._handed:
            _SLOTS.release()


class Job:
    """One run of ``kind`` ('train', 'simulate', 'both' or 'evaluate') from TOML text, in a
    thread, writing to run folder ``save_name`` (None: the TOML's); or, given ``work``, that
    function of the job's Reporter (its result is the job's results)."""

    def __init__(self, kind: str, toml_text: str, compare: bool = True,
                 work: Callable[[Reporter], dict] | None = None, save_name: str | None = None) -> None:
        self.kind = kind
        self.work = work
        self.toml_text = toml_text
        self.save_name = save_name
        self.compare = compare
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.cancel = CancelToken()
        self.thread = threading.Thread(target=self._work, name=f"nbody-{kind}", daemon=True)
        self._on_end: Callable[[], object] | None = None

    def start(self, on_end: Callable[[], object] | None = None) -> None:
        """Start the thread; ``on_end()`` is called when it ends, however it ends."""
        self._on_end = on_end
        self.thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self.cancel.cancel()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def poll(self, limit: int = POLL_LIMIT) -> list:
        """What the job reported since the last poll, at most ``limit`` items (the rest waits)."""
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
            results = self._run(Reporter([QueueSink(self.queue)], self.cancel))
        except (RunCancelled, KeyboardInterrupt):
            cancelled = True
        except (InputError, NonFiniteStateError, TrainingStalled) as err:
            error = str(err)
        except Exception as err:  # a failing job must leave the server healthy
            # the page gets no exception text: it may quote a file the server read
            error = f"the job failed with an unexpected {type(err).__name__}; the server's log has the traceback"
            traceback.print_exc()
        finally:
            if self._on_end is not None:
                self._on_end()
            self.queue.put(JobDone(self.kind, results, error, cancelled))

    def _run(self, reporter: Reporter) -> dict:
        if self.work is not None:
            return self.work(reporter)
        configs = _configs_from_text(self.kind, self.toml_text, self.save_name)
        if self.kind == "evaluate":
            from nbody_engine.evaluate import run_evaluation

            # many short runs: their trajectories stay out of the live plots
            return {"evaluate": run_evaluation(configs["simulate"], reporter.filtered(_not_a_trajectory))}
        results = run_phases(configs, reporter)
        sim_cfg = configs.get("simulate")
        if self.compare and sim_cfg is not None and sim_cfg.integrator_mode != "analytic":
            # the live simulation plots keep the learned run; the comparison view shows both
            results["analytic"] = compare_with_analytic(sim_cfg, reporter.filtered(_not_a_trajectory))
        return results


def _not_a_trajectory(event) -> bool:
    return not isinstance(event, TrajectoryChunk)


def _configs_from_text(kind: str, toml_text: str, save_name: str | None = None):
    """The configs of a job, through the very loader the CLI uses (``save_name`` as a
    ``--save-name`` flag would give it)."""
    source = "the dashboard's settings"
    flags = {"save_name": save_name} if save_name else {}
    return load_configs(kind, parse_toml(toml_text, source), flags, source=source)


def fresh_run_name(base: str | None, data_dir: Path = DATA_DIR) -> str:
    """A run folder name no folder under ``data_dir`` has yet: ``base``, else ``base_2``,
    ``base_3``...; without a base, ``explorer_<date>_<time>_<random>`` (the random part keeps two
    sessions that start in the same second apart)."""
    if not base:
        return f"explorer_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
    names = itertools.chain([base], (f"{base}_{k}" for k in itertools.count(2)))
    return next(name for name in names if not (data_dir / name).exists())


def run_of_checkpoint(model_path: str | None, data_dir: Path = DATA_DIR) -> str | None:
    """The run folder holding checkpoint ``model_path`` (``data/<run>/model/<file>``), or None."""
    if not model_path:
        return None
    path = Path(model_path)
    return path.parents[1].name if len(path.parents) > 2 and path.parent.name == "model" and \
        path.parents[2] == data_dir else None
