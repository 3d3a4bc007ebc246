"""Flow control of the live plots (explorer/paint_gate.py), in-process: when the next batch may
go, and what the Explorer holds back meanwhile. The page's side (it answers each batch once
drawn) is in tests/test_browser.py."""

from __future__ import annotations

import time

import pytest

from explorer import Explorer
from explorer.jobs import JobDone
from explorer.paint_gate import ANSWER_TIMEOUT_S, PaintGate
from nbody_engine.events import StepAccepted


def steps(n: int, start: int = 0) -> list[StepAccepted]:
    return [StepAccepted(epoch=0, step=k, rel_dE=1e-5 * (k + 1), rel_dL=1e-4, dt=0.01, retrains=0)
            for k in range(start, start + n)]


def answer(gate: PaintGate, paint_ms: float) -> None:
    """What the page does once it has drawn the last batch."""
    gate.paint_ms = paint_ms
    gate.painted = gate.sent


def test_without_an_answering_page_every_batch_goes():
    gate = PaintGate()
    for _ in range(3):
        assert gate.open()
        gate.mark_sent()
    assert gate.open()  # a script or a page still loading: no flow control


def test_a_batch_waits_for_the_page_to_draw_the_last_then_as_long_again():
    gate = PaintGate()
    gate.mark_sent()
    answer(gate, paint_ms=300.0)
    gate.mark_sent()
    now = time.monotonic()
    assert not gate.open(now)  # not drawn yet
    answer(gate, paint_ms=300.0)
    drawn = time.monotonic()
    assert not gate.open(drawn + 0.1)  # resting as long as the drawing took
    assert gate.open(drawn + 0.31)


def test_a_page_that_stops_answering_gets_a_batch_after_the_timeout():
    gate = PaintGate()
    gate.mark_sent()
    answer(gate, paint_ms=10.0)
    gate.mark_sent()  # never answered: a background tab
    sent = time.monotonic()
    assert not gate.open(sent + ANSWER_TIMEOUT_S / 2)
    assert gate.open(sent + ANSWER_TIMEOUT_S + 0.01)


@pytest.fixture
def explorer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    e = Explorer()
    yield e
    e.close()


def test_the_explorer_holds_rows_and_status_until_the_page_has_drawn(explorer):
    e = explorer
    gate = e.paint_gate
    e.consume(steps(3))
    assert len(e.live.frame("energy_error")) == 3 and gate.sent == 1
    answer(gate, paint_ms=60_000.0)  # a page that drew slowly rests as long
    e.consume(steps(4, start=3))
    assert len(e.live.frame("energy_error")) == 3 and gate.sent == 1  # held back
    e.consume([JobDone("train", {})])  # a job's end shows everything at once, then the end
    assert len(e.live.frame("energy_error")) == 7 and gate.sent == 2
    assert e.status.startswith("Train finished")


def test_a_stopping_job_is_shown_at_once(explorer):
    e = explorer
    e.train.param.update(epochs=1000, num_orbits=2, replay_steps=5, n_steps=3, seed=1, save_name="s")
    assert e.start("train")
    try:
        e.consume(steps(2))
        answer(e.paint_gate, paint_ms=60_000.0)
        e.consume(steps(2, start=2))
        assert len(e.live.frame("energy_error")) == 2
        e.stop()
        e.consume([])
        assert len(e.live.frame("energy_error")) == 4  # no more rows come: nothing waits for the page
    finally:
        e.close()
