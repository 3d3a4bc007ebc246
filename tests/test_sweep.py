"""Sweeps (nbody_engine.sweep, ``nbody-runner sweep``): the plan, bad grids through the real CLI,
and real sweeps on a LocalCluster and on a scheduler + workers started here on loopback."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from helpers import run_cli, wait_until
from nbody_engine.config.errors import InputError
from nbody_engine.sweep import SlurmOptions, plan_sweep, run_id, run_sweep, slurm_cluster_kwargs

BASE = 'seed = 1\nnum_orbits = 2\n\n[simulate]\nsteps = 20\n'
# (num_particles 3, multi_orbit_sim true) passes the schema but fails at run time: multi-orbit
# simulation samples two-body orbits. The three other points succeed.
GRID = 'num_particles = [2, 3]\n\n[simulate]\nmulti_orbit_sim = [false, true]\n'
FAILING = {"num_particles": 3, "simulate.multi_orbit_sim": True}


def sweep_cli(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return run_cli(cwd, "sweep", *args, timeout=timeout)


def write_inputs(cwd: Path, grid: str = GRID) -> None:
    (cwd / "base.toml").write_text(BASE)
    (cwd / "grid.toml").write_text(grid)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def check_results(root: Path) -> dict[str, dict]:
    """The finished sweep: three ok rows with metrics, one failed row with the runner's error."""
    rows = read_csv(root / "results.csv")
    assert len(rows) == 4
    doc = json.loads((root / "results.json").read_text())
    assert (doc["ok"], doc["failed"], doc["cancelled"], doc["pending"]) == (3, 1, 0, 0)
    by_id = {r["id"]: r for r in doc["runs"]}
    assert [r["id"] for r in rows] == list(by_id)
    for row in doc["runs"]:
        run_dir = root / row["run_dir"]
        assert (run_dir / "stdout.log").is_file() and (run_dir / "stderr.log").is_file()
        config = tomllib.loads((run_dir / "run.toml").read_text())
        assert config["save_name"] == row["id"]
        assert config["num_particles"] == row["num_particles"]
        assert config["simulate"]["multi_orbit_sim"] == row["simulate.multi_orbit_sim"]
        assert row["id"] == run_id("simulate", config)  # the hash of the run's whole resolved config
        failing = row["num_particles"] == 3 and row["simulate.multi_orbit_sim"]
        if failing:
            assert row["status"] == "failed"
            assert row["exit_code"] == 2
            assert "multi_orbit_sim" in row["error"] and row["error"].startswith("nbody-runner: error:")
            assert row["steps"] is None
        else:
            assert row["status"] == "ok", row
            assert row["error"] == "" and row["exit_code"] == 0
            assert row["steps"] == 20
            assert math.isfinite(row["max_rel_energy_error"])
            assert row["wall_time_s"] > 0
            assert list((run_dir / "data" / row["id"] / "sim").glob("*/summary.json"))
            assert (run_dir / "data" / row["id"] / "config.toml").is_file()
    return by_id


# --------------------------------------------------------------------------- the plan (no cluster)

