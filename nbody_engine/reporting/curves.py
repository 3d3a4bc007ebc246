"""What reports and movies draw, as NumPy arrays: relative errors, values fit for a log axis, and
a long run thinned to the points a report shows.

NumPy alone: a run computes these before it hands them to matplotlib, which may live in another
process (:mod:`.drawing`).
"""

from __future__ import annotations

import numpy as np

PLOTTABLE = 1e100  # larger values (a run that blew up) are off a log chart: matplotlib's ticks overflow
REPORT_POINTS = 4000  # a report draws at most this many points per curve


def relative_errors(energy: np.ndarray, angular_momentum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|dE/E| (S, B) and |dL/L| (S, B) against row 0, from energy (S, B) and L (S, B) or (S, B, 3)."""
    rel_dE = np.abs(energy - energy[0]) / np.abs(energy[0])
    L = angular_momentum
    if L.ndim == energy.ndim:
        dL, L0 = np.abs(L - L[0]), np.abs(L[0])
    else:
        dL, L0 = np.linalg.norm(L - L[0], axis=-1), np.linalg.norm(L[0], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_dL = np.where(L0 > 0, dL / np.where(L0 > 0, L0, 1), np.nan)
    return rel_dE, rel_dL


def positive(values: np.ndarray) -> np.ndarray:
    """``values`` for a log axis: zeros and negatives masked (NaN), so it shows no floor in their
    place (an exact zero, such as every error at t = 0, is no point on it), and so are values
    beyond PLOTTABLE."""
    values = np.asarray(values, dtype=float)
    return np.where((values > 0) & (values < PLOTTABLE), values, np.nan)


def _windows(n: int, limit: int) -> np.ndarray:
    """Start rows of at most ``limit`` equal windows over ``n`` rows."""
    return np.arange(0, n, max(1, -(-n // limit)))


def simulation_curves(trajectory: dict[str, np.ndarray]) -> dict[str, np.ndarray | int]:
    """A simulation report's curves of the first system of ``trajectory`` (a run's arrays):
    time, |dE/E|, |dL/L|, dt and position (rows, N, D), and the batch size.

    Long runs are thinned to REPORT_POINTS windows that keep what matters: each window's
    largest errors and smallest dt (so spikes and close encounters stay visible)."""
    rel_dE, rel_dL = relative_errors(trajectory["energy"][:, :1], trajectory["angular_momentum"][:, :1])
    starts = _windows(len(rel_dE), REPORT_POINTS)

    def largest(values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(np.nan_to_num(values[:, 0], nan=0.0), starts)

    return {"time": trajectory["time"][starts, 0], "rel_dE": largest(rel_dE), "rel_dL": largest(rel_dL),
            "dt": np.minimum.reduceat(trajectory["dt"][:, 0], starts), "position": trajectory["position"][starts, 0],
            "systems": int(trajectory["energy"].shape[1])}
