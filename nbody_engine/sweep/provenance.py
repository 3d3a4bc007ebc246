"""Provenance: what a sweep and each of its runs record about how they were made, so a result
can be traced to its inputs, its code and its machine.

A sweep appends one record per invocation to ``data/<name>/provenance.json`` (and puts the
latest in ``results.json``): the base config's and the grid's paths and full text, the code's
git commit and whether its tree had uncommitted changes, package versions, Python, the command
line, the backend and its options. Each run's ``status.json`` holds the same facts as seen on
the machine that ran it (its code and packages may differ from the sweep's on a cluster), plus
the host, Dask worker, SLURM job, the GPU it was given and the device it computed on."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

PACKAGES = ("nbody-explorer", "torch", "numpy", "dask", "distributed", "optuna")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding nbody_engine


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None: not installed)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@lru_cache(maxsize=1)
def code_version() -> dict:
    """``git_commit`` and ``git_dirty`` (uncommitted changes to tracked files) of the code
    that runs, when it is a git checkout; {} otherwise (an installed package, no git)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(PACKAGE_ROOT), *args], capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no", "--", "nbody_engine", "explorer", "pyproject.toml")
    return {"git_commit": commit.strip(), "git_dirty": bool(status and status.strip())}


def environment() -> dict:
    """This process's Python, packages and code version."""
    return {"python": platform.python_version(), "python_executable": sys.executable,
            "packages": package_versions(), **code_version()}


def file_record(path: str | Path | None, text: str) -> dict:
    """A config file as recorded: its path (None for a dict), full text and SHA-1."""
    return {"path": None if path is None else str(path), "text": text,
            "sha1": hashlib.sha1(text.encode()).hexdigest()}


def sweep_record(base: dict, grid: dict, backend: dict, search: dict | None, argv: list[str] | None = None) -> dict:
    """One invocation of a sweep: its inputs, command line (``argv``, default this Python and
    ``sys.argv``), backend options and environment."""
    argv = [sys.executable, *sys.argv] if argv is None else argv
    return {"started": datetime.now(UTC).isoformat(timespec="seconds"), "host": os.uname().nodename,
            "cwd": os.getcwd(), "command": shlex.join(argv), "base_config": base,
            "grid": grid, "backend": backend, "search": search, **environment()}
