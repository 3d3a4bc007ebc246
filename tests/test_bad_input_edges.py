"""Bad input at the edge of the machine, through the CLI: numbers at the limits of float, files
that are not what their names say (pipes, devices, headers that lie), sizes, checkpoints that
disagree with themselves, and errors of the operating system (a file in the way, read-only or
full file systems). Each ends with one line on stderr, exit status 2 (1 for a run that failed
after it started), nothing new under data/ and the lock released.

The real command runs in a subprocess where the case needs a process of its own (a signal, a
read-only or full file system, a pipe or a device that could hang the reader) or is the first of
its kind here (an operating system's error before the run starts, a sweep refused); the rest run
``runner.main`` in this process (:func:`helpers.run_in_process`), whose exit-code contract
tests/test_bad_input.py checks in a subprocess once per class of bad input.

File-system faults use small tmpfs mounts, which need root and a kernel that lets this process
mount (a CI container usually does not): those tests are skipped there, saying so."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tomllib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from nbody_engine.config.errors import InputError, RunCancelled
from nbody_engine.events import CancelToken
from nbody_engine.runs.checkpoints import content_hash
from nbody_engine.runs.directory import lock_holder
from nbody_engine.sweep import plan_sweep
from helpers import run_in_process
from test_bad_input import FROM_FILE, SIM, TINY, altered, assert_refused, checkpoint, ic_file, run_cli, set_in  # noqa: F401

KEPLER = [[1, 0.5, 0, 0, 0.5], [1, -0.5, 0, 0, -0.5]]


def files_under(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


# --- numbers and flags ----------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["simulate", *SIM, "--dt", "1e-320"],
    ["simulate", *SIM, "--eps", "4e-310"],
    ["train", *TINY, "--lr", "1e-315", "-s", "bad"],
    ["simulate", "--steps", "\u0661\u0662", "-s", "bad"],  # Arabic-Indic digits: Python's int() reads them as 12
    ["train", *TINY, "--hidden-dims", "\uff11\uff16", "-s", "bad"],  # fullwidth digits
])
def test_numbers_python_reads_but_a_run_cannot_use(tmp_path, args):
    assert_refused(tmp_path, run_in_process(tmp_path, *args))


def test_a_subnormal_step_names_the_smallest_usable_value(tmp_path):
    line = assert_refused(tmp_path, run_in_process(tmp_path, "simulate", *SIM, "--dt", "1e-320"))
    assert "'dt'" in line and "2.23e-308" in line


def test_a_tiny_but_normal_step_runs(tmp_path):
    result = run_in_process(tmp_path, "simulate", *SIM, "--dt", "1e-300")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


# --- config files ---------------------------------------------------------------------------

DEEP = {"arrays": "dt = " + "[" * 5000 + "]" * 5000, "tables": "[train]\nx = " + "{a = " * 3000 + "1" + "}" * 3000}


@pytest.mark.parametrize("kind", list(DEEP))
def test_a_deeply_nested_config(tmp_path, kind):
    (tmp_path / "deep.toml").write_text(DEEP[kind])
    assert "too deeply" in assert_refused(tmp_path, run_in_process(tmp_path, "train", "--config", "deep.toml"))


@pytest.mark.parametrize("kind", list(DEEP))
def test_a_deeply_nested_config_in_the_dashboard(tmp_path, monkeypatch, kind):
    from explorer import Explorer

    monkeypatch.chdir(tmp_path)
    e = Explorer()
    try:
        with pytest.raises(InputError, match="too deeply"):
            e.load_toml(DEEP[kind], "'deep.toml'")
    finally:
        e.close()


def test_a_50_mb_list_is_refused_before_it_is_parsed(tmp_path):
    with open(tmp_path / "big.toml", "w") as fh:
        fh.write("eval_eps = [" + "0.1, " * 10_000_000 + "0.1]\n")
    line = assert_refused(tmp_path, run_in_process(tmp_path, "simulate", "--config", "big.toml"))
    assert "big.toml" in line and "MiB" in line


def test_training_keys_in_the_simulate_section(tmp_path):
    (tmp_path / "run.toml").write_text("[simulate]\nsteps = 5\nlr = 0.01\n")
    line = assert_refused(tmp_path, run_in_process(tmp_path, "both", "--config", "run.toml"))
    assert "'lr'" in line and "[train]" in line


# --- IC files -------------------------------------------------------------------------------

def lying_header(path: Path, shape, descr: str = "<f8") -> Path:
    """A .npy file whose header claims ``shape`` over 80 bytes of data."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
        fh.write(bytes(80))
    return path


