"""Typed progress events, the sinks that consume them, and the cancellation token.

The engine only ever calls ``reporter.emit(event)``; what happens next (a progress bar, a JSONL
file, the explorer's queue, Weights & Biases) is the business of the sinks. Events carry plain
Python numbers and NumPy arrays, never tensors, so any thread may consume them.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config.errors import InputError, RunCancelled

log = logging.getLogger("nbody_engine")


@dataclass(frozen=True)
class RunStarted:
    phase: str  # "train" or "simulate"
    save_name: str
    total: int  # epochs for training, planned steps (0 if unknown) for simulation
    config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StepAccepted:
    epoch: int
    step: int
    rel_dE: float
    rel_dL: float
    dt: float
    retrains: int


@dataclass(frozen=True)
class StepRejected:
    epoch: int
    step: int
    rel_dE: float
    rel_dL: float
    dt: float
    loss: float
    retrain: int


@dataclass(frozen=True)
class EpochFinished:
    epoch: int
    metrics: dict


@dataclass(frozen=True)
class CheckpointWritten:
    epoch: int
    path: str


@dataclass(frozen=True)
class TrajectoryChunk:
    """Consecutive recorded steps of one run: time, dt (S, B); position (S, B, N, D);
    rel_dE, rel_dL (S, B); ``step`` is the index of the first row; ``progress`` in [0, 1]."""

    phase: str
    step: int
    time: np.ndarray
    dt: np.ndarray
    position: np.ndarray
    rel_dE: np.ndarray
    rel_dL: np.ndarray
    progress: float


@dataclass(frozen=True)
class PolicyMeasured:
    """An evaluation starts measuring ``policy`` on ``problem``: one of the ``total`` its
    RunStarted announced."""

    problem: str
    policy: str


@dataclass(frozen=True)
class RunFinished:
    phase: str
    summary: dict


@dataclass(frozen=True)
class RunFailed:
    phase: str
    error: str


@dataclass(frozen=True)
class RunCancelledEvent:
    phase: str
    reason: str = "stopped by request"


Event = Any
Sink = Callable[[Event], None]


class CancelToken:
    """Set from any thread; the running job stops cleanly at its next step. ``event`` is what
    holds the flag (default a ``threading.Event``); a ``multiprocessing`` Event lets the process
    that starts a job stop it in a child process."""

    def __init__(self, event=None) -> None:
        self._event = event if event is not None else threading.Event()

    @property
    def event(self):
        """The flag's holder, to hand to a child process."""
        return self._event

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise RunCancelled


class Reporter:
    """Fans events out to sinks and carries the run's cancellation token."""

    def __init__(self, sinks: Iterable[Sink] = (), cancel: CancelToken | None = None) -> None:
        self.sinks = list(sinks)
        self.cancel = cancel or CancelToken()

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    def filtered(self, keep: Callable[[Event], bool]) -> Reporter:
        """A reporter with the same cancellation token whose sinks receive only the events
        ``keep`` accepts (a dashboard keeps many short runs' trajectories out of its plots)."""
        return Reporter([lambda event: self.emit(event) if keep(event) else None], self.cancel)


class ConsoleSink:
    """A tqdm progress bar on an interactive terminal; plain log lines otherwise."""

    def __init__(self, stream=None, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._bar = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._start(event)
        elif isinstance(event, EpochFinished):
            self._epoch(event)
        elif isinstance(event, TrajectoryChunk) and self._bar is not None:
            self._advance_to(event.progress * self._bar.total if self._bar.total else event.step)
        elif isinstance(event, (RunFinished, RunFailed, RunCancelledEvent)):
            self._close()
            if isinstance(event, RunCancelledEvent):
                log.warning("%s cancelled: %s", event.phase, event.reason)

    def _start(self, event: RunStarted) -> None:
        log.info("%s '%s' started", event.phase, event.save_name)
        if self.interactive:
            from tqdm.auto import tqdm

            total = event.total if event.phase == "train" else 1000
            self._bar = tqdm(total=total, desc=event.phase, file=self.stream, dynamic_ncols=True)

    def _epoch(self, event: EpochFinished) -> None:
        m = event.metrics
        line = (f"epoch {event.epoch}: loss {m.get('loss', float('nan')):.3g}  max|dE/E| {m.get('rel_dE_max', 0):.2e}"
                f"  {epoch_counts(m)}  {m.get('epoch_time_s', 0):.2f}s")
        if self._bar is not None:
            self._bar.set_postfix_str(line.split(": ", 1)[1], refresh=False)
            self._advance_to(event.epoch + 1)
        else:
            log.info(line)

    def _advance_to(self, n: float) -> None:
        self._bar.update(max(0.0, min(n, self._bar.total) - self._bar.n))

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def epoch_counts(metrics: dict, sep: str = "  ") -> str:
    """What an epoch did, for a one-line summary: the band objective's accepted steps and
    retrain iterations (joined by ``sep``), or the rollout objective's optimizer steps."""
    if "rollout_steps" in metrics:
        return f"rollout steps {metrics['rollout_steps']}"
    return f"accepted {metrics.get('accepted_steps', 0)}{sep}retrains {metrics.get('retrain_iterations', 0)}"


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON can hold it: NumPy arrays and scalars as Python lists and numbers,
    non-finite numbers (which JSON lacks) as None, dicts, lists and tuples item by item. The one
    such conversion of every file the engine writes (metrics, summaries, sweep and evaluation tables)."""
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_line(record: dict) -> str:
    """``record`` as one line of strict JSON (:func:`json_safe`)."""
    return json.dumps(json_safe(record), allow_nan=False) + "\n"


class MetricsFileSink:
    """Appends one JSON line per finished epoch to ``path`` (the run's metrics.jsonl)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self, event: Event) -> None:
        if isinstance(event, EpochFinished):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(json_line({"epoch": event.epoch, **event.metrics}))


WANDB_MISSING = ("wandb = true but the wandb package is not installed; pip install 'nbody-explorer[wandb]' "
                 "or set wandb = false")


class WandbSink:
    """Logs the phases whose config has ``wandb = true`` to Weights & Biases: one wandb run per
    phase with the resolved config, every epoch's metrics (``wandb.log``) and, for a
    simulation, the scalar values of its summary. Needs the ``wandb`` extra: without it,
    creating the sink raises InputError, so a run fails before it writes anything."""

    def __init__(self, project: str = "nbody-explorer") -> None:
        try:
            import wandb
        except ImportError:
            raise InputError(WANDB_MISSING) from None
        self.wandb, self.project, self.active = wandb, project, False

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._finish()
            if event.config.get("wandb"):
                self.wandb.init(project=self.project, name=f"{event.save_name}-{event.phase}", job_type=event.phase,
                                config=event.config)
                self.active = True
        elif not self.active:
            return
        elif isinstance(event, EpochFinished):
            self.wandb.log({"epoch": event.epoch, **event.metrics}, step=event.epoch)
        elif isinstance(event, RunFinished):
            if event.phase == "simulate":
                self.wandb.log({k: v for k, v in event.summary.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)})
            self._finish()
        elif isinstance(event, (RunFailed, RunCancelledEvent)):
            self._finish(exit_code=1)

    def _finish(self, exit_code: int = 0) -> None:
        if self.active:
            self.wandb.finish(exit_code=exit_code)
            self.active = False
