"""Background jobs of one browser session. An engine job (train, simulate, both, evaluate) runs
in a child process (explorer/job_process.py), supervised by a daemon thread that forwards its
events into a bounded queue the session drains on its own event loop: the engine's work neither
holds the server's GIL nor delays its pages, and trains at the headless runner's speed. A job
given a ``work`` function (a sweep, which starts processes of its own) runs in the thread itself.

The worker never touches Panel, HoloViews or Bokeh objects. A process-wide semaphore caps the
number of concurrent jobs so one server cannot be swamped.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from nbody_engine.events import CancelToken, Reporter, StepAccepted, TrajectoryChunk
from nbody_engine.runs.directory import DATA_DIR

from .job_process import PRELOAD, JobDone, JobRequest, QueueSink, child_main, run_reporting_the_end

MAX_JOBS = int(os.environ.get("NBODY_EXPLORER_MAX_JOBS", "2"))
QUEUE_SIZE = 20_000
POLL_LIMIT = 2_000  # events taken per drain: bounded work on the session's loop, the rest waits
PLOTS_ONLY = (StepAccepted, TrajectoryChunk)  # what a stopped job's plots no longer need
LAST_WORDS_S = 2.0  # how long a dead child's queue is still read for what it put there
_SLOTS = threading.BoundedSemaphore(MAX_JOBS)
CHILDREN = multiprocessing.get_context("forkserver")
CHILDREN.set_forkserver_preload(PRELOAD)

@functools.cache
def warm_up() -> threading.Thread:
    """Start the fork server of the jobs' child processes once per process, in the background
    (it imports torch, the engine and matplotlib once: seconds), so that the first run a user
    starts does not wait for it (called when a page has loaded)."""
    from multiprocessing import forkserver

    thread = threading.Thread(target=forkserver.ensure_running, name="nbody-warm-up", daemon=True)
    thread.start()
    return thread


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
    child process, writing to run folder ``save_name`` (None: the TOML's); or, given ``work``,
    that function of the job's Reporter, in a thread (its result is the job's results)."""

    def __init__(self, kind: str, toml_text: str, compare: bool = True,
                 work: Callable[[Reporter], dict] | None = None, save_name: str | None = None) -> None:
        self.kind = kind
        self.work = work
        self.request = JobRequest(kind, toml_text, save_name, compare, os.getcwd(), dict(os.environ))
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.cancel = CancelToken() if work is not None else CancelToken(CHILDREN.Event())
        self.thread = threading.Thread(target=self._work, name=f"nbody-{kind}", daemon=True)
        self.process = None
        self._on_end: Callable[[], object] | None = None
        self._end_polled = False

    def start(self, on_end: Callable[[], object] | None = None) -> None:
        """Start the job; ``on_end()`` is called when it ends, however it ends."""
        self._on_end = on_end
        self.thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the job to stop at its next step; wait up to ``timeout`` s for it to end."""
        self.cancel.cancel()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    @property
    def running(self) -> bool:
        """Until its end (JobDone) has been polled: the thread lives on for a moment after
        queueing it, and a page that shows the end may start the next job at once."""
        return self.thread.is_alive() and not self._end_polled

    @property
    def stopping(self) -> bool:
        """Whether Stop was asked for (the job may still be ending)."""
        return self.cancel.cancelled

    def poll(self, limit: int = POLL_LIMIT) -> list:
        """What the job reported since the last poll, at most ``limit`` items (the rest waits).
        Once Stop was pressed, what only the live plots would show is dropped, so the job's end
        is reported at the next poll however much was queued."""
        stopping = self.stopping
        items = []
        while stopping or len(items) < limit:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if not (stopping and isinstance(item, PLOTS_ONLY)):
                items.append(item)
            self._end_polled = self._end_polled or isinstance(item, JobDone)
        return items

    def _work(self) -> None:
        done = JobDone(self.kind, {}, "the job did not start")
        try:
            if self.work is not None:
                reporter = Reporter([QueueSink(self.queue)], self.cancel)
                done = run_reporting_the_end(self.kind, lambda: self.work(reporter))
            else:
                done = self._supervise()
        finally:
            if self._on_end is not None:
                self._on_end()
            self.queue.put(done)

    def _supervise(self) -> JobDone:
        """Run the job in a child process; forward its events until its JobDone."""
        events = CHILDREN.Queue(maxsize=QUEUE_SIZE)
        self.process = CHILDREN.Process(target=child_main, args=(self.request, events, self.cancel.event),
                                        name=f"nbody-{self.kind}", daemon=True)
        self.process.start()
        try:
            return self._forward(events)
        finally:
            self.process.join()
            events.close()

    def _forward(self, events) -> JobDone:
        forward = QueueSink(self.queue)
        while True:
            alive = self.process.is_alive()
            try:
                item = events.get(timeout=0.2 if alive else LAST_WORDS_S)
            except queue.Empty:
                if alive:
                    continue
                return JobDone(self.kind, {}, f"the job's process ended without a word (exit status "
                                              f"{self.process.exitcode}); the server's log may say why")
            if isinstance(item, JobDone):
                return item
            forward(item)  # once stopped, poll drops what only the plots would show


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