@pytest.mark.parametrize("make, says", [
    (lambda tmp: lying_header(tmp / "huge.npy", (10**12, 2, 5)), "claims shape"),
    (lambda tmp: lying_header(tmp / "cut.npy", (3, 5)), "claims shape"),
    (lambda tmp: np.save(tmp / "complex.npy", np.asarray(KEPLER) + 1j) or tmp / "complex.npy", "complex"),
    (lambda tmp: (tmp / "complex.txt").write_text("(1+1j) 0.5 0 0 0.5\n(1+0j) -0.5 0 0 -0.5\n") and
     tmp / "complex.txt", "real numbers"),
    (lambda tmp: os.mkfifo(tmp / "pipe.npy") or tmp / "pipe.npy", "not a regular file"),
    (lambda tmp: os.symlink("/dev/zero", tmp / "zero.txt") or tmp / "zero.txt", "not a regular file"),
])
@pytest.mark.parametrize("mode", ["simulate", "train", "evaluate"])
def test_ic_files_that_are_not_what_they_say(tmp_path, checkpoint, make, says, mode):  # noqa: F811
    path = make(tmp_path)
    extra = {"simulate": SIM, "train": [*TINY, "-s", "bad"],
             "evaluate": ["--model-path", str(checkpoint), "--eval-eps", "0.1", "--Nperiod", "1", "-s", "bad"]}[mode]
    # a pipe or a device in a subprocess: a reader that hangs on it fails on run_cli's timeout
    run = run_cli if says == "not a regular file" else run_in_process
    line = assert_refused(tmp_path, run(tmp_path, mode, "--ic-path", str(path), *extra))
    assert says in line and str(path) in line


def test_an_ic_file_sets_the_body_count_it_holds(tmp_path):
    path = ic_file(tmp_path, "three.txt", [[1, 1, 0, 0, 0.5], [1, -1, 0, 0, -0.5], [0.1, 0, 3, 0.4, 0]])
    result = run_in_process(tmp_path, "simulate", "--ic-path", str(path), "--steps", "5", "-s", "three")
    assert result.returncode == 0, result.stderr
    recorded = tomllib.loads((tmp_path / "data/three/config.toml").read_text())
    assert recorded["num_particles"] == 3


def test_an_ic_file_that_contradicts_num_particles(tmp_path):
    path = ic_file(tmp_path, "two.txt", KEPLER)
    line = assert_refused(tmp_path, run_in_process(tmp_path, "simulate", "--ic-path", str(path), "--num-particles",
                                                   "4", *SIM))
    assert "'num_particles' = 4" in line and "set num_particles = 2" in line


def test_training_takes_the_orbit_count_of_its_ic_file(tmp_path):
    np.save(tmp_path / "three_orbits.npy", np.stack([np.asarray(KEPLER)] * 3))
    result = run_in_process(tmp_path, "train", "--ic-path", "three_orbits.npy", *FROM_FILE, "--epochs", "1", "-s", "t")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads((tmp_path / "data/t/config.toml").read_text())["num_orbits"] == 3


def test_the_memory_estimate_counts_the_systems_and_bodies_of_an_ic_file(tmp_path):
    rng = np.random.default_rng(0)
    systems = np.concatenate([np.ones((8, 4000, 1)), rng.normal(size=(8, 4000, 4))], 2)
    np.save(tmp_path / "big.npy", systems)
    line = assert_refused(tmp_path, run_in_process(tmp_path, "simulate", "--ic-path", "big.npy", *SIM))
    assert "'num_particles' = 4000" in line and "8 system(s)" in line and "GB" in line


# --- checkpoints ----------------------------------------------------------------------------

def unhashed(checkpoint: Path, tmp: Path) -> Path:  # noqa: F811
    """The checkpoint relabelled as format 1 (before the content hash), its hash dropped."""
    data = torch.load(checkpoint, weights_only=True)
    data.pop("sha256")
    data["format"] = 1
    torch.save(data, tmp / "old.pt")
    return tmp / "old.pt"


