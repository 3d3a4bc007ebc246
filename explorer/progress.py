"""What the header says about a job or a followed run: the status line and the progress bar,
worked out from the engine's events (no widgets here: the Explorer shows what this returns)."""

from __future__ import annotations

import time

from nbody_engine.events import (CheckpointWritten, EpochFinished, PolicyMeasured, RunCancelledEvent, RunFinished,
                                 RunStarted, TrajectoryChunk, epoch_counts)


class RunProgress:
    """The clock, the epochs (or an evaluation's measurements) to come and the last checkpoint
    of the run being shown; :meth:`update` turns an event into ``(status, percent)``, either
    None where the event changes nothing there."""

    def __init__(self) -> None:
        self.started = 0.0
        self.total = 0  # epochs of a training, measurements of an evaluation
        self.measured = 0
        self.last_checkpoint: str | None = None
        self.stopped_after: float | None = None  # when this session's job said it had stopped

    def start(self, total: int, started_at: float | None = None) -> None:
        """A job starts now (or a followed run started at wall time ``started_at``)."""
        self.started = time.monotonic() if started_at is None else time.monotonic() - (time.time() - started_at)
        self.total, self.measured, self.last_checkpoint, self.stopped_after = total, 0, None, None

    def elapsed(self) -> float:
        """Seconds since the start; once stopped, when it stopped (not when its outputs were written)."""
        return self.stopped_after if self.stopped_after is not None else time.monotonic() - self.started

    def update(self, event, followed: bool) -> tuple[str | None, float | None]:
        """``followed``: the run is read from disk, not this session's job (its clock starts at
        its RunStarted)."""
        if isinstance(event, RunStarted):
            if event.phase in ("train", "evaluate"):
                self.total, self.measured = event.total, 0
            if followed:
                self.started = time.monotonic()
            return f"{event.phase}: '{event.save_name}' running...", None
        if isinstance(event, EpochFinished):
            return self._epoch(event)
        if isinstance(event, TrajectoryChunk) and event.phase == "simulate":
            return None, 100 * event.progress
        if isinstance(event, PolicyMeasured):
            return self._measurement(event)
        if isinstance(event, CheckpointWritten):
            self.last_checkpoint = event.path
        elif isinstance(event, RunFinished):  # a job's own end (JobDone) follows; a followed run has no other
            return f"{event.phase} finished.", 100
        elif isinstance(event, RunCancelledEvent) and not followed:  # its JobDone follows once the outputs are written
            self.stopped_after = self.elapsed()
            return f"{event.phase.capitalize()} stopped after {self.stopped_after:.1f}s{self.kept(event.phase)}; " \
                   "writing its outputs...", None
        return None, None

    def _epoch(self, event: EpochFinished) -> tuple[str, float]:
        done = event.epoch + 1
        total = max(self.total, done)
        elapsed = self.elapsed()
        eta = elapsed / done * (total - done)
        counts = epoch_counts(event.metrics, sep=" · ")
        return f"epoch {done}/{total} · {counts} · elapsed {elapsed:.0f}s · ETA {eta:.0f}s", 100 * done / total

    def _measurement(self, event: PolicyMeasured) -> tuple[str, float]:
        """Evaluate's progress: the problem and policy being measured, elapsed time and ETA."""
        self.measured += 1
        total = max(self.total, self.measured)
        elapsed = self.elapsed()
        eta = elapsed / max(self.measured - 1, 1) * (total - self.measured + 1) if self.measured > 1 else None
        status = (f"Evaluate: {event.problem} · {event.policy} ({self.measured}/{total}) · elapsed {elapsed:.0f}s"
                  + (f" · ETA {eta:.0f}s" if eta is not None else ""))
        return status, 100 * (self.measured - 1) / total

    def kept(self, kind: str) -> str:
        """What a stopped job leaves for the status line: the checkpoint of a training."""
        if self.last_checkpoint:
            return f"; checkpoint kept: {self.last_checkpoint}"
        trained = kind in ("train", "both")
        return "; stopped before its first epoch ended, so no checkpoint was written" if trained else ""
