"""One run of a sweep, as a Dask task on a worker: the headless runner in a subprocess.

The runner is isolated from the task's life: it runs in its own process group (a Ctrl-C in
the terminal reaches the sweep, which then cancels the runs), gets SIGTERM when the worker
process dies (Linux's parent-death signal), and is interrupted when the task is cancelled or
the worker's own parent (the sweep, or ``dask worker``'s nanny) goes away. The task holds
``runs/<id>/.lock`` while it owns the run, and a run never starts over a runner that still
holds the run's output directory.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config.errors import InputError
from ..runs.directory import DirectoryLock, lock_holder, write_json
from ..runs.reader import final_metrics
from .results import (STATUS_CANCELLED, STATUS_FAILED, STATUS_OK, STATUS_RUNNING, read_status, toml_sha1)

POLL_S = 1.0  # how often a task looks at its runner, its cancellation and its parent
STOP_GRACE_S = 20.0  # how long an interrupted runner has to save a checkpoint before SIGKILL
ORPHAN_WAIT_S = 60.0  # how long a run waits for an earlier runner of the same run to end
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the runner, before exec: SIGTERM when the process that started it dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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


def _task_cancelled(worker) -> bool:
    """Whether the Dask task running this thread was cancelled or released."""
    if worker is None:
        return False
    from distributed.worker import thread_state

    key = getattr(thread_state, "key", None)
    ts = worker.state.tasks.get(key) if key is not None else None
    return key is not None and (ts is None or ts.state in ("cancelled", "released", "forgotten"))


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


def _runner_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_root = str(Path(__file__).resolve().parents[2])  # importable even from an uninstalled checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _supervise(proc: subprocess.Popen, worker) -> tuple[int, str | None]:
    """Wait for the runner; interrupt it (SIGINT to its group, SIGKILL after a grace) when the
    task is cancelled or the worker's parent has gone. Returns (exit code, why interrupted)."""
    parent = os.getppid()
    why, deadline = None, math.inf
    while True:
        try:
            return proc.wait(timeout=POLL_S), why
        except subprocess.TimeoutExpired:
            pass
        if why is None:
            if _task_cancelled(worker):
                why = "the sweep was interrupted"
            elif os.getppid() != parent:
                why = "the worker's parent process ended"
            if why is not None:
                os.killpg(proc.pid, signal.SIGINT)  # the runner checkpoints and exits 130
                deadline = time.monotonic() + STOP_GRACE_S
        elif time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)


def execute_run(run_dir: str, mode: str) -> dict:
    """Run ``run_dir/run.toml`` with the headless runner in a subprocess (cwd = ``run_dir``),
    capture its output, and write and return the run's status row. Never raises for a failed run."""
    run_dir_path = Path(run_dir)
    try:
        with DirectoryLock(run_dir_path, what="sweep task"):
            return _execute(run_dir_path, mode)
    except InputError as err:  # another sweep's task owns this run now: leave its files alone
        return {**read_status(run_dir_path), "id": run_dir_path.name, "status": STATUS_FAILED, "error": str(err)}


def _execute(run_dir: Path, mode: str) -> dict:
    rid = run_dir.name
    toml_text = (run_dir / "run.toml").read_text()
    worker = _dask_worker()
    row: dict[str, Any] = {"id": rid, "status": STATUS_RUNNING,
                           "attempts": int(read_status(run_dir).get("attempts") or 0) + 1,
                           "started": datetime.now(UTC).isoformat(timespec="seconds"), **provenance(worker),
                           "mode": mode, "run_toml_sha1": toml_sha1(toml_text)}
    output = run_dir / "data" / rid
    _wait_for_earlier_runner(output)
    try:
        resume = bool(tomllib.loads(toml_text).get("resume", False))
    except tomllib.TOMLDecodeError:
        resume = False
    if output.exists() and not resume:
        shutil.rmtree(output)  # a rerun starts clean: no stale checkpoints or metrics
    write_json(run_dir / "status.json", row)
    cmd = [sys.executable, "-m", "nbody_engine.runner", mode, "--config", "run.toml"]
    t0 = time.perf_counter()
    code, why, error = None, None, ""
    with open(run_dir / "stdout.log", "wb") as out, open(run_dir / "stderr.log", "wb") as err:
        try:
            proc = subprocess.Popen(cmd, cwd=run_dir, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    env=_runner_env(), start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            error = f"cannot start the runner: {exc}"
        else:
            code, why = _supervise(proc, worker)
    row.update(_outcome(run_dir, code, why, error), wall_time_s=round(time.perf_counter() - t0, 3),
               finished=datetime.now(UTC).isoformat(timespec="seconds"), **collect_metrics(output))
    write_json(run_dir / "status.json", row)
    return row


def _outcome(run_dir: Path, code: int | None, why: str | None, error: str) -> dict:
    """status, exit_code and error of a run that ended."""
    if code == 0:
        return {"status": STATUS_OK, "exit_code": 0, "error": ""}
    if why is not None:
        return {"status": STATUS_CANCELLED, "exit_code": code, "error": f"cancelled: {why}"}
    if not error:
        error = _last_line(run_dir / "stderr.log")
        if code is not None and code < 0:
            error = f"killed by {signal.Signals(-code).name}" + (f" ({error})" if error else "")
        error = error or f"exit status {code}"
    return {"status": STATUS_FAILED, "exit_code": code, "error": error}