@pytest.mark.parametrize("make, says", [
    (unhashed, "format 1"),
    (lambda ckpt, tmp: altered(ckpt, tmp, set_in("epoch", -3)), "epoch -3"),
    (lambda ckpt, tmp: altered(ckpt, tmp, set_in("epoch", 10**9)), "epoch 1000000000"),
    (lambda ckpt, tmp: altered(ckpt, tmp, set_in("epoch", True)), "epoch True"),
])
def test_checkpoints_that_cannot_be_trusted(tmp_path, checkpoint, make, says):  # noqa: F811
    path = make(checkpoint, tmp_path)
    line = assert_refused(tmp_path, run_in_process(tmp_path, "simulate", "--integrator-mode", "ml", "--model-path",
                                                   str(path), *SIM))
    assert says in line and str(path) in line


@pytest.fixture(scope="module")
def ten_epochs(tmp_path_factory) -> Path:
    """A run folder of 10 epochs of a tiny training, its checkpoint at epoch 9: trained once for the
    module, read only (:func:`trained_run` gives each test a copy to change)."""
    root = tmp_path_factory.mktemp("ten_epochs")
    result = run_in_process(root, "train", *TINY, "--epochs", "10", "-s", "r")
    assert result.returncode == 0, result.stderr
    return root / "data/r"


@pytest.fixture
def trained_run(ten_epochs, tmp_path) -> Path:
    """tmp_path/data/r: a copy of :func:`ten_epochs`."""
    return Path(shutil.copytree(ten_epochs, tmp_path / "data/r"))


def replace_checkpoint(run: Path, change) -> None:
    path = run / "model/model_epoch_0009.pt"
    data = torch.load(path, weights_only=True)
    data.pop("sha256")
    change(data)
    data["sha256"] = content_hash(data)
    torch.save(data, path)


def refused_resume(run: Path, says: str) -> None:
    before = files_under(run)
    result = run_in_process(run.parent.parent, "train", *TINY, "--epochs", "20", "--resume", "-s", "r")
    line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert line.startswith("nbody-runner: error: ") and says in line, line
    assert files_under(run) == before and lock_holder(run) is None


@pytest.mark.parametrize("change, says", [
    (lambda d: d["trajectory"].update(rows=10**12), "cut short"),
    (lambda d: d.update(trainer="a string"), "trainer state"),
    (lambda d: d["trainer"].update(orbits=[1, 2, 3]), "trainer state"),
    (lambda d: d["trainer"]["orbits"].update(position=torch.zeros(7, 7)), "trainer state"),
    (lambda d: d["trainer"].update(generator=torch.zeros(3)), "trainer state"),
])
def test_resuming_from_a_checkpoint_that_disagrees_with_itself(trained_run, change, says):
    replace_checkpoint(trained_run, change)
    refused_resume(trained_run, says)


