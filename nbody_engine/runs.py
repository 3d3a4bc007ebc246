"""The run directory ``data/<save_name>/`` and atomic file writing.

Layout: ``config.toml`` (the resolved config, re-runnable as is), ``metrics.jsonl`` (one line
per training epoch), ``model/model_epoch_XXXX.pt``, ``sim/<label>/summary.json`` and
``trajectory.npz``. Every file is written to a temporary name and renamed into place, so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .config import check_save_name

DATA_DIR = Path("data")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


class RunDirectory:
    """Paths of one run: ``data/<save_name>`` under ``data_dir``."""

    def __init__(self, save_name: str, data_dir: str | Path | None = None) -> None:
        check_save_name(save_name)
        self.save_name = save_name
        self.root = Path(data_dir if data_dir is not None else DATA_DIR) / save_name

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def checkpoint_path(self, epoch: int) -> Path:
        return self.model_dir / f"model_epoch_{epoch:04d}.pt"

    def sim_dir(self, label: str) -> Path:
        return self.root / "sim" / label

    def movie_path(self, movie_dir: str | None, label: str) -> Path:
        """``<movie_dir>/nbody_movie_<save_name>_<label>.mp4``; movie_dir defaults to data/movie."""
        directory = Path(movie_dir) if movie_dir else self.root.parent / "movie"
        return directory / f"nbody_movie_{self.save_name}_{label}.mp4"

    def checkpoints(self) -> list[Path]:
        """Checkpoints present, oldest epoch first."""
        return sorted(self.model_dir.glob("model_epoch_*.pt"))
