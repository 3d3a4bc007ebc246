"""The cumulative training trajectory: every training orbit's state after each accepted step,
warm-up included, for ``train_trajectory.npz``, the training report and the training movie.

Rows arrive one accepted step at a time and are kept as columns, one tensor per quantity: a
checkpoint (which must hold the trajectory so far, for ``resume``) then writes, hashes and
reads a handful of tensors however long the run, where one small tensor per quantity and row
cost a pickled object each (0.67 s per checkpoint after 1,000 epochs of configs/quick.toml, a
quarter of the run, and 7.8 MB a file).

Columns: ``epoch`` (R,) and ``dt`` (R,), the epoch and mean dt of each accepted step, and the
state of every orbit after it: ``time`` (R, B), ``position`` (R, B, N, D), ``energy`` (R, B)
and ``angular_momentum`` (R, B) or (R, B, 3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import InputError

STATE = ("time", "position", "energy", "angular_momentum")
COLUMNS = ("epoch", "dt", *STATE)


class TrainTrajectory:
    """Append-only rows, stacked into columns when they are read."""

    def __init__(self, columns: dict[str, torch.Tensor] | None = None) -> None:
        self._stacked = dict(columns) if columns else {}
        self._pending: list[dict] = []

    def __len__(self) -> int:
        return (len(self._stacked["epoch"]) if self._stacked else 0) + len(self._pending)

    def append(self, epoch: int, dt: float, state: dict[str, torch.Tensor]) -> None:
        """One accepted step: its epoch and mean dt, and ``state``'s tensors (``STATE``) on the CPU."""
        self._pending.append({"epoch": epoch, "dt": dt, **state})

    def columns(self, rows: int | None = None) -> dict[str, torch.Tensor]:
        """The first ``rows`` rows (all by default) as columns of their own (never views of
        longer ones, which a checkpoint would write whole); empty when there are none."""
        self._stack_pending()
        if not self._stacked:
            return {}
        if rows is None or rows >= len(self._stacked["epoch"]):
            return dict(self._stacked)
        return {key: column[:rows].clone() for key, column in self._stacked.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """The columns as numpy arrays for ``train_trajectory.npz``: dt per orbit (R, B)."""
        arrays = {key: column.numpy() for key, column in self.columns().items()}
        arrays["dt"] = np.repeat(arrays["dt"][:, None], arrays["time"].shape[1], 1)
        return arrays

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
    def from_checkpoint(cls, stored, path: Path) -> TrainTrajectory:
        """A checkpoint's ``trajectory``: columns (format 3), a list of row dicts (format 2, whose
        ``dt`` is a number), or absent (format 1)."""
        if stored is None or (isinstance(stored, (list, dict)) and not stored):
            return cls()
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
        return cls(stored)


def _malformed(path: Path) -> InputError:
    return InputError(f"checkpoint '{path}' trajectory must hold {', '.join(COLUMNS)} with one row per accepted "
                      "step; the file is not a checkpoint this tool wrote")
