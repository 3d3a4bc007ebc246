"""Where the dashboard may read and write files: the working directory, plus the directories
the server was started with (``nbody-explorer --allow-files-under DIR``). Paths from an
imported TOML or typed into the page are checked before anything is read."""

from __future__ import annotations

import os
from pathlib import Path

from nbody_engine.config.loading import check_paths_within
from nbody_engine.config.schema import Config

FILE_ROOTS_ENV = "NBODY_EXPLORER_FILE_ROOTS"
HINT = "start the server with 'nbody-explorer --allow-files-under DIR' to allow another directory"


def file_roots() -> list[Path]:
    """The directories the page may use: those the server was started with, or the working one."""
    listed = os.environ.get(FILE_ROOTS_ENV, "")
    return [Path(p) for p in listed.split(os.pathsep) if p] or [Path.cwd()]


def check_confined(cfg: Config, source: str) -> None:
    """Raise InputError (naming the key, never a file's contents) if a path key of ``cfg``
    lies outside :func:`file_roots`."""
    check_paths_within(cfg, file_roots(), source, HINT)