def test_plan_expands_the_product_with_stable_ids(tmp_path):
    (tmp_path / "base.toml").write_text(BASE + 'ic_path = "ics/two.txt"\n')
    grid = {"eps": [0.05, 0.1, 0.2], "train": {"history_len": [0, 5]}, "simulate": {"steps": [100, 2e2]}}
    plan = plan_sweep(tmp_path / "base.toml", grid, mode="both", name="g", cwd=tmp_path, data_dir=tmp_path / "data")
    assert plan.total == len(plan.runs) == 12
    assert len({r.id for r in plan.runs}) == 12
    assert plan.runs[0].values == {"eps": 0.05, "train.history_len": 0, "simulate.steps": 100}
    assert plan.runs[-1].values == {"eps": 0.2, "train.history_len": 5, "simulate.steps": 200}
    doc = tomllib.loads(plan.runs[-1].toml)
    assert doc["eps"] == 0.2 and doc["seed"] == 1 and doc["save_name"] == plan.runs[-1].id
    assert doc["train"] == {"history_len": 5}
    assert doc["simulate"]["steps"] == 200
    assert doc["simulate"]["ic_path"] == str(tmp_path / "ics" / "two.txt")  # relative paths made absolute
    assert plan.root == (tmp_path / "data" / "g").resolve()
    assert not (tmp_path / "data").exists()  # planning writes nothing
    # ids hash the mode and the whole resolved config: reordering or extending the grid keeps them
    wider = {"simulate": {"steps": [300, 200, 100]}, "train": {"history_len": [5, 0]}, "eps": [0.2, 0.1, 0.05]}
    again = plan_sweep(tmp_path / "base.toml", wider, mode="both", name="g", cwd=tmp_path)
    assert {r.id for r in plan.runs} < {r.id for r in again.runs}
    narrow = {"eps": [0.05], "train": {"history_len": [0]}, "simulate": {"steps": [100]}}
    one = plan_sweep(tmp_path / "base.toml", narrow, mode="both", name="g", cwd=tmp_path).runs[0]
    assert one.id == plan.runs[0].id
    top_only = {"eps": [0.05]}
    assert (plan_sweep(tmp_path / "base.toml", top_only, mode="simulate", name="g", cwd=tmp_path).runs[0].id
            != plan_sweep(tmp_path / "base.toml", top_only, mode="both", name="g", cwd=tmp_path).runs[0].id)
    # a changed base config makes new runs (nothing of the old ones is overwritten)
    (tmp_path / "base.toml").write_text(BASE.replace("num_orbits = 2", "num_orbits = 3") + 'ic_path = "ics/two.txt"\n')
    edited = plan_sweep(tmp_path / "base.toml", narrow, mode="both", name="g", cwd=tmp_path).runs[0]
    assert edited.id != one.id and edited.values == one.values


def test_runs_share_one_seed_unless_the_base_or_the_grid_sets_it(tmp_path):
    """A sweep compares its points on the same initial conditions: without a 'seed' in the base,
    every run gets the sweep's --seed; a base seed, a phase's seed and a swept seed are kept."""
    def seeds(config, grid, **kw):
        plan = plan_sweep(config, grid, mode="simulate", name="s", cwd=tmp_path, **kw)
        return [tomllib.loads(r.toml).get("seed") for r in plan.runs]
    assert seeds(None, {"eps": [0.01, 0.1]}) == [0, 0]
    assert seeds(None, {"eps": [0.01, 0.1]}, seed=7) == [7, 7]
    assert seeds({"seed": 3}, {"eps": [0.01, 0.1]}, seed=7) == [3, 3]
    assert seeds(None, {"seed": [1, 2]}, seed=7) == [1, 2]
    plan = plan_sweep({"simulate": {"seed": 5}}, {"eps": [0.1]}, mode="simulate", name="s", cwd=tmp_path)
    doc = tomllib.loads(plan.runs[0].toml)
    assert doc["simulate"]["seed"] == 5 and doc["seed"] == 0
    with pytest.raises(InputError, match=r"--seed\) must be between 0 and 4294967295"):
        plan_sweep(None, {"eps": [0.1]}, mode="simulate", name="s", cwd=tmp_path, seed=2**32)


def test_samples_are_seeded_draws(tmp_path):
    grid = {"eps": [0.01 * i for i in range(1, 11)], "steps": [10, 20, 30]}
    def ids(seed):
        plan = plan_sweep(None, grid, mode="simulate", samples=4, seed=seed, name="s", cwd=tmp_path)
        return [r.id for r in plan.runs]
    assert len(ids(0)) == 4 and len(set(ids(0))) == 4
    assert ids(0) == ids(0)
    assert ids(0) != ids(1)
    assert len(plan_sweep(None, grid, mode="simulate", samples=100, name="s", cwd=tmp_path).runs) == 30


