"""The background-job component the Explorer and the Sweeps tab share (explorer/background.py),
in-process with a job whose work runs in its thread."""

from __future__ import annotations

import contextlib
import threading

import pytest

from explorer.background import BackgroundJob
from explorer.jobs import MAX_JOBS, Job, JobDone, JobSlot
from helpers import wait_until


def test_one_job_at_a_time_its_end_shown_and_its_error_in_the_alert():
    release = threading.Event()
    runner = BackgroundJob(lambda: None, 200, what="sweep", status="No sweep yet.")
    alert = runner.error_alert()
    job = runner.start(lambda: Job("work", "", work=lambda _reporter: {"waited": release.wait(30)}))
    assert job is not None and runner.running and runner.job is job and not alert.visible
    assert runner.start(lambda: Job("work", "", work=lambda _reporter: {})) is None  # one at a time
    assert alert.visible and "a sweep is already running in this session" in alert.object
    release.set()
    wait_until(lambda: not job.queue.empty(), "the job's end")
    (done,) = job.poll()
    assert isinstance(done, JobDone) and done.results == {"waited": True}
    runner.ended()
    assert not runner.running
    runner.show("Sweep finished.", 140.0)
    assert (runner.status, runner.progress) == ("Sweep finished.", 100)  # clipped to the bar
    runner.show_error(None)
    assert not alert.visible and alert.object == ""


def test_a_job_that_cannot_be_made_gives_its_slot_back():
    def broken() -> Job:
        raise RuntimeError("no job")

    runner = BackgroundJob(lambda: None, 200)
    with pytest.raises(RuntimeError):
        runner.start(broken)
    assert not runner.running and runner.job is None
    with contextlib.ExitStack() as stack:  # every slot is free again
        assert all(stack.enter_context(JobSlot()).taken for _ in range(MAX_JOBS))
