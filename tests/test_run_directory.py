"""The run directory as a shared resource: one run at a time per directory (an advisory lock with
the owner's pid), files with the modes the umask gives, and plain, portable run names."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers import wait_until
from background_run import BackgroundRun
from nbody_engine.config.errors import InputError
from nbody_engine.config.loading import load_configs
from nbody_engine.runs.directory import DirectoryLock, write_text

LONG_TRAINING = ["--num-orbits", "2", "--hidden-dims", "8", "--epochs", "100000", "--seed", "1", "-s", "shared"]


def runner(cwd: Path, *args: str, umask: int | None = None) -> BackgroundRun:
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return BackgroundRun(cwd, *args, preexec_fn=preexec)


@pytest.mark.slow
def test_a_second_run_with_the_same_name_is_refused_naming_the_pid(tmp_path):
    first = runner(tmp_path, "train", *LONG_TRAINING)
    try:
        wait_until(lambda: (tmp_path / "data/shared/metrics.jsonl").exists(), "the first run's first epoch")
        metrics_before = (tmp_path / "data/shared/metrics.jsonl").read_text()
        second = subprocess.run([sys.executable, "-m", "nbody_engine.runner", "train", *LONG_TRAINING], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"pid {first.pid}" in lines[0] and "save_name" in lines[0]
        assert (tmp_path / "data/shared/metrics.jsonl").read_text().startswith(metrics_before)
    finally:
        first.terminate()
        first.wait(60)
    assert not (tmp_path / "data/shared/.lock").exists()  # the first run let go of it on its way out
    ok = subprocess.run([sys.executable, "-m", "nbody_engine.runner", "train", *LONG_TRAINING[:-4], "--epochs", "1",
                         "-s", "shared", "--overwrite"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr  # and the name is free again (the stopped run replaced only when asked)


@pytest.mark.slow
def test_a_killed_run_leaves_its_directory_free(tmp_path):
    first = runner(tmp_path, "train", *LONG_TRAINING)
    wait_until(lambda: (tmp_path / "data/shared/metrics.jsonl").exists(), "the first run's first epoch")
    first.kill()
    first.wait(60)
    with DirectoryLock(tmp_path / "data/shared"):  # the kernel dropped the dead run's lock
        pass


def test_the_lock_is_reentrant_in_a_thread_and_refuses_another_thread(tmp_path):
    directory = tmp_path / "data" / "run"
    refused: list[str] = []

    def other_thread():
        try:
            with DirectoryLock(directory):
                pass
        except InputError as err:
            refused.append(str(err))

    with DirectoryLock(directory):
        with DirectoryLock(directory):
            assert (directory / ".lock").read_text().strip() == str(os.getpid())
        assert (directory / ".lock").exists()  # the inner exit does not let go
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(refused) == 1 and f"pid {os.getpid()}" in refused[0]
    assert not (tmp_path / "data").exists()  # the lock made these folders and nothing else was written


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.slow
def test_outputs_honour_the_umask(tmp_path, umask, mode):
    run = runner(tmp_path, "both", "--num-orbits", "2", "--hidden-dims", "8", "--epochs", "1", "--steps", "20",
                 "--seed", "1", "-s", "modes", umask=umask)
    assert run.wait(180) == 0, run.output()
    files = [p for p in (tmp_path / "data/modes").rglob("*") if p.is_file()]
    assert {"config.toml", "metrics.jsonl", "model_epoch_0000.pt", "summary.json", "trajectory.npz"} <= \
        {p.name for p in files}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(mode) for p in files}


def test_atomic_writes_honour_the_umask_in_process(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


@pytest.mark.parametrize("name", [" ", "a b", "tab\there", "bell\a", "-flag", ".hidden", "x" * 129, "naïve",
                                  "semi;colon", "new\nline"])
def test_save_name_is_a_portable_file_name(name):
    with pytest.raises(InputError, match="'save_name' must be a plain folder name") as err:
        load_configs("simulate", None, {"save_name": name})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["run-1.v2", "A_b", "x" * 128, "2026.12.03"])
def test_portable_names_are_accepted(name):
    assert load_configs("simulate", None, {"save_name": name})["simulate"].save_name == name
