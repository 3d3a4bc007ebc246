"""Sweeps on a real SLURM cluster: worker jobs submitted with sbatch by dask-jobqueue, a job
cancelled mid-run with scancel (its run is redone in a replacement job) and a walltime that
runs out (the sweep says why and stops). Needs a running SLURM (scripts/ci_slurm.sh, which
.ci/run starts as root); skipped where there is none, but not in CI (NBODY_REQUIRE_SLURM=1)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import wait_until

pytest.importorskip("dask_jobqueue", reason="the SLURM tests need dask-jobqueue (the test extra)")

BASE = 'seed = 1\nnum_orbits = 1\nnum_particles = 2\ndt = 0.001\nrecord_every = 1000\n'
SLURM_FLAGS = ("--slurm", "--slurm-interface", "lo", "--slurm-cores", "1", "--slurm-memory", "1GB")


def slurm_problem() -> str | None:
    """Why SLURM cannot run jobs here, or None when a node is up."""
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (as root: scripts/ci_slurm.sh)"
    try:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True,
                                timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo failed: {err}"
    if not any(s.rstrip("*") in ("idle", "mix", "alloc") for s in states):
        return f"no SLURM node is up (sinfo: {states or 'no answer'}; as root: scripts/ci_slurm.sh)"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm():
    problem = slurm_problem()
    if problem and os.environ.get("NBODY_REQUIRE_SLURM") == "1":
        pytest.fail(f"NBODY_REQUIRE_SLURM=1 but {problem}")
    if problem:
        pytest.skip(problem)


def start_sweep(cwd: Path, steps: int, seeds: list[int], *flags: str) -> subprocess.Popen:
    (cwd / "base.toml").write_text(BASE + f"steps = {steps}\n")
    (cwd / "grid.toml").write_text(f"seed = {seeds}\n")
    cmd = [sys.executable, "-m", "nbody_engine.runner", "sweep", "--config", "base.toml", "--grid", "grid.toml",
           "--mode", "simulate", "--name", "s", *SLURM_FLAGS, *flags]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def running_job(root: Path, timeout: float = 180) -> str:
    """The SLURM job id of the first run seen running."""
    def job() -> str | None:
        for path in (root / "runs").glob("*/status.json"):
            record = json.loads(path.read_text())
            if record.get("status") == "running" and record.get("slurm_job"):
                return record["slurm_job"]
        return None

    return wait_until(job, "a run to start in a SLURM job", timeout=timeout, poll=0.5)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"the sweep did not end within {timeout} s:\n{out}\n{err}")


def listening(pid: int) -> set[tuple[str, int]]:
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


@pytest.mark.slow
def test_a_scancelled_job_is_replaced_and_its_run_redone(tmp_path):
    proc = start_sweep(tmp_path, 300_000, [1, 2, 3, 4], "--workers", "2", "--slurm-walltime", "00:10:00")
    root = tmp_path / "data" / "s"
    job = running_job(root)
    addresses = listening(proc.pid)  # the scheduler and its dashboard, on the interface given (lo)
    assert len(addresses) >= 2 and {ip for ip, _ in addresses} <= {"127.0.0.1", "::1"}, addresses
    subprocess.run(["scancel", job], check=True, timeout=30)
    out, err = finish(proc, 400)
    assert proc.returncode == 0, out + err
    assert f"SLURM job {job} ended (CANCELLED" in out and "it was cancelled (scancel)" in out, out
    assert "1 replacement job(s) submitted" in out, out
    assert len(list((root / "slurm-logs").glob("*.err"))) == 3  # two jobs and the replacement ran
    doc = json.loads((root / "results.json").read_text())
    assert (doc["ok"], doc["runs_total"]) == (4, 4), doc
    jobs = {row["slurm_job"] for row in doc["runs"]}
    assert all(jobs) and job not in jobs  # every run ended ok in a job that was not cancelled
    assert max(row["attempts"] for row in doc["runs"]) == 2  # the interrupted run ran again
    assert all(row["worker"].startswith("tcp://127.0.0.1:") for row in doc["runs"])


@pytest.mark.slow
def test_a_walltime_that_runs_out_is_reported_and_stops_the_sweep(tmp_path):
    proc = start_sweep(tmp_path, 20_000_000, [1], "--slurm-walltime", "00:01:00", "--slurm-resubmits", "0")
    root = tmp_path / "data" / "s"
    job = running_job(root)
    out, err = finish(proc, 300)
    assert proc.returncode == 1, out + err
    assert f"SLURM job {job} ended (TIMEOUT" in out and "its walltime ran out" in out, out
    assert "no resubmission left" in out and "stopped (no worker left" in out, out
    doc = json.loads((root / "results.json").read_text())
    row = doc["runs"][0]
    assert (row["status"], row["slurm_job"]) == ("cancelled", job), row
    assert doc["stopped"].startswith("no worker left: SLURM job"), doc


@pytest.mark.slow
def test_ctrl_c_stops_a_slurm_sweep_with_130_and_cancels_its_jobs(tmp_path):
    proc = start_sweep(tmp_path, 20_000_000, [1, 2], "--workers", "2", "--slurm-walltime", "00:10:00")
    root = tmp_path / "data" / "s"
    job = running_job(root)
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc, 120)
    assert proc.returncode == 130, out + err
    assert "interrupted; finished runs are kept and a rerun resumes" in err
    assert "sweep 's' stopped (the sweep was cancelled)" in out, out
    doc = json.loads((root / "results.json").read_text())
    assert "cancelled" in {row["status"] for row in doc["runs"]}, doc
    state = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    assert "JobState=RUNNING" not in state and "JobState=PENDING" not in state, state


@pytest.mark.slow
def test_a_job_that_cannot_import_the_project_is_reported_with_its_log_line(tmp_path):
    shadow = tmp_path / "shadow" / "nbody_engine"  # on the job's PYTHONPATH: a project missing a dependency
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("import a_dependency_this_node_lacks\n")
    proc = start_sweep(tmp_path, 20, [1, 2], "--slurm-walltime", "00:05:00", "--slurm-resubmits", "1",
                       "--slurm-prologue", f"export PYTHONPATH={shadow.parent}")
    out, err = finish(proc, 240)
    assert proc.returncode == 1, out + err
    assert "its log says: ModuleNotFoundError: No module named 'a_dependency_this_node_lacks'" in out, out
    assert "1 replacement job(s) submitted; 0 resubmission(s) left" in out, out
    assert "stopped (no worker left: SLURM job" in out, out
    doc = json.loads((tmp_path / "data" / "s" / "results.json").read_text())
    assert doc["pending"] == 2 and doc["stopped"].startswith("no worker left"), doc
