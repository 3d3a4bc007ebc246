"""One run of a sweep, as a Dask task on a worker: the headless runner in a process of its own.

The runner is a child forked from the worker's warm zygote (:mod:`.warm`), so it starts with
torch already imported, yet stays isolated from the task's life: its own session and process
group (a Ctrl-C in the terminal reaches the sweep, which then stops the runs), SIGTERM when the
zygote dies (which it does with its worker), and interrupted (SIGINT to its group, SIGKILL after
a grace) when the sweep asks (Stop, Ctrl-C, the pruner: :mod:`.signals`), when the sweep has
gone silent, when the worker's own parent goes away, or when its time limit runs out. The task
holds ``runs/<id>/.lock`` while it owns the run, and a run never starts over a runner that
still holds the run's output directory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config.errors import InputError
from ..runs.directory import DirectoryLock, lock_holder, write_json
from ..runs.reader import final_metrics
from .provenance import environment
from .results import (STATUS_CANCELLED, STATUS_FAILED, STATUS_OK, STATUS_PRUNED, STATUS_RUNNING,
                      read_status, toml_sha1)
from .signals import RunSignals
from .warm import GPUS, ZYGOTE, RunnerLost, runner_env
from .zygote import RUN_ENV_FILE

POLL_S = 0.1  # how often a task looks at its runner, its sweep's stops and its parent (a select and a dict
# lookup: the scheduler is asked once a second, signals.LOOK_S), so that a stop reaches the runner at once
STOP_GRACE_S = 20.0  # how long an interrupted runner has to save a checkpoint before SIGKILL
ORPHAN_WAIT_S = 60.0  # how long a run waits for an earlier runner of the same run to end


def collect_metrics(output_dir: str | Path) -> dict:
    """Final metrics of a runner output directory (:func:`~nbody_engine.runs.reader.final_metrics`):
    the last epoch's loss, acceptance_rate, rel_dE_max and the latest simulation's steps,
    max_rel_energy_error and steps_per_period (for a batch of systems the worst error and the
    mean steps per period)."""
    return final_metrics(output_dir)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _dask_worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # not inside a Dask task (a run executed by hand)
        return None


def provenance(worker) -> dict:
    """Where this run executes: machine, Dask worker address, SLURM job id."""
    return {"host": os.uname().nodename, "worker": getattr(worker, "address", None),
            "slurm_job": os.environ.get("SLURM_JOB_ID")}


def _wait_for_earlier_runner(output: Path) -> None:
    """A runner of an earlier attempt (orphaned by a killed sweep) may still hold the output
    directory for a moment: wait for it, bounded; raises InputError if it does not end."""
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while (pid := lock_holder(output)) is not None:
        if time.monotonic() > deadline:
            raise InputError(f"'{output}' is still held by an earlier runner (pid {pid}); "
                             "end that process, then run the sweep again")
        time.sleep(POLL_S)


class _Watch:
    """Why the runner must stop now, if it must: (status, why) or None."""

    def __init__(self, signals: RunSignals, time_limit: float | None) -> None:
        self.signals, self.time_limit = signals, time_limit
        self.parent = os.getppid()
        self.started = time.monotonic()

    def reason(self) -> tuple[str, str] | None:
        if self.time_limit is not None and time.monotonic() - self.started > self.time_limit:
            return STATUS_FAILED, f"stopped: its time limit of {self.time_limit:g} s ran out"
        asked = self.signals.stop_request()
        if asked is not None:
            status, why = asked
            return status, (why if status == STATUS_PRUNED else f"cancelled: {why}")
        if os.getppid() != self.parent:
            return STATUS_CANCELLED, "cancelled: the worker's parent process ended"
        return None


def _supervise(proc, watch: _Watch) -> tuple[int | None, tuple[str, str] | None]:
    """Wait for the runner; interrupt it (SIGINT to its group, SIGKILL after a grace) when the
    watch says so. Returns (exit code, (status, why) when interrupted)."""
    stop, deadline = None, math.inf
    watch.started = time.monotonic()  # the run's clock starts with its process, not with a cold zygote
    while True:
        try:
            return proc.wait(timeout=POLL_S), stop
        except subprocess.TimeoutExpired:
            pass
        if stop is None:
            stop = watch.reason()
            if stop is not None:
                _killpg(proc.pid, signal.SIGINT)  # the runner checkpoints and exits 130
                deadline = time.monotonic() + STOP_GRACE_S
        elif time.monotonic() > deadline:
            _killpg(proc.pid, signal.SIGKILL)


def _wait_for_zygote(watch: _Watch) -> tuple[str, str] | None:
    """Wait while the worker's zygote starts (seconds: it imports torch), unless the run is asked
    to stop meanwhile: then (status, why), and the run never starts."""
    while ZYGOTE.busy():
        stop = watch.reason()
        if stop is not None:
            return stop
        time.sleep(POLL_S)
    return None


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:  # it has just ended
        pass


def execute_run(run_dir: str, mode: str, token: str | None = None, time_limit: float | None = None) -> dict:
    """Run ``run_dir/run.toml`` with the headless runner in a warm child process (cwd =
    ``run_dir``), capture its output, and write and return the run's status row. ``token``
    names the sweep whose stop requests and heartbeat the task follows (None: none);
    ``time_limit`` (s) interrupts a run that takes longer. Never raises for a failed run."""
    run_dir_path = Path(run_dir)
    try:
        with DirectoryLock(run_dir_path, what="sweep task"):
            return _execute(run_dir_path, mode, _Watch(RunSignals(token, run_dir_path.name), time_limit))
    except InputError as err:  # another sweep's task owns this run now: leave its files alone
        return {**read_status(run_dir_path), "id": run_dir_path.name, "status": STATUS_FAILED, "error": str(err)}


def _execute(run_dir: Path, mode: str, watch: _Watch) -> dict:
    rid = run_dir.name
    toml_text = (run_dir / "run.toml").read_text()
    argv = [mode, "--config", "run.toml"]
    row: dict[str, Any] = {"id": rid, "status": STATUS_RUNNING,
                           "attempts": int(read_status(run_dir).get("attempts") or 0) + 1,
                           "started": datetime.now(UTC).isoformat(timespec="seconds"), **provenance(_dask_worker()),
                           "mode": mode, "run_toml_sha1": toml_sha1(toml_text),
                           "command": "nbody-runner " + " ".join(argv), **environment()}
    output = run_dir / "data" / rid
    _wait_for_earlier_runner(output)
    try:
        resume = bool(tomllib.loads(toml_text).get("resume", False))
    except tomllib.TOMLDecodeError:
        resume = False
    if output.exists() and not resume:
        shutil.rmtree(output)  # a rerun starts clean: no stale checkpoints or metrics
    (run_dir / RUN_ENV_FILE).unlink(missing_ok=True)
    gpu = GPUS.acquire()
    row["gpu"] = gpu
    write_json(run_dir / "status.json", row)
    t0 = time.perf_counter()
    code, stop, error = None, None, ""
    try:
        stop = _wait_for_zygote(watch)
        if stop is None:
            env = runner_env() if gpu is None else {**runner_env(), "CUDA_VISIBLE_DEVICES": gpu}
            proc = ZYGOTE.run({"cwd": str(run_dir), "argv": argv, "env": env, "stdout": str(run_dir / "stdout.log"),
                               "stderr": str(run_dir / "stderr.log")})
            code, stop = _supervise(proc, watch)
    except OSError as exc:
        error = f"cannot start the runner: {exc}"
    except RunnerLost as exc:
        error = str(exc)
    finally:
        GPUS.release(gpu)
    row.update(_outcome(run_dir, code, stop, error), wall_time_s=round(time.perf_counter() - t0, 3),
               finished=datetime.now(UTC).isoformat(timespec="seconds"), **_run_env(run_dir),
               **collect_metrics(output))
    write_json(run_dir / "status.json", row)
    return row


def _run_env(run_dir: Path) -> dict:
    """What the runner's process recorded about itself: pid, CUDA_VISIBLE_DEVICES, device."""
    try:
        return json.loads((run_dir / RUN_ENV_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _outcome(run_dir: Path, code: int | None, stop: tuple[str, str] | None, error: str) -> dict:
    """status, exit_code and error of a run that ended."""
    if code == 0:
        return {"status": STATUS_OK, "exit_code": 0, "error": ""}
    if stop is not None:
        return {"status": stop[0], "exit_code": code, "error": stop[1]}
    if not error:
        error = _last_line(run_dir / "stderr.log")
        if code is not None and code < 0:
            error = f"killed by {signal.Signals(-code).name}" + (f" ({error})" if error else "")
        error = error or f"exit status {code}"
    return {"status": STATUS_FAILED, "exit_code": code, "error": error}
