"""Where a sweep's servers listen, how its runs start (forked from a warm parent, one GPU each),
what they record about themselves, and what ``--status`` says after the sweep was SIGKILLed."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from helpers import wait_until
from test_sweep import dask_cluster, gone, runner_pids, start_long_sweep, sweep_cli  # noqa: F401 - fixture

from nbody_engine.sweep import execute_run, plan_sweep

LOOPBACK = {"127.0.0.1", "::1"}


def listening(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses the process ``pid`` and its descendants listen on."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    found = set()
    for proc in procs:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.slow
def test_a_local_sweep_listens_on_loopback_only_and_forks_its_runs_from_warm_parents(tmp_path):
    proc = start_long_sweep(tmp_path, 3_000_000, "--workers", "2")
    root = tmp_path / "data" / "long"
    try:
        pids = runner_pids(root, at_least=2)
        addresses = listening(proc.pid)
        # the scheduler, its dashboard, and each worker's server and dashboard
        assert len(addresses) >= 4, addresses
        assert {ip for ip, _ in addresses} <= LOOPBACK, addresses
        for rid, pid in pids.items():
            runner = psutil.Process(pid)
            zygote = runner.parent()
            assert "nbody_engine.sweep.zygote" in " ".join(zygote.cmdline())  # forked, not a fresh Python
            assert zygote.parent().parent().pid == proc.pid  # zygote <- worker <- the sweep's LocalCluster
            assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # its own group: killable, shielded from ^C
            env = json.loads((root / "runs" / rid / "run_env.json").read_text())
            assert env["pid"] == pid and env["device"] == "cpu"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert all(gone(pid) for pid in pids.values())


@pytest.mark.slow
def test_a_sweep_leaves_no_zygote_sockets_behind(tmp_path, monkeypatch):
    """Each worker's zygote listens on a socket in a folder of its own; both go when it ends."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    (tmp_path / "base.toml").write_text('seed = 1\n\n[simulate]\nsteps = 20\n')
    (tmp_path / "grid.toml").write_text("seed = [1, 2]\n")
    result = sweep_cli(tmp_path, "--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate",
                       "--name", "tidy", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert not list(scratch.glob("nbody-zygote-*")), sorted(p.name for p in scratch.iterdir())


def test_a_stop_handed_to_the_worker_reaches_its_tasks_without_asking_the_scheduler():
    """Stop, Ctrl-C and the pruner hand each stop to every worker process (Client.run): a task
    finds it in memory each time it looks at its runner (every 0.1 s), and a sweep that ends
    takes its stops away."""
    from nbody_engine.sweep.signals import RunSignals, deliver_stop, forget_stops

    deliver_stop("sweep-a", "run-1", "pruned", "pruned by the search at epoch 3")
    deliver_stop("sweep-b", "all", "cancelled", "the sweep was interrupted")
    try:
        assert RunSignals("sweep-a", "run-1").stop_request() == ("pruned", "pruned by the search at epoch 3")
        assert RunSignals("sweep-b", "run-7").stop_request() == ("cancelled", "the sweep was interrupted")
        forget_stops("sweep-b")
        unasked = RunSignals("sweep-b", "run-7")
        unasked.next_look = math.inf  # no scheduler here: only what was handed to this process counts
        assert unasked.stop_request() is None
        assert RunSignals("sweep-a", "run-1").stop_request() is not None  # another sweep's stops stay
        assert RunSignals(None, "run-1").stop_request() is None  # a run executed by hand is never asked
    finally:
        forget_stops("sweep-a")
        forget_stops("sweep-b")


@pytest.mark.slow
def test_the_zygote_reports_each_run_that_ends_and_keeps_nothing_of_it(tmp_path):
    """Runs forked one after another each report their exit status (SIGTERM: killed, or the
    runner's 143), and after five runs the zygote holds the file descriptors it held before them
    (it watches each child's end through a descriptor of its own, closed when the child ends)."""
    from nbody_engine.sweep.warm import Zygote, runner_env

    zygote = Zygote()

    def request(*argv: str) -> dict:
        return {"cwd": str(tmp_path), "argv": list(argv), "env": runner_env(), "stdout": str(tmp_path / "out.log"),
                "stderr": str(tmp_path / "err.log")}

    try:
        zygote.ensure()
        fds = Path(f"/proc/{zygote.proc.pid}/fd")
        before = len(list(fds.iterdir()))
        for _ in range(5):
            assert zygote.run(request("--help")).wait(timeout=120) == 0
        # each run's connection is closed by its task, then by the zygote when it reads the end of it
        wait_until(lambda: len(list(fds.iterdir())) == before, "the zygote to hold only what it held before",
                   timeout=60)
        long_run = zygote.run(request("simulate", "--steps", "100000000", "--record-every", "100000",
                                      "--num-particles", "2", "-s", "long"))
        os.kill(long_run.pid, signal.SIGTERM)
        assert long_run.wait(timeout=120) in (-signal.SIGTERM, 143), (tmp_path / "err.log").read_text()
    finally:
        zygote.stop()
    assert not zygote.path or not Path(zygote.path).parent.exists()


@pytest.mark.slow
def test_ctrl_c_while_the_local_cluster_starts_kills_its_workers_and_records_the_runs(tmp_path):
    """Ctrl-C once the local cluster has begun to start a worker process, before it is ready: the
    start is abandoned (the cluster never says it is ready), the workers' processes are gone,
    the sweep exits 130 with its runs recorded pending, and without a traceback."""
    proc = start_long_sweep(tmp_path, 3_000_000, "--workers", "2")
    for line in proc.stdout:
        if "run(s)," in line:
            break
    sweep = psutil.Process(proc.pid)

    def starting_workers() -> list[psutil.Process]:
        return [child for child in sweep.children(recursive=True) if "--multiprocessing-fork" in child.cmdline()]

    wait_until(starting_workers, "the local cluster to start a worker process", timeout=120, poll=0.02)
    family = sweep.children(recursive=True)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "local cluster of" not in out, out  # stopped while starting, not after
    assert "Traceback" not in err and "sweep 'long' stopped (the sweep was cancelled)" in out, out + err
    doc = json.loads((tmp_path / "data" / "long" / "results.json").read_text())
    assert doc["pending"] == 4, doc
    assert all(gone(child.pid) for child in family)


@pytest.mark.slow
def test_ctrl_c_while_the_workers_warm_up_records_the_runs_and_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C as soon as the local cluster is up, while each worker's zygote is still importing
    torch: the runs waiting for it are recorded cancelled (or pending, never started), the
    zygotes are killed rather than waited for, and no process or socket folder is left."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    proc = start_long_sweep(tmp_path, 3_000_000, "--workers", "2")
    for line in proc.stdout:
        if "local cluster of 2 worker(s)" in line:
            break
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "sweep 'long' stopped (the sweep was cancelled)" in out, out + err
    doc = json.loads((tmp_path / "data" / "long" / "results.json").read_text())
    assert doc["cancelled"] + doc["pending"] == 4, doc
    assert all(gone(child.pid) for child in family)
    assert not list(scratch.glob("nbody-zygote-*")), sorted(p.name for p in scratch.iterdir())


def test_each_run_of_a_worker_with_two_gpus_gets_one_of_them(tmp_path, monkeypatch):
    """Two runs at once on a worker whose job has CUDA_VISIBLE_DEVICES=0,1 see one GPU each
    (the environment their processes recorded), and a third, after them, the first again."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    plan = plan_sweep({"num_particles": 2, "num_orbits": 1, "dt": 0.001, "record_every": 1000, "device": "cpu"},
                      {"steps": [60_000, 60_001, 20]}, mode="simulate", name="gpus", cwd=tmp_path,
                      data_dir=tmp_path / "data")
    for run in plan.runs:
        plan.run_dir(run).mkdir(parents=True)
        (plan.run_dir(run) / "run.toml").write_text(run.toml)
    records: dict[str, dict] = {}

    def execute(run) -> None:
        records[run.id] = execute_run(str(plan.run_dir(run)), "simulate")

    together = [threading.Thread(target=execute, args=(run,)) for run in plan.runs[:2]]
    for thread in together:
        thread.start()
    for thread in together:
        thread.join(timeout=300)
    execute(plan.runs[2])
    seen = [json.loads((plan.run_dir(run) / "run_env.json").read_text()) for run in plan.runs]
    assert all(records[run.id]["status"] == "ok" for run in plan.runs), records
    assert sorted(s["cuda_visible_devices"] for s in seen[:2]) == ["0", "1"]
    assert seen[2]["cuda_visible_devices"] == "0"
    assert [records[run.id]["gpu"] for run in plan.runs] == [s["cuda_visible_devices"] for s in seen]
    record = records[plan.runs[0].id]  # the run's provenance
    assert record["packages"]["torch"] and record["packages"]["numpy"] and record["python"]
    assert record["command"] == "nbody-runner simulate --config run.toml"
    if "git_commit" in record:
        assert len(record["git_commit"]) == 40 and isinstance(record["git_dirty"], bool)


@pytest.mark.slow
def test_status_after_a_sigkilled_sweep_reads_the_run_folders(tmp_path, dask_cluster):  # noqa: F811
    """On an existing cluster the runs outlive a SIGKILLed sweep for a while: one that ends ok
    then shows ok in --status (results.json still says pending), and one that would run on is
    interrupted once the sweep's heartbeat has stopped."""
    (tmp_path / "base.toml").write_text('seed = 1\nnum_orbits = 1\nnum_particles = 2\ndt = 0.001\n'
                                        'record_every = 1000\n')
    (tmp_path / "grid.toml").write_text("steps = [150000, 20000000]\n")
    cmd = [sys.executable, "-m", "nbody_engine.runner", "sweep", "--config", "base.toml", "--grid", "grid.toml",
           "--mode", "simulate", "--name", "killed", "--scheduler", dask_cluster]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    root = tmp_path / "data" / "killed"
    pids = runner_pids(root, at_least=2)
    proc.kill()
    proc.wait(timeout=30)
    doc = json.loads((root / "results.json").read_text())
    assert doc["pending"] == 2  # what the sweep last wrote
    short, long_ = (next(r["id"] for r in doc["runs"] if r["steps"] == n) for n in (150000, 20000000))
    assert gone(pids[short], timeout=120)
    assert gone(pids[long_], timeout=150), "a runner outlived its sweep's heartbeat"
    status = sweep_cli(tmp_path, "--status", "killed")
    rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[1:] if line[:1].isalnum()}
    assert rows[short] == "ok" and rows[long_] == "cancelled", status.stdout
    assert "2/2 runs ended (1 ok, 1 cancelled)" in status.stdout
    record = json.loads((root / "runs" / long_ / "status.json").read_text())
    assert record["error"].startswith("cancelled: its sweep has not been heard from"), record