@pytest.mark.parametrize(("grid", "message"), [
    ({"stepz": [1]}, "unknown key 'stepz' in grid (top level); did you mean 'steps'?"),
    ({"steps": []}, "'steps' lists no values"),
    ({"steps": 5}, "'steps' must be a list of the values to sweep"),
    ({"steps": ["x"]}, "'steps' must be an integer, not 'x'"),
    ({"steps": [1.5]}, "'steps' must be an integer, not 1.5"),
    ({"eps": [-1.0]}, "'eps'"),
    ({"hidden_dims": [64, 64]}, "sweep it as a list of lists"),
    ({"simulate": {"steps": [1, 1.0]}}, "lists 1 twice"),
    ({"train": {"epochs": [1]}}, "--mode simulate runs no train phase"),
    ({"steps": [1], "simulate": {"steps": [2]}}, "both at the top level and in [simulate]"),
    ({"save_name": ["a"]}, "'save_name' is set by the sweep"),
    ({"sim": {"steps": [1]}}, "did you mean [simulate]?"),
    ({}, "lists no keys to sweep"),
    ({"E_lower": [1.0]}, "must not exceed 'E_upper'"),
])
def test_bad_grids_are_input_errors(tmp_path, grid, message):
    with pytest.raises(InputError) as err:
        plan_sweep(None, grid, mode="simulate", name="bad", cwd=tmp_path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_slurm_options(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # as if the extra were not installed
    with pytest.raises(InputError, match=r"pip install 'nbody-explorer\[slurm\]'"):
        slurm_cluster_kwargs(SlurmOptions(cores=2, memory="4GB"))
    monkeypatch.undo()
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster

    with pytest.raises(InputError, match="--slurm-walltime"):
        slurm_cluster_kwargs(SlurmOptions(cores=2, memory="4GB", walltime="one hour"))
    with pytest.raises(InputError, match="--slurm-memory"):
        slurm_cluster_kwargs(SlurmOptions(cores=2, memory="lots"))
    kwargs = slurm_cluster_kwargs({"queue": "gpu", "account": "proj", "walltime": "01:30:00", "cores": 4,
                                   "memory": "8GB", "gpus": 2})
    assert kwargs["job_extra_directives"] == ["--gres=gpu:2"]
    cluster = SLURMCluster(**kwargs)  # writes the job script; submits nothing until scaled
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A proj", "#SBATCH -t 01:30:00", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gres=gpu:2", sys.executable):
        assert line in script
    kwargs = slurm_cluster_kwargs(SlurmOptions(cores=1, memory="1GB", interface="lo", extra=["--qos=low"],
                                               prologue=["module load cuda", "export OMP_NUM_THREADS=1"]))
    cluster = SLURMCluster(**kwargs)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --qos=low" in script
    lines = script.splitlines()
    check = lines.index(f"{sys.executable} -c 'import nbody_engine' || exit 3")
    assert lines.index("module load cuda") < lines.index("export OMP_NUM_THREADS=1") < check
    assert "--interface lo" in script
    with pytest.raises(InputError, match="--slurm-interface 'nope0' is not a network interface of this machine"):
        slurm_cluster_kwargs(SlurmOptions(cores=1, memory="1GB", interface="nope0"))


# --------------------------------------------------------------------------- bad input through the real CLI

@pytest.mark.parametrize(("grid", "message"), [
    ("stepz = [20]\n", "unknown key 'stepz' in grid 'grid.toml' (top level); did you mean 'steps'?"),
    ("[simulate]\nsteps = []\n", "[simulate] of grid 'grid.toml': 'steps' lists no values"),
    ("steps = [20, \"many\"]\n", "grid 'grid.toml' (top level): 'steps' must be an integer, not 'many'"),
    ("steps = 20\n", "'steps' must be a list of the values to sweep"),
])
@pytest.mark.slow
def test_cli_bad_grid_is_one_line_exit_2(tmp_path, grid, message):
    write_inputs(tmp_path, grid)
    result = sweep_cli(tmp_path, "--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("nbody-runner: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_cli_usage_errors(tmp_path):
    write_inputs(tmp_path)
    for args, message in ((["--slurm-queue", "q"], "--slurm-queue needs --slurm"),
                          (["--samples", "0"], "--samples: must be a positive integer"),
                          (["--slurm", "--scheduler", "tcp://127.0.0.1:1"], "not allowed with argument")):
        result = sweep_cli(tmp_path, "--config", "base.toml", "--grid", "grid.toml", *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- real sweeps

@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The sweep on the default LocalCluster (2 worker processes), through the CLI."""
    cwd = tmp_path_factory.mktemp("local_sweep")
    write_inputs(cwd)
    result = sweep_cli(cwd, "--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate",
                       "--workers", "2", "--name", "demo")
    return cwd, result


@pytest.mark.slow
def test_local_sweep_records_every_run(local_sweep):
    cwd, result = local_sweep
    assert result.returncode == 1, result.stderr  # a run failed
    assert "local cluster of 2 worker(s)" in result.stdout
    assert "3 ok, 1 failed" in result.stdout
    check_results(cwd / "data" / "demo")


@pytest.mark.slow
def test_rerun_skips_finished_runs(local_sweep):
    """A rerun (here through the Python API) runs the failed run again and nothing else."""
    cwd, _ = local_sweep
    root = cwd / "data" / "demo"
    before = check_results(root)
    ok_ids = [i for i, r in before.items() if r["status"] == "ok"]
    stamps = {i: (root / "runs" / i / "stdout.log").stat().st_mtime_ns for i in ok_ids}
    lines: list[str] = []
    plan = plan_sweep(cwd / "base.toml", cwd / "grid.toml", mode="simulate", name="demo", data_dir=cwd / "data")
    doc = run_sweep(plan, workers=1, sink=lambda event: lines.append(event.text))
    assert "4 run(s), 3 finished earlier, 1 to run" in lines[0]
    assert (doc["ok"], doc["failed"]) == (3, 1)
    after = check_results(root)
    for i, row in after.items():
        assert row["attempts"] == (1 if i in ok_ids else 2), row
    assert {i: (root / "runs" / i / "stdout.log").stat().st_mtime_ns for i in ok_ids} == stamps


def _stop(proc: subprocess.Popen) -> None:
    """End a process group started here (the scheduler, or a worker and its nannies)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def start_scheduler(tmp_path: Path, log) -> tuple[subprocess.Popen, str]:
    """``dask scheduler`` on 127.0.0.1 (a free port); returns it and its address."""
    scheduler_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(scheduler_file)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    def written() -> bool:
        assert proc.poll() is None, (tmp_path / "dask.log").read_text()
        return scheduler_file.is_file()

    wait_until(written, "the scheduler's file", timeout=60)
    address = json.loads(scheduler_file.read_text())["address"]
    assert address.startswith("tcp://127.0.0.1:")
    return proc, address


@pytest.fixture
def dask_cluster(tmp_path):
    """``dask scheduler`` and ``dask worker`` (2 processes, 1 thread each) on 127.0.0.1."""
    procs: list[subprocess.Popen] = []
    log = (tmp_path / "dask.log").open("w")
    try:
        scheduler, address = start_scheduler(tmp_path, log)
        procs.append(scheduler)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2", "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1", "--death-timeout", "60"],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)
        log.close()


@pytest.mark.slow
def test_sweep_on_an_existing_scheduler(tmp_path, dask_cluster, local_sweep):
    cwd = tmp_path / "remote"
    cwd.mkdir()
    write_inputs(cwd)
    result = sweep_cli(cwd, "--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate",
                       "--name", "demo", "--scheduler", dask_cluster)
    assert result.returncode == 1, result.stderr
    assert f"scheduler {dask_cluster} with 2 worker(s)" in result.stdout
    remote = check_results(cwd / "data" / "demo")
    local = json.loads((local_sweep[0] / "data" / "demo" / "results.json").read_text())
    assert set(remote) == {r["id"] for r in local["runs"]}  # the same runs, wherever they execute


# --------------------------------------------------------------------------- --status, faults and signals

@pytest.mark.slow
def test_status_prints_the_table_and_plots_a_metric(local_sweep):
    cwd, _ = local_sweep
    result = sweep_cli(cwd, "--status", "demo", "--plot", "max_rel_energy_error", "--against", "num_particles")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "status", "num_particles", "simulate.multi_orbit_sim"]
    assert "sweep 'demo': 4/4 runs ended (3 ok, 1 failed)" in result.stdout
    png = cwd / "data" / "demo" / "max_rel_energy_error_vs_num_particles.png"
    assert f"written: {png}" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = sweep_cli(cwd, "--status", "demo", "--plot", "loss")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "--plot 'loss' is not a metric of this sweep; choose one of steps" in bad.stderr
    for args, message in ((["--status", "demo", "--config", "base.toml"], "--status NAME looks at a sweep"),
                          (["--plot", "steps"], "--plot needs --status NAME"),
                          (["--grid", "grid.toml"], "a sweep needs --config FILE (or --status NAME")):
        usage = sweep_cli(cwd, *args)
        assert usage.returncode == 2 and message in usage.stderr and usage.stderr.count("\n") == 1, usage.stderr
    missing = sweep_cli(cwd, "--status", "nothing")
    assert missing.returncode == 2 and "no sweep in" in missing.stderr


LONG_BASE = 'seed = 1\nnum_orbits = 1\nnum_particles = 2\ndt = 0.001\nrecord_every = 1000\n'


def start_long_sweep(cwd: Path, steps: int, *args: str) -> subprocess.Popen:
    """A sweep of 4 runs of ``steps`` fixed steps each (about 10 s per 300,000 here), in the background."""
    (cwd / "base.toml").write_text(LONG_BASE + f"steps = {steps}\n")
    (cwd / "grid.toml").write_text("seed = [1, 2, 3, 4]\n")
    cmd = [sys.executable, "-m", "nbody_engine.runner", "sweep", "--config", "base.toml", "--grid", "grid.toml",
           "--mode", "simulate", "--name", "long", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def runner_pids(root: Path, timeout: float = 120, at_least: int = 1) -> dict[str, int]:
    """run id -> pid of its runner, once at least ``at_least`` runners hold their output folders."""
    from nbody_engine.runs.directory import lock_holder

    def holders() -> dict[str, int] | None:
        pids = {p.name: lock_holder(p / "data" / p.name) for p in (root / "runs").glob("*")}
        pids = {k: v for k, v in pids.items() if v and v > 0}
        return pids if len(pids) >= at_least else None

    return wait_until(holders, f"{at_least} runner(s) to start", timeout=timeout, poll=0.3)


def gone(pid: int, timeout: float = 60) -> bool:
    """Whether process ``pid`` ends (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.3)
    return False


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_a_local_sweep_with_its_code_and_a_summary(tmp_path, signum, code):
    proc = start_long_sweep(tmp_path, 3_000_000, "--workers", "2")
    root = tmp_path / "data" / "long"
    pids = runner_pids(root)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, out + err
    assert "interrupted; finished runs are kept and a rerun resumes" in err
    assert "sweep 'long' stopped (the sweep was cancelled)" in out, out
    assert all(gone(pid) for pid in pids.values())
    doc = json.loads((root / "results.json").read_text())
    assert doc["cancelled"] >= 1 and doc["cancelled"] + doc["pending"] == 4, doc
    for row in doc["runs"]:
        assert row["status"] in ("cancelled", "pending"), row
        if row["id"] in pids:
            assert row["status"] == "cancelled" and row["error"] == "cancelled: the sweep was interrupted", row


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep_on_an_existing_scheduler_with_130(tmp_path, dask_cluster):
    proc = start_long_sweep(tmp_path, 3_000_000, "--scheduler", dask_cluster)
    pids = runner_pids(tmp_path / "data" / "long")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "sweep 'long' stopped (the sweep was cancelled)" in out, out
    assert all(gone(pid) for pid in pids.values())  # the workers stay up; their runs do not


@pytest.mark.slow
def test_a_killed_sweep_leaves_no_runner_behind_and_a_rerun_finishes(tmp_path):
    proc = start_long_sweep(tmp_path, 3_000_000, "--workers", "2")
    root = tmp_path / "data" / "long"
    pids = runner_pids(root)
    proc.kill()  # SIGKILL to the sweep only, not to its workers
    proc.wait(timeout=30)
    assert all(gone(pid) for pid in pids.values()), "a runner outlived its sweep"
    status = sweep_cli(tmp_path, "--status", "long")  # what anyone looking at the folder now sees
    rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[1:] if line[:1].isalnum()}
    assert all(rows[rid] == "cancelled" for rid in pids), status.stdout
    (tmp_path / "base.toml").write_text(LONG_BASE + "steps = 20\n")  # a quick rerun of the same runs
    rerun = sweep_cli(tmp_path, "--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate",
                      "--name", "long", "--workers", "2")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    doc = json.loads((root / "results.json").read_text())
    assert doc["ok"] == 4
    for rid in pids:
        assert "Traceback" not in (root / "runs" / rid / "stderr.log").read_text()


@pytest.mark.slow
def test_a_worker_killed_mid_run_takes_its_runner_and_the_run_is_redone(tmp_path, dask_cluster):
    proc = start_long_sweep(tmp_path, 300_000, "--scheduler", dask_cluster)
    root = tmp_path / "data" / "long"
    rid, runner = next(iter(runner_pids(root).items()))
    zygote = parent_of(runner)  # runs are forked from the worker's warm zygote, the worker's child
    os.kill(parent_of(zygote), signal.SIGKILL)  # the worker process running that run
    assert gone(runner, timeout=30), "the runner outlived its worker"
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    doc = json.loads((root / "results.json").read_text())
    assert doc["ok"] == 4, doc
    row = next(r for r in doc["runs"] if r["id"] == rid)
    assert row["attempts"] == 2 and row["worker"].startswith("tcp://127.0.0.1:"), row


@pytest.mark.slow
def test_a_scheduler_without_workers_is_reported_and_the_sweep_stops(tmp_path):
    with (tmp_path / "dask.log").open("w") as log:
        scheduler, address = start_scheduler(tmp_path, log)
        try:
            write_inputs(tmp_path)
            result = sweep_cli(tmp_path, "--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate",
                               "--scheduler", address, "--no-worker-limit", "20", "--name", "alone")
        finally:
            _stop(scheduler)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no worker alive for 15 s: no Dask worker is connected to the scheduler" in result.stdout
    assert "sweep 'alone' stopped (no worker for 2" in result.stdout, result.stdout
    doc = json.loads((tmp_path / "data" / "alone" / "results.json").read_text())
    assert doc["pending"] == 4 and doc["stopped"].startswith("no worker for")


@pytest.mark.slow
def test_a_run_waits_for_an_earlier_runner_to_let_go_of_its_folder(tmp_path):
    """A runner orphaned by a killed sweep may still hold the run's output for a moment: the
    next attempt starts only once it has let go, and never deletes a folder in use."""
    plan = plan_sweep(None, {"steps": [20]}, mode="simulate", name="w", cwd=tmp_path, data_dir=tmp_path / "data")
    run = plan.runs[0]
    run_dir = plan.run_dir(run)
    run_dir.mkdir(parents=True)
    (run_dir / "run.toml").write_text(run.toml)
    output = run_dir / "data" / run.id
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom nbody_engine.runs.directory import DirectoryLock\n"
        f"with DirectoryLock({str(output)!r}):\n    open({str(output / 'stale')!r}, 'w').close()\n"
        "    print('held', flush=True)\n    time.sleep(4)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    from nbody_engine.sweep import execute_run

    record = execute_run(str(run_dir), "simulate")
    assert holder.wait(timeout=30) == 0  # its lock file was still there to release: nothing deleted it
    assert record["status"] == "ok", record
    assert not (output / "stale").exists()  # removed only once the holder had gone, then the run wrote anew
    assert (output / "sim").is_dir()
