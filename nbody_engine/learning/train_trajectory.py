"""The cumulative training trajectory: every training orbit's state after each accepted step,
warm-up included, for ``train_trajectory.npz``, the training report and the training movie.

Rows arrive one accepted step at a time and are kept as columns, one tensor per quantity. A
checkpoint does not hold them: each checkpoint appends the rows since the last one to the run's
trajectory file beside it (``model/train_trajectory_<id>.bin``, fixed-size records) and records
how many rows it covers, so a run's checkpoints grow with its length, not with its square (when
each held the whole trajectory so far, 10,000 epochs of configs/quick.toml wrote ~10 GiB). The
file is only appended to, and a checkpoint reads its first rows; rows past the last checkpoint
(a run that died between the two writes) are cut off by the next one. ``<id>`` is drawn when a training
starts afresh and kept when it resumes, so a fresh training under the same ``save_name`` never
writes into the file of the checkpoints it leaves behind.

Columns: ``epoch`` (R,) and ``dt`` (R,), the epoch and mean dt of each accepted step, and the
state of every orbit after it: ``time`` (R, B), ``position`` (R, B, N, D), ``energy`` (R, B)
and ``angular_momentum`` (R, B) or (R, B, 3).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import torch

from ..config.errors import InputError
from ..config.files import open_input

STATE = ("time", "position", "energy", "angular_momentum")
COLUMNS = ("epoch", "dt", *STATE)
STORED = ("file", "rows", "fields")  # what a checkpoint (format 4) records of the trajectory


class TrainTrajectory:
    """Append-only rows, stacked into columns when they are read, and appended to the run's
    trajectory file when a checkpoint is written (:meth:`save`)."""

    def __init__(self, columns: dict[str, torch.Tensor] | None = None, file: str | None = None,
                 saved: int = 0) -> None:
        self._stacked = dict(columns) if columns else {}
        self._pending: list[dict] = []
        self.file = file or f"train_trajectory_{secrets.token_hex(4)}.bin"
        self.saved = saved  # rows already in the file

    def __len__(self) -> int:
        return (len(self._stacked["epoch"]) if self._stacked else 0) + len(self._pending)

    def append(self, epoch: int, dt: float, state: dict[str, torch.Tensor]) -> None:
        """One accepted step: its epoch and mean dt, and ``state``'s tensors (``STATE``) on the CPU."""
        self._pending.append({"epoch": epoch, "dt": dt, **state})

    def columns(self) -> dict[str, torch.Tensor]:
        """Every row, as columns; empty when there are none."""
        self._stack_pending()
        return dict(self._stacked)

    def arrays(self) -> dict[str, np.ndarray]:
        """The columns as numpy arrays for ``train_trajectory.npz``: dt per orbit (R, B)."""
        arrays = {key: column.numpy() for key, column in self.columns().items()}
        arrays["dt"] = np.repeat(arrays["dt"][:, None], arrays["time"].shape[1], 1)
        return arrays

    def save(self, directory: Path, rows: int) -> dict:
        """Append rows up to ``rows`` (those of the finished epochs) to the trajectory file in
        ``directory``; returns what the checkpoint records to read its ``rows`` rows back."""
        columns = self.columns()
        fields = [[key, columns[key].numpy().dtype.str, list(columns[key].shape[1:])] for key in COLUMNS] \
            if columns else []
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self.file
        start = self.saved if path.exists() else 0  # a file removed meanwhile is written again whole
        records = np.empty(rows - start, _record_dtype(fields))
        for key, column in columns.items():
            records[key] = column[start:rows].numpy()
        with path.open("r+b" if start else "wb") as fh:
            fh.seek(start * records.dtype.itemsize)
            fh.truncate()  # rows a run wrote past its last checkpoint before it died
            records.tofile(fh)
        self.saved = rows
        return {"file": self.file, "rows": rows, "fields": fields}

    def _stack_pending(self) -> None:
        if not self._pending:
            return
        new = {"epoch": torch.tensor([row["epoch"] for row in self._pending], dtype=torch.int64),
               "dt": torch.tensor([row["dt"] for row in self._pending], dtype=torch.float64),
               **{key: torch.stack([row[key] for row in self._pending]) for key in STATE}}
        self._stacked = {key: torch.cat([self._stacked[key], new[key]]) if self._stacked else new[key]
                         for key in COLUMNS}
        self._pending = []

    @classmethod
    def from_checkpoint(cls, stored, path: str | Path) -> TrainTrajectory:
        """A checkpoint's ``trajectory``: the rows of the trajectory file beside it (format 4),
        columns (format 3), a list of row dicts (format 2, whose ``dt`` is a number), or absent
        (format 1). A trajectory read from a format 1-3 checkpoint goes to a new file."""
        if stored is None or (isinstance(stored, (list, dict)) and not stored):
            return cls()
        if isinstance(stored, dict) and set(stored) == set(STORED):
            return cls._from_file(stored, Path(path))
        if isinstance(stored, list):
            trajectory = cls()
            try:
                for row in stored:
                    trajectory.append(int(row["epoch"]), float(row["dt"]), {key: row[key] for key in STATE})
                trajectory.columns()
            except (KeyError, TypeError, ValueError, RuntimeError):
                raise _malformed(path) from None
            return trajectory
        if not (isinstance(stored, dict) and set(stored) == set(COLUMNS)
                and all(torch.is_tensor(stored[key]) and stored[key].dim() >= 1 for key in COLUMNS)
                and len({len(stored[key]) for key in COLUMNS}) == 1):
            raise _malformed(path)
        return cls({key: stored[key] for key in COLUMNS})

    @classmethod
    def _from_file(cls, stored: dict, checkpoint: Path) -> TrainTrajectory:
        name, rows, fields = (stored[key] for key in STORED)
        if not (isinstance(name, str) and Path(name).name == name and name.endswith(".bin")
                and isinstance(rows, int) and rows >= 0 and isinstance(fields, list)):
            raise _malformed(checkpoint)
        if rows == 0:  # no step accepted yet
            return cls(file=name)
        if [field[0] for field in fields if isinstance(field, list) and field] != list(COLUMNS):
            raise _malformed(checkpoint)
        path = checkpoint.with_name(name)
        try:
            record = _record_dtype(fields)
        except (TypeError, ValueError):  # fields that are no record this tool writes
            raise _malformed(checkpoint) from None
        if record.hasobject:  # no file of numbers holds Python objects
            raise _malformed(checkpoint)
        if not path.exists():
            raise InputError(f"checkpoint '{checkpoint}' continues its training trajectory in '{path}', which is "
                             "missing; keep the files of a run's model directory together")
        with open_input(path, "training trajectory", f"checkpoint '{checkpoint}'") as fh:
            held = os.fstat(fh.fileno()).st_size // max(record.itemsize, 1)
            if held < rows:  # checked before reading: a checkpoint may claim 10^12 rows
                raise InputError(f"'{path}' holds {held} rows of the training trajectory where checkpoint "
                                 f"'{checkpoint}' needs {rows}; the file is cut short")
            records = np.fromfile(fh, dtype=record, count=rows)
        return cls({key: torch.from_numpy(records[key].copy()) for key in COLUMNS}, file=name, saved=rows)


def _record_dtype(fields: list) -> np.dtype:
    """One row of the trajectory file: a field per column, ``[name, dtype, shape of a row]``."""
    return np.dtype([(str(name), str(dtype), tuple(int(n) for n in shape)) for name, dtype, shape in fields])


def _malformed(path: Path) -> InputError:
    return InputError(f"checkpoint '{path}' trajectory must hold {', '.join(COLUMNS)} with one row per accepted "
                      "step; the file is not a checkpoint this tool wrote")
