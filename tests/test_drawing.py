"""Report figures drawn in a helper process (nbody_engine/drawing.py): the same PNG, drawn off
the run's process, and nothing lost when the helper fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from helpers import wait_until
from nbody_engine.integrators.loop import StopRule, simulate
from nbody_engine.integrators.policies import AnalyticDt
from nbody_engine.physics.gravity import Gravity
from nbody_engine.physics.initial_conditions import kepler_orbit
from nbody_engine.reporting import drawing
from nbody_engine.reporting.curves import simulation_curves

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def curves():
    traj = simulate(kepler_orbit(0.6, 1.0), AnalyticDt(0.02), Gravity(), StopRule(max_steps=500))
    return simulation_curves(traj.arrays())


def test_outside_a_helper_block_the_figure_is_drawn_here(tmp_path, curves):
    path = tmp_path / "report.png"
    finished = drawing.draw("simulation_report", curves, path, "here")
    assert finished() == path and path.read_bytes().startswith(PNG)


@pytest.mark.slow
def test_in_a_helper_block_the_run_never_imports_matplotlib(tmp_path):
    """The figure comes back from the helper, and this process has not loaded matplotlib."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from nbody_engine.reporting import drawing
        from nbody_engine.reporting.curves import simulation_curves
        from nbody_engine.physics.initial_conditions import kepler_orbit
        from nbody_engine.integrators.loop import Gravity, StopRule, simulate
        from nbody_engine.integrators.policies import AnalyticDt

        traj = simulate(kepler_orbit(0.6, 1.0), AnalyticDt(0.02), Gravity(), StopRule(max_steps=500))
        with drawing.helper():
            helper = drawing._helper.pid
            out = Path({str(tmp_path)!r}) / "r.png"
            path = drawing.draw("simulation_report", simulation_curves(traj.arrays()), out, "helper")()
        print(path, "matplotlib" in sys.modules, helper)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    path, loaded, helper = result.stdout.split()
    assert loaded == "False"
    assert (tmp_path / "r.png").read_bytes().startswith(PNG) and path == str(tmp_path / "r.png")
    with pytest.raises(ProcessLookupError):  # the block's end stopped the helper
        os.kill(int(helper), 0)


@pytest.mark.slow
def test_an_error_in_the_helper_is_raised_in_the_run(tmp_path):
    with drawing.helper():
        finished = drawing.draw("simulation_report", {}, tmp_path / "r.png", "no curves")
        with pytest.raises(RuntimeError, match="drawing simulation_report failed: KeyError"):
            finished()
    assert list(tmp_path.iterdir()) == []


def test_a_helper_that_died_leaves_the_figure_to_the_run(tmp_path, curves):
    with drawing.helper():
        drawing._helper.kill()
        drawing._helper.wait()
        path = drawing.draw("simulation_report", curves, tmp_path / "r.png", "fallback")()
    assert path.read_bytes().startswith(PNG)


@pytest.mark.slow
def test_ctrl_c_to_the_terminal_s_process_group_ends_the_run_and_its_helper_quietly(tmp_path):
    """Ctrl-C reaches every process of the group: the run exits 130 with its one line, the
    helper ignores it (no traceback of its own) and is gone with the run."""
    proc = subprocess.Popen([sys.executable, "-m", "nbody_engine.runner", "simulate", "--steps", "100000000",
                             "--Nperiod", "0", "--num-particles", "2", "--save-name", "c"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    progress = tmp_path / "data" / "c" / "progress.jsonl"
    try:
        def reported_chunks():
            assert proc.poll() is None, proc.communicate()[1]
            return progress.exists() and progress.read_text().count("TrajectoryChunk") >= 2

        wait_until(reported_chunks, "the run's first chunks", poll=0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    wait_until(lambda: not _group_alive(proc.pid), "the run's processes to end (one outlived it)", timeout=30,
               poll=0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in open(f"/proc/{pid}/maps").read()
    except FileNotFoundError:  # it has already left
        return True


@pytest.mark.parametrize("stage", [None, "_multiarray_umath", "ft2font", "_imaging"])
@pytest.mark.slow
def test_a_helper_terminated_while_it_starts_leaves_without_a_word(stage):
    """A run that fails early (bad input found after the helper started) terminates a helper that
    may still be importing numpy or matplotlib: it leaves quietly whatever it was importing. The
    stages are the extension modules it has loaded when the signal is sent."""
    proc = subprocess.Popen([sys.executable, "-m", "nbody_engine.reporting.drawing"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if stage is not None:
        wait_until(lambda: _loaded(proc.pid, stage), f"the helper to load {stage}", poll=0.001)
    proc.terminate()
    _, stderr = proc.communicate(timeout=60)
    assert stderr == b"" and proc.returncode in (0, -signal.SIGTERM), stderr.decode()
