"""A position error that does not saturate, for bound binaries: the exact Kepler orbit at every
recorded time, against the run's relative orbit.

A final position error saturates: every leapfrog run of an e >= 0.9 orbit ends about pi out of
phase, so its final error is about the orbit's size whatever the integrator. The exact solution
of the two-body problem is known at any time (Kepler's equation), so each recorded row can be
compared with it:

- ``error_one_period``: the relative orbit's position error one period in (at the last recorded
  row not after it), in units of the semi-major axis;
- ``periods_to_tenth``: the time, in periods, until that error first exceeds 0.1 of the
  semi-major axis (None where it never does within the run): how long the run stays usable.
"""

from __future__ import annotations

import math

import numpy as np

TENTH = 0.1
KEPLER_ITERATIONS = 30  # Newton steps on Kepler's equation (converges in a handful from E = M + e sin M)


def exact_relative_orbit(x0: np.ndarray, v0: np.ndarray, total: np.ndarray, time: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact separation (rows, B, D) at ``time`` (rows, B) of binaries starting with
    separation ``x0`` and relative velocity ``v0`` (B, D), total mass ``total`` (B,); also their
    semi-major axes and periods (B,). Bound orbits only (e < 1)."""
    dim = x0.shape[-1]
    x3, v3 = np.zeros((len(x0), 3)), np.zeros((len(x0), 3))
    x3[:, :dim], v3[:, :dim] = x0, v0
    r0 = np.linalg.norm(x3, axis=-1)
    h = np.cross(x3, v3)
    e_vec = np.cross(v3, h) / total[:, None] - x3 / r0[:, None]
    e = np.linalg.norm(e_vec, axis=-1)
    a = 1 / (2 / r0 - (v3 * v3).sum(-1) / total)
    n = np.sqrt(total / a**3)
    p_axis = np.where(e[:, None] > 1e-12, e_vec / np.maximum(e, 1e-300)[:, None], x3 / r0[:, None])
    q_axis = np.cross(h / np.linalg.norm(h, axis=-1)[:, None], p_axis)
    cos_nu = (x3 * p_axis).sum(-1) / r0
    sin_nu = (x3 * q_axis).sum(-1) / r0
    eccentric0 = np.arctan2(np.sqrt(1 - e**2) * sin_nu, e + cos_nu)
    mean = eccentric0 - e * np.sin(eccentric0) + n * time
    eccentric = mean + e * np.sin(mean)
    for _ in range(KEPLER_ITERATIONS):
        eccentric -= (eccentric - e * np.sin(eccentric) - mean) / (1 - e * np.cos(eccentric))
    along_p = a * (np.cos(eccentric) - e)
    along_q = a * np.sqrt(1 - e**2) * np.sin(eccentric)
    separation = along_p[..., None] * p_axis + along_q[..., None] * q_axis
    return separation[..., :dim], a, 2 * math.pi / n


def phase_metrics(mass: np.ndarray, position: np.ndarray, velocity: np.ndarray, time: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """``error_one_period`` and ``periods_to_tenth`` (B,) of recorded two-body runs: masses
    (B, 2), positions and velocities (rows, B, 2, D) from row 0, times (rows, B)."""
    run = position[:, :, 1] - position[:, :, 0]
    exact, a, period = exact_relative_orbit(run[0], velocity[0, :, 1] - velocity[0, :, 0], mass.sum(-1), time)
    error = np.linalg.norm(run - exact, axis=-1) / a  # (rows, B)
    one_period = np.where(time <= period, np.arange(len(time))[:, None], -1).max(0)
    beyond = error > TENTH
    first = np.where(beyond.any(0), beyond.argmax(0), -1)
    columns = np.arange(error.shape[1])
    return {"error_one_period": error[one_period, columns],
            "periods_to_tenth": np.where(first >= 0, time[first, columns] / period, math.nan)}
