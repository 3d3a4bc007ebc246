"""What many test modules share: the runner in a subprocess (:func:`run_cli`) or in this process
(:func:`run_in_process`), one tiny training config (:data:`TINY`), and :func:`wait_until` a
state is reached (tests wait for states, never for times)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

RUNNER = [sys.executable, "-m", "nbody_engine.runner"]

# The smallest training that exercises every phase of an epoch (collect, replay): two binaries,
# a small network, a few steps. Modules override what they test ({**TINY, "history_len": 3}).
TINY = {"num_particles": 2, "num_orbits": 2, "epochs": 2, "n_steps": 3, "steps_per_epoch": 2, "replay_steps": 3,
        "hidden_dims": [8, 8], "seed": 3, "lr": 1e-3}


def flags(values: dict) -> list[str]:
    """``values`` as the runner's command-line flags (``--hidden-dims 8 8``, ``--seed 3``), spelled
    as the schema declares them."""
    from nbody_engine.config.schema import flags_for

    out = []
    for key, value in values.items():
        out.append(flags_for(key)[0])
        out.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    return out


def run_cli(cwd: Path, *args: str, timeout: float = 300, exe: list[str] | None = None) -> subprocess.CompletedProcess:
    """``nbody-runner *args`` in a subprocess in ``cwd`` (the real command: its exit status, its
    stderr, a fresh interpreter)."""
    return subprocess.run([*(exe or RUNNER), *args], check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def cli_ok(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """:func:`run_cli`, which must succeed."""
    result = run_cli(cwd, *args, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


def run_in_process(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``nbody-runner *args`` as :func:`run_cli` reports it, run by ``runner.main`` in this process
    (no interpreter and torch to start: for the many bad-input cases whose exit-code contract a
    subprocess test already covers once per kind). Its stderr holds what a fresh interpreter's
    would (:func:`_stderr_as_in_a_fresh_interpreter`); the working directory and the SIGTERM
    handler are restored afterwards."""
    from nbody_engine import runner

    out, err = io.StringIO(), io.StringIO()
    before, handler = Path.cwd(), signal.getsignal(signal.SIGTERM)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _stderr_as_in_a_fresh_interpreter():
            try:
                code = runner.main(list(args))
            except SystemExit as exit_:  # argparse's own errors
                code = exit_.code
    finally:
        os.chdir(before)
        signal.signal(signal.SIGTERM, handler)
    return subprocess.CompletedProcess(["nbody-runner", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _stderr_as_in_a_fresh_interpreter():
    """Warnings and log records reach ``sys.stderr`` as they would in ``nbody-runner``'s own
    process, so a test that wants one line on stderr still sees a warning or a log line before it:
    pytest would otherwise record the warnings itself and its handlers would keep the root logger
    from being configured (``logging.basicConfig`` is a no-op when the root has handlers)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()  # Python's default filters, not pytest's
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = _warning_to_stderr
            yield
    finally:
        for added in root.handlers:
            added.close()
        root.handlers, root.level = handlers, level


def _warning_to_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 120, poll: float = 0.2):
    """Poll ``predicate`` until it returns something true (returned); fail naming ``what`` after
    ``timeout`` seconds (generous: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)
    return found
