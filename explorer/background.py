"""One background job of a session and what the page shows of it: whether it runs, a status
line, a progress bar and the last one-line error, as parameters the page's widgets follow. The
Explorer's runs (explorer/app.py) and the Sweeps tab's sweeps (explorer/sweeps_view.py) each
hold one; what their jobs report they read themselves, in the ``tick`` it calls."""

from __future__ import annotations

from collections.abc import Callable

import panel as pn
import param

from .jobs import Job, JobSlot
from .schedule import every


class BackgroundJob(param.Parameterized):
    """Starts a :class:`~explorer.jobs.Job` in one of the server's job slots (always given back)
    and calls ``tick`` every ``period_ms`` on the session's loop until :meth:`ended`."""

    running = param.Boolean(False, constant=True, doc="A job started here whose end has not been shown yet")
    status = param.String("", constant=True, doc="The status line")
    progress = param.Integer(0, bounds=(0, 100), constant=True, doc="The progress bar, in percent")
    error = param.String(None, allow_None=True, constant=True, doc="The one-line error shown (None: none)")

    def __init__(self, tick: Callable[[], object], period_ms: int, what: str = "job", **params) -> None:
        super().__init__(**params)
        self.job: Job | None = None
        self._tick, self._period_ms, self._what = tick, period_ms, what
        self._callback = None

    def start(self, make_job: Callable[[], Job]) -> Job | None:
        """Take a job slot and start ``make_job()``'s job in it (``make_job`` runs with the slot
        held; what it raises goes up, the slot given back); None, the reason in ``error``, when a
        job started here still runs or every slot is taken."""
        if self.busy():
            return None
        with JobSlot() as slot:
            if not slot.taken:
                self.show_error("the server is busy: every job slot is taken; try again when a run ends")
                return None
            job = make_job()
            slot.start(job)
        self.job = job
        self.show_error(None)
        self._set(running=True)
        self._callback = every(self._tick, self._period_ms)  # a server session or a notebook kernel
        return job

    def busy(self) -> bool:
        """Whether a job started here still runs (then saying so in ``error``)."""
        if self.job is not None and self.job.running:
            self.show_error(f"a {self._what} is already running in this session; stop it first")
            return True
        return False

    def stop(self) -> None:
        """Ask the job to stop at its next step; never blocks (``tick`` sees its end)."""
        if self.job is not None:
            self.job.stop(timeout=0)

    def ended(self) -> None:
        """The job's end has been shown: no more ticks."""
        self._stop_ticking()
        self._set(running=False)

    def close(self, timeout: float = 0.0) -> None:
        """Stop the job (waiting up to ``timeout`` s for it) and the ticks: the session is gone."""
        if self.job is not None:
            self.job.stop(timeout=timeout)
        self._stop_ticking()

    def show(self, status: str | None = None, progress: float | None = None) -> None:
        """Set the status line and (0-100, clipped) the progress bar; None leaves one as it is."""
        values = {}
        if status is not None:
            values["status"] = status
        if progress is not None:
            values["progress"] = int(min(max(progress, 0), 100))
        self._set(**values)

    def show_error(self, message: str | None) -> None:
        """Show a one-line error (None: clear it)."""
        self._set(error=message)

    def error_alert(self) -> pn.pane.Alert:
        """An alert that shows ``error`` while there is one."""
        return pn.pane.Alert(self.param.error.rx.pipe(lambda e: f"**error:** {e}" if e else ""),
                             visible=self.param.error.rx.pipe(bool), alert_type="danger",
                             sizing_mode="stretch_width")

    def _stop_ticking(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def _set(self, **values) -> None:
        with param.edit_constant(self):
            self.param.update(**values)
