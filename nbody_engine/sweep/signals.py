"""How a sweep talks to its running tasks through the scheduler, with Dask's public
coordination primitives only: a per-run ``Event`` (and a ``Variable`` holding why) asks a run
to stop (Stop, Ctrl-C, the pruner, the end of the sweep), and a per-sweep ``Variable`` that the
sweep bumps every second is its heartbeat: a task whose sweep stopped beating (SIGKILLed, its
machine gone) interrupts its run by itself.

A task asks the scheduler about its events once a second. So that a stop reaches a run at once
(Ctrl-C must end a sweep within 2 s), the sweep also hands each stop to every worker process
(``Client.run``), where a task finds it in memory, for nothing, every time it looks at its runner;
the events still reach the tasks that missed that delivery (one that started just after it)."""

from __future__ import annotations

import json
import threading
import time

HEARTBEAT_LIMIT_S = 45.0  # a task whose sweep has not beaten for this long stops its run
HEARTBEAT_CHECK_S = 5.0  # how often a task reads the heartbeat
LOOK_S = 1.0  # how often a task asks the scheduler whether its run must stop

# (sweep token, run id or "all") -> (status, why): the stops handed to this worker process
_DELIVERED: dict[tuple[str, str], tuple[str, str]] = {}


def deliver_stop(token: str, run_id: str, status: str, why: str) -> None:
    """In a worker process (``Client.run``): the sweep ``token`` asks ``run_id`` (or "all") to stop."""
    _DELIVERED[token, run_id] = (status, why)


def forget_stops(token: str) -> None:
    """In a worker process (``Client.run``): the sweep ``token`` has ended; drop its stops."""
    for key in [key for key in list(_DELIVERED) if key[0] == token]:
        _DELIVERED.pop(key, None)


def _names(token: str, run_id: str) -> tuple[str, str]:
    """The stop event and its reason of one run, or with ``run_id = "all"`` of every run."""
    return f"nbody-stop-{token}-{run_id}", f"nbody-stop-why-{token}-{run_id}"


class SweepSignals:
    """The sweep's side: beat, and ask runs to stop with a status (``cancelled``, ``pruned``)."""

    def __init__(self, client, token: str) -> None:
        from distributed import Variable

        self.client, self.token = client, token
        self.heartbeat = Variable(f"nbody-heartbeat-{token}", client=client)
        self.beats = 0
        self.stopped: list[str] = []

    def beat(self) -> None:
        self.beats += 1
        try:
            self.heartbeat.set(self.beats)
        except (OSError, TimeoutError):  # the scheduler is unreachable: the worker watch says so
            pass

    def stop(self, run_id: str, status: str, why: str) -> None:
        """Ask the task of ``run_id`` (``"all"``: every task) to interrupt its run and record
        ``status`` with ``why``."""
        from distributed import Event, Variable

        event, reason = _names(self.token, run_id)
        Variable(reason, client=self.client).set(json.dumps({"status": status, "why": why}))
        Event(event, client=self.client).set()
        self.stopped.append(run_id)
        self._broadcast(deliver_stop, run_id, status, why)

    def _broadcast(self, function, *args) -> None:
        """Call ``function(token, *args)`` in every worker process, from a thread of its own: a
        worker still registered but unreachable (a lost SLURM node) holds ``Client.run`` for the
        connect timeout (30 s), and the sweep must not wait for it (Ctrl-C ends it within 2 s);
        a worker not reached is left to the events."""
        def run() -> None:
            try:
                self.client.run(function, self.token, *args, on_error="ignore")
            except Exception:  # noqa: BLE001 - the scheduler or the client is gone: the worker watch says so
                pass

        threading.Thread(target=run, name="nbody-stop-broadcast", daemon=True).start()

    def close(self) -> None:
        """Forget the sweep's events, variables and delivered stops (a long-lived cluster keeps them)."""
        from distributed import Event, Variable

        if self.stopped:
            self._broadcast(forget_stops)
        for run_id in self.stopped:
            event, reason = _names(self.token, run_id)
            try:
                Variable(reason, client=self.client).delete()
                Event(event, client=self.client).clear()
            except (OSError, TimeoutError):
                pass
        try:
            self.heartbeat.delete()
        except (OSError, TimeoutError):
            pass


class RunSignals:
    """A task's side: whether its sweep asked it to stop (and with which status and why), or
    went silent. ``token`` None (a run executed by hand) never asks."""

    def __init__(self, token: str | None, run_id: str) -> None:
        self.token, self.run_id = token, run_id
        self.last_beat: object = None
        self.last_change = time.monotonic()
        self.next_check = 0.0
        self.next_look = 0.0

    def stop_request(self) -> tuple[str, str] | None:
        """(status, why) when the run must stop, else None. Cheap: the scheduler is asked at
        most once per ``LOOK_S``."""
        if self.token is None:
            return None
        for target in (self.run_id, "all"):
            delivered = _DELIVERED.get((self.token, target))
            if delivered is not None:
                return delivered
        now = time.monotonic()
        if now < self.next_look:
            return None
        self.next_look = now + LOOK_S
        return self._asked() or self._silent_sweep()

    def _asked(self) -> tuple[str, str] | None:
        """What the scheduler's events say: (status, why) of a stop asked of this run or of all."""
        from distributed import Event, Variable

        for target in (self.run_id, "all"):
            event, reason = _names(self.token, target)
            try:
                if Event(event).is_set():
                    asked = json.loads(Variable(reason).get(timeout=10))
                    return asked["status"], asked["why"]
            except (OSError, TimeoutError, ValueError):
                pass
        return None

    def _silent_sweep(self) -> tuple[str, str] | None:
        now = time.monotonic()
        if now < self.next_check:
            return None
        self.next_check = now + HEARTBEAT_CHECK_S
        from distributed import Variable

        try:
            beat = Variable(f"nbody-heartbeat-{self.token}").get(timeout=HEARTBEAT_CHECK_S)
        except (OSError, TimeoutError, ValueError):
            beat = self.last_beat  # unreachable or gone: no news is no beat
        if beat != self.last_beat:
            self.last_beat, self.last_change = beat, now
        elif now - self.last_change > HEARTBEAT_LIMIT_S:
            return "cancelled", f"its sweep has not been heard from for {HEARTBEAT_LIMIT_S:.0f} s"
        return None
