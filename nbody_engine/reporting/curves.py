"""What reports and movies draw, as NumPy arrays: values fit for a log axis, and
a long run thinned to the points a report shows.

NumPy alone: a run computes these before it hands them to matplotlib, which may live in another
process (:mod:`.drawing`).
"""

from __future__ import annotations

import numpy as np

PLOTTABLE = 1e100  # larger values (a run that blew up) are off a log chart: matplotlib's ticks overflow
REPORT_POINTS = 4000  # a report draws at most this many points per curve


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
    # imported here: the drawing helper imports this module for positive() and must not load torch
    from ..physics.gravity import relative_errors

    rel_dE, rel_dL = relative_errors(trajectory["energy"][:, :1], trajectory["angular_momentum"][:, :1])
    starts = _windows(len(rel_dE), REPORT_POINTS)

    def largest(values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(np.nan_to_num(values[:, 0], nan=0.0), starts)

    return {"time": trajectory["time"][starts, 0], "rel_dE": largest(rel_dE), "rel_dL": largest(rel_dL),
            "dt": np.minimum.reduceat(trajectory["dt"][:, 0], starts), "position": trajectory["position"][starts, 0],
            "systems": int(trajectory["energy"].shape[1])}
