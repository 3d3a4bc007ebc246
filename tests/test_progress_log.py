"""The progress log a run leaves for its followers (data/<name>/progress.jsonl), read back into
the engine's own events, and the lock that tells a reader whether the run is still going."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nbody_engine.config.errors import InputError
from nbody_engine.config.loading import load_configs
from nbody_engine.events import (CheckpointWritten, EpochFinished, Reporter, RunCancelledEvent, RunFinished, RunStarted,
                                 StepAccepted, StepRejected, TrajectoryChunk)
from nbody_engine.jobs.phases import run_phases
from nbody_engine.runs import progress_log
from nbody_engine.runs.directory import DirectoryLock, RunDirectory, lock_holder
from nbody_engine.runs.progress_log import ProgressLog, ProgressReader, read_progress

TINY_TOML = """
seed = 3
num_orbits = 2
hidden_dims = [8]
[train]
epochs = 3
steps_per_epoch = 2
replay_steps = 3
n_steps = 3
[simulate]
integrator_mode = "ml"
multi_orbit_sim = true
steps = 600
"""


def chunk(rows: int = 40, systems: int = 3, step: int = 0) -> TrajectoryChunk:
    rng = np.random.default_rng(rows)
    return TrajectoryChunk("simulate", step, rng.random((rows, systems)), rng.random((rows, systems)),
                           rng.random((rows, systems, 2, 2)), rng.random((rows, systems)),
                           np.full((rows, systems), np.nan), progress=0.25)


def test_every_kind_of_event_comes_back_as_it_was_written(tmp_path):
    path = tmp_path / "progress.jsonl"
    log = ProgressLog(path)
    small = chunk(rows=5)
    events = [RunStarted("train", "r", 7, {"lr": 1e-3, "hidden_dims": [8]}),
              StepAccepted(0, 1, 1e-5, 0.0, 0.01, 2),
              EpochFinished(0, {"loss": 0.0, "rel_dE_max": float("inf"), "acceptance_rate": 0.5}),
              CheckpointWritten(0, "data/r/model/model_epoch_0000.pt"),
              small,
              RunFinished("simulate", {"steps": [10, 12], "max_rel_energy_error": [1e-6, 2e-6]}),
              RunCancelledEvent("train", "stopped by request")]
    for event in events:
        log(event)
    back = read_progress(path)
    assert [type(e) for e in back] == [type(e) for e in events]
    for original, read in zip(events, back):
        if isinstance(original, TrajectoryChunk):
            for name in ("time", "dt", "position", "rel_dE", "rel_dL"):
                np.testing.assert_array_equal(getattr(read, name), getattr(original, name))
            assert (read.phase, read.step, read.progress) == ("simulate", 0, 0.25)
        else:
            assert read == original
    assert back[2].metrics["rel_dE_max"] == float("inf")  # non-finite numbers survive


def test_rejected_attempts_stay_out_and_chunks_are_thinned(tmp_path):
    path = tmp_path / "progress.jsonl"
    log = ProgressLog(path)
    log(StepRejected(0, 0, 1.0, 1.0, 0.1, 3.0, 1))
    big = chunk(rows=1000, systems=40)
    log(big)
    (read,) = read_progress(path)
    assert read.time.shape == (progress_log.MAX_ROWS, progress_log.MAX_SYSTEMS)
    assert read.position.shape == (progress_log.MAX_ROWS, progress_log.MAX_SYSTEMS, 2, 2)
    np.testing.assert_array_equal(read.time[[0, -1]], big.time[[0, -1], :progress_log.MAX_SYSTEMS])


def test_the_log_stays_small_however_long_the_run(tmp_path, monkeypatch):
    """Per-step records thin out level by level; epochs are all kept."""
    monkeypatch.setattr(progress_log, "LEVEL_BYTES", 2_000)
    path = tmp_path / "progress.jsonl"
    log = ProgressLog(path)
    steps = 20_000
    for step in range(steps):
        log(StepAccepted(step // 100, step % 100, 1e-5, 1e-9, 0.01, 0))
        if step % 100 == 99:
            log(EpochFinished(step // 100, {"loss": 0.1}))
    events = read_progress(path)
    kept = [e for e in events if isinstance(e, StepAccepted)]
    assert [e.epoch for e in events if isinstance(e, EpochFinished)] == list(range(steps // 100))
    line = len(progress_log.event_line(StepAccepted(0, 0, 1e-5, 1e-9, 0.01, 0)))
    levels = int(np.log2(steps)) + 1
    assert len(kept) <= levels * (2_000 // line + 1)  # logarithmic in the run's length, not linear
    assert kept[-1].epoch >= steps // 100 - 10  # the end of the run is still there


def test_the_reader_returns_complete_lines_and_notices_a_new_run(tmp_path):
    path = tmp_path / "progress.jsonl"
    reader = ProgressReader(path)
    assert reader.read() == [] and not reader.restarted
    log = ProgressLog(path)
    log(RunStarted("train", "r", 2))
    line = progress_log.event_line(EpochFinished(0, {"loss": 1.0}))
    with path.open("a") as fh:
        fh.write(line[:12])
    assert reader.read() == [RunStarted("train", "r", 2)]
    assert reader.read() == []  # half a line is not an event yet
    with path.open("a") as fh:
        fh.write(line[12:])
    assert reader.read() == [EpochFinished(0, {"loss": 1.0})]
    assert not reader.restarted
    ProgressLog(path)(RunStarted("simulate", "r", 0))  # the next run in this directory
    assert reader.read() == [RunStarted("simulate", "r", 0)]
    assert reader.restarted
    assert reader.read() == [] and not reader.restarted


@pytest.mark.slow
def test_a_real_run_leaves_a_log_that_replays_its_metrics_and_summary(tmp_path):
    (tmp_path / "run.toml").write_text(TINY_TOML + 'save_name = "traced"\n')
    configs = load_configs("both", tmp_path / "run.toml")
    seen = []
    results = run_phases(configs, Reporter([seen.append]), data_dir=tmp_path / "data")
    run = RunDirectory("traced", tmp_path / "data")
    events = read_progress(run.progress_path)
    started = [e for e in events if isinstance(e, RunStarted)]
    assert [(e.phase, e.total) for e in started] == [("train", 3), ("simulate", 600)]
    metrics = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [{"epoch": e.epoch, **e.metrics} for e in events if isinstance(e, EpochFinished)] == metrics
    assert [e.path for e in events if isinstance(e, CheckpointWritten)] == [results["train"]["checkpoint"]]
    assert [e for e in events if isinstance(e, StepAccepted)] == [e for e in seen if isinstance(e, StepAccepted)]
    sim_chunks = [e for e in events if isinstance(e, TrajectoryChunk) and e.phase == "simulate"]
    assert sim_chunks and sim_chunks[-1].progress == 1.0
    assert all(c.position.shape[1:] == (2, 2, 2) for c in sim_chunks)  # every orbit, every body, x and y
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert [e.phase for e in finished] == ["train", "simulate"]
    summary = json.loads(run.sim_dir("ml_multi").joinpath("summary.json").read_text())
    assert {k: v for k, v in finished[-1].summary.items() if k != "outputs"} == summary
    assert lock_holder(run.root) is None  # the run is over


def test_bad_input_leaves_no_log(tmp_path):
    (tmp_path / "run.toml").write_text(TINY_TOML + 'save_name = "bad"\nmodel_path = "missing.pt"\n')
    configs = load_configs("simulate", tmp_path / "run.toml")
    with pytest.raises(InputError):
        run_phases(configs, data_dir=tmp_path / "data")
    assert not (tmp_path / "data" / "bad").exists()


HOLD_LOCK = """
import sys, time
from nbody_engine.runs.directory import DirectoryLock
with DirectoryLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.mark.slow
def test_lock_holder_names_the_live_run_and_forgets_a_dead_one(tmp_path):
    run = tmp_path / "data" / "r"
    assert lock_holder(run) is None
    with DirectoryLock(run):
        assert lock_holder(run) == os.getpid()
    assert lock_holder(run) is None

    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert lock_holder(run) == proc.pid
        proc.kill()  # dies without removing its lock file
        proc.wait(30)
        assert (run / DirectoryLock.FILE).exists()
        assert lock_holder(run) is None
    finally:
        proc.kill()
        proc.wait(30)


@pytest.mark.slow
def test_lock_holder_ignores_an_unreaped_process(tmp_path):
    """A child that has exited but that its parent has not waited for yet (a zombie) runs nothing."""
    run = tmp_path / "data" / "z"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run), "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # it has exited; it is not reaped
        run.mkdir(parents=True, exist_ok=True)  # the lock took the directories it made with it
        (run / DirectoryLock.FILE).write_text(f"{proc.pid}\n")  # as a process killed before its cleanup leaves it
        assert lock_holder(run) is None
    finally:
        proc.wait(30)
