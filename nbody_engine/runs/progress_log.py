"""The progress log ``data/<save_name>/progress.jsonl``: a run's events, as a reader elsewhere can
follow them while the run goes on.

:class:`ProgressLog` is a sink: every run started through :func:`nbody_engine.jobs.phases.run_phases`
(``nbody-runner train|simulate|both`` and the explorer's jobs) writes one JSON line per event,
a new file starting with the run's first event. :class:`ProgressReader` turns the lines completed
since its last read back into the same event objects (arrays as NumPy arrays), so a follower
feeds them through the path it feeds its own jobs' events.

The size stays bounded: rejected attempts are left out (their optimizer steps show in the epoch
metrics), a trajectory chunk keeps at most ``MAX_ROWS`` rows of at most ``MAX_SYSTEMS`` systems,
and each time the per-step records (accepted steps and chunks) have taken another
``LEVEL_BYTES``, only every second one of them is written from then on. Epoch, checkpoint,
start and end events are always written. Non-finite numbers are written as Python's ``json``
writes them (``NaN``, ``Infinity``) and read back as they were.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from ..events import (CheckpointWritten, EpochFinished, Event, RunCancelledEvent, RunFailed, RunFinished, RunStarted,
                      StepAccepted, TrajectoryChunk)
from .directory import write_text

FILE = "progress.jsonl"
MAX_ROWS = 16
MAX_SYSTEMS = 16
LEVEL_BYTES = 2_000_000
EVENT_TYPES = {cls.__name__: cls for cls in (RunStarted, StepAccepted, EpochFinished, CheckpointWritten,
                                             TrajectoryChunk, RunFinished, RunFailed, RunCancelledEvent)}
PER_STEP = (StepAccepted, TrajectoryChunk)
ARRAY_FIELDS = {f.name for f in dataclasses.fields(TrajectoryChunk) if f.type == "np.ndarray"}


def thinned_chunk(chunk: TrajectoryChunk) -> TrajectoryChunk:
    """At most MAX_ROWS evenly spaced rows (the last one kept) of the first MAX_SYSTEMS systems."""
    rows = len(chunk.time)
    # distinct without np.unique (whose first call imports numpy.ma, a share of a short run): the
    # points are at least one row apart, or every row
    keep = np.linspace(0, rows - 1, min(rows, MAX_ROWS)).round().astype(int)
    arrays = {name: getattr(chunk, name)[keep, :MAX_SYSTEMS] for name in ARRAY_FIELDS}
    return dataclasses.replace(chunk, **arrays)


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def event_line(event: Event) -> str:
    """``event`` as one JSON line: its type's name, the wall-clock time and its fields."""
    fields = {f.name: _plain(getattr(event, f.name)) for f in dataclasses.fields(event)}
    return json.dumps({"event": type(event).__name__, "wall_time": time.time(), **fields}) + "\n"


def event_from(record: dict) -> Event:
    """The event a line of the log holds (the inverse of :func:`event_line`)."""
    cls = EVENT_TYPES[record["event"]]
    fields = {f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record}
    if cls is TrajectoryChunk:
        fields.update({name: np.asarray(fields[name], dtype=float) for name in ARRAY_FIELDS})
    return cls(**fields)


class ProgressLog:
    """A sink that writes the events a follower needs to ``path``, bounded in size (module doc).

    Nothing is written before the run's first event (RunStarted comes once its input is checked,
    so bad input leaves no file); that first event starts the file afresh."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._opened = False
        self._stride = 1
        self._per_step_seen = 0
        self._level_bytes = 0

    def __call__(self, event: Event) -> None:
        if type(event).__name__ not in EVENT_TYPES or not self._keep(event):
            return
        if isinstance(event, TrajectoryChunk):
            event = thinned_chunk(event)
        line = event_line(event)
        if self._opened:
            with self.path.open("a") as fh:
                fh.write(line)
        else:
            write_text(self.path, line)  # a new file: a follower of the previous run's log notices
            self._opened = True
        if isinstance(event, PER_STEP):
            self._count_level(len(line))

    def _keep(self, event: Event) -> bool:
        if not isinstance(event, PER_STEP):
            return True
        self._per_step_seen += 1
        return (self._per_step_seen - 1) % self._stride == 0

    def _count_level(self, size: int) -> None:
        self._level_bytes += size
        if self._level_bytes >= LEVEL_BYTES:
            self._stride *= 2
            self._level_bytes = 0


class ProgressReader:
    """Follows one run's progress log: each :meth:`read` returns the events of the lines
    completed since the last one. When a new run has started the file afresh (a new file, not
    the one read so far), reading starts again at its beginning and :attr:`restarted` is True
    until the next read. :attr:`started_at` is the wall-clock time (``time.time()``) the last
    phase read so far started, for an ETA."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.restarted = False
        self.started_at: float | None = None  # wall-clock time of the last RunStarted read
        self._inode: int | None = None
        self._offset = 0

    def read(self, max_bytes: int | None = None) -> list[Event]:
        """The events of the lines completed since the last read; at most about ``max_bytes``
        of them (a reader replaying a long log takes it in bounded pieces; a longer line is read
        whole)."""
        try:
            with self.path.open("rb") as fh:
                inode = os.fstat(fh.fileno()).st_ino
                self.restarted = self._inode is not None and inode != self._inode
                if inode != self._inode:
                    self._inode, self._offset = inode, 0
                fh.seek(self._offset)
                chunk = fh.read(max_bytes) if max_bytes else fh.read()
                if max_bytes and len(chunk) == max_bytes and not chunk.endswith(b"\n"):
                    chunk += fh.readline()
        except FileNotFoundError:
            self.restarted = False
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        records = [json.loads(line) for line in complete.splitlines() if line.strip()]
        for record in records:
            if record["event"] == "RunStarted":
                self.started_at = record["wall_time"]
        return [event_from(record) for record in records]


def last_record(path: str | Path, tail_bytes: int = 65_536) -> dict | None:
    """The last complete JSON line of a log (``progress.jsonl``, ``metrics.jsonl``) as a dict,
    read from the file's end; None when there is none."""
    try:
        with Path(path).open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - tail_bytes))
            tail = fh.read()
    except FileNotFoundError:
        return None
    lines = tail[: tail.rfind(b"\n") + 1].splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].strip() else None


def read_progress(path: str | Path) -> list[Event]:
    """Every event of the progress log at ``path`` (none if there is none)."""
    return ProgressReader(path).read()