@pytest.mark.slow
def test_provenance_of_a_sweep_is_recorded_per_invocation(tmp_path):
    (tmp_path / "base.toml").write_text('seed = 3\nnum_particles = 2\n')
    (tmp_path / "grid.toml").write_text("steps = [10]\n")
    args = ("--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate", "--workers", "1", "--name", "prov")
    for _ in range(2):
        result = sweep_cli(tmp_path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    root = tmp_path / "data" / "prov"
    sweeps = json.loads((root / "provenance.json").read_text())["sweeps"]
    assert len(sweeps) == 2
    latest = sweeps[-1]
    assert latest == json.loads((root / "results.json").read_text())["provenance"]
    assert latest["base_config"]["text"] == (tmp_path / "base.toml").read_text()
    assert latest["base_config"]["path"] == str(tmp_path / "base.toml")
    assert latest["grid"]["text"] == "steps = [10]\n"
    assert latest["command"] == "nbody-runner sweep " + " ".join(args)
    assert latest["backend"] == {"kind": "local", "workers": 1, "run_time_limit_s": None}
    assert set(latest["packages"]) >= {"torch", "numpy", "dask", "optuna"} and latest["python"]
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():
        assert len(latest["git_commit"]) == 40 and isinstance(latest["git_dirty"], bool)


def test_slurm_notices_say_where_the_runs_wait(monkeypatch, tmp_path):
    """Jobs still queued, jobs whose state scontrol cannot give, jobs started whose worker has
    not connected: each says so (before, a queued job read as 'no Dask worker is connected')."""
    from types import SimpleNamespace

    from nbody_engine.sweep import cluster

    jobs = {"w1": SimpleNamespace(job_id="101"), "w2": SimpleNamespace(job_id="102")}
    fake = SimpleNamespace(workers=jobs, worker_spec=dict(jobs), dashboard_link="http://127.0.0.1:1/status")
    backend = cluster.SlurmBackend(SimpleNamespace(nthreads=dict), fake, 2, 0, tmp_path)
    states = {"101": ("PENDING", "Resources"), "102": ("PENDING", "Priority")}
    monkeypatch.setattr(cluster, "job_state", lambda job_id: states[job_id])
    assert backend.replace_lost() == [] and backend.waiting
    assert backend.lost_reason() == ("SLURM has not started the worker job(s) yet: 101 pending (Resources), "
                                     "102 pending (Priority)")
    states.update({"101": ("UNKNOWN", "Socket timed out"), "102": ("RUNNING", "None")})
    backend.replace_lost()
    assert backend.waiting and backend.lost_reason() == ("scontrol cannot say how the worker job(s) are: "
                                                         "101 unknown (Socket timed out)")
    states["101"] = ("RUNNING", "None")
    backend.replace_lost()
    assert not backend.waiting
    assert backend.lost_reason().startswith("SLURM job(s) 101, 102 started but no Dask worker of theirs has connected")