def test_stale_temporary_files_go_when_the_next_run_starts(trained_run):
    stale = [trained_run / "model/.model_epoch_0019.pt.0123456789ab.tmp", trained_run / ".config.toml.ba98.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    result = run_in_process(trained_run.parent.parent, "simulate", *SIM[:2], "-s", "r")
    assert result.returncode == 0, result.stderr
    assert not any(path.exists() for path in stale)


# --- the operating system -------------------------------------------------------------------

def test_a_file_where_data_should_be(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    line = assert_refused_beside(tmp_path, run_cli(tmp_path, "simulate", *SIM))
    assert str(tmp_path / "data") in line and "is a file" in line


def test_a_file_where_the_run_folder_should_be(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/bad").write_text("not a folder")
    line = assert_refused_beside(tmp_path, run_in_process(tmp_path, "simulate", *SIM))
    assert str(tmp_path / "data/bad") in line


def assert_refused_beside(cwd: Path, result: subprocess.CompletedProcess) -> str:
    """Refused in one line with status 2, the files already there untouched."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("nbody-runner: error: "), result.stderr
    return lines[0]


@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` mounted at ``path`` for the block; skips the test where this process
    may not mount (not root, or a container without the capability)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not root'}): the file-system "
                    "faults need one")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("where", ["working directory", "data", "run folder"])
def test_a_read_only_file_system(tmp_path, where):
    cwd = tmp_path / "cwd"
    target = {"working directory": cwd, "data": cwd / "data", "run folder": cwd / "data/bad"}[where]
    with tmpfs(target, "1m", read_only=True):
        line = assert_refused_beside(cwd, run_cli(cwd, "simulate", *SIM))
        assert "Read-only file system" in line and str(cwd) in line
    assert not any(p for p in target.rglob("*")) if target.exists() else True


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_resumes(tmp_path, ten_epochs):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        run = Path(shutil.copytree(ten_epochs, disk / "data/r"))
        good = (run / "model/model_epoch_0009.pt").read_bytes()
        filler = disk / "filler"
        with open(filler, "wb") as fh:  # leave 48 kB: the logs of ten epochs fit, their checkpoint does not
            fh.write(bytes(os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 48 * 1024))
        result = run_cli(disk, "train", *TINY, "--epochs", "20", "--resume", "-s", "r")
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert last.startswith("nbody-runner: error: No space left on device") and "--resume" in last, last
        assert (run / "model/model_epoch_0009.pt").read_bytes() == good
        assert not list(run.rglob(".*.tmp")) and lock_holder(run) is None
        filler.unlink()
        resumed = run_cli(disk, "train", *TINY, "--epochs", "20", "--resume", "-s", "r")
        assert resumed.returncode == 0, resumed.stderr
        assert (run / "model/model_epoch_0019.pt").is_file()


# --- sweeps ---------------------------------------------------------------------------------

def grid(tmp: Path, *sizes: int) -> Path:
    """A grid file with one axis per size: steps, record_every, ... each with that many values."""
    keys = ("steps", "record_every", "seed")
    lines = [f"{key} = [{', '.join(str(v) for v in range(1, n + 1))}]" for key, n in zip(keys, sizes)]
    path = tmp / "g.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("sizes, count", [((50, 50), "2,500"), ((1000, 1000, 1000), "1,000,000,000")])
def test_a_sweep_of_too_many_points_is_refused_with_the_count(tmp_path, sizes, count):
    path = grid(tmp_path, *sizes)
    run = run_cli if count == "2,500" else run_in_process
    line = assert_refused(tmp_path, run(tmp_path, "sweep", "--mode", "simulate", "--grid", str(path), "--config",
                                        str(ic_config(tmp_path))))
    assert count in line and "--samples" in line and "--max-points" in line


def ic_config(tmp: Path) -> Path:
    (tmp / "base.toml").write_text("num_particles = 2\n")
    return tmp / "base.toml"


def test_samples_draw_from_a_grid_too_large_to_run(tmp_path):
    plan = plan_sweep(None, grid(tmp_path, 1000, 1000, 1000), mode="simulate", samples=3, cwd=tmp_path)
    assert plan.total == 10**9 and len(plan.runs) == 3


def test_max_points_raises_the_limit(tmp_path):
    with pytest.raises(InputError, match="12 points"):
        plan_sweep(None, grid(tmp_path, 3, 4), mode="simulate", max_points=10, cwd=tmp_path)
    assert len(plan_sweep(None, grid(tmp_path, 3, 4), mode="simulate", max_points=12, cwd=tmp_path).runs) == 12


def test_planning_stops_when_cancelled(tmp_path):
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(RunCancelled):
        plan_sweep(None, grid(tmp_path, 10, 10), mode="simulate", cancel=cancel, cwd=tmp_path)


def test_ctrl_c_while_a_sweep_is_planned_exits_130(tmp_path):
    path = grid(tmp_path, 40, 25)
    process = subprocess.Popen([sys.executable, "-m", "nbody_engine.runner", "sweep", "--mode", "simulate", "--grid",
                                str(path), "--config", str(ic_config(tmp_path))], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "planning" in process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("nbody-runner: interrupted"), err


# --- signals --------------------------------------------------------------------------------

@pytest.mark.parametrize("after", ["started", "epoch 0"])
def test_sigterm_during_training_ends_with_the_cancel_line(tmp_path, after):
    process = subprocess.Popen([sys.executable, "-m", "nbody_engine.runner", "train", *TINY, "--epochs", "100000",
                                "--steps-per-epoch", "50", "-s", "long"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    seen = []
    while not any(after in line for line in seen):
        line = process.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
    process.send_signal(signal.SIGTERM)
    err = "".join(seen) + process.communicate(timeout=300)[1]
    assert process.returncode == 143, err
    assert "Traceback" not in err and "train cancelled" in err, err
    assert err.strip().splitlines()[-1] == "nbody-runner: terminated", err
    assert lock_holder(tmp_path / "data/long") is None
