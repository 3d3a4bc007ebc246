"""The metrics of one policy on one problem, a row per system and knob value.

- ``max_rel_dE``, ``final_rel_dE``: max over the run and final |E(t)/E0 - 1|; ``max_rel_dL``,
  ``final_rel_dL`` the same for the angular momentum (NaN where L0 = 0, as in Burrau's problem);
- ``position_error``: the largest distance of a body from where the reference puts it at the
  end, in units of the system's initial size (rms distance of the bodies from their centre of
  mass); ``phase_error`` (two bodies only): the angle in radians between the final separation
  vectors of run and reference;
- ``steps``, ``force_evals`` (steps times the policy's force evaluations per step) and
  ``evals_per_period``: force evaluations per time unit of the problem (the Kepler period,
  the inner binary's period, ...);
- ``wall_time_s``: the policy's measured time per step on one system of the problem, times its
  steps: what the system would take alone (a batch shares its steps' cost among its systems).
"""

from __future__ import annotations

import math

import numpy as np

from ..integrators.loop import Trajectory
from ..physics.gravity import relative_errors
from .problems import Problem
from .reference import Reference

COLUMNS = ("problem", "system", "label", "policy", "eps", "steps", "force_evals", "evals_per_period", "max_rel_dE",
           "final_rel_dE", "max_rel_dL", "final_rel_dL", "position_error", "phase_error", "wall_time_s")


def initial_size(problem: Problem) -> np.ndarray:
    """rms distance of the bodies from their centre of mass at the start, (B,)."""
    state = problem.state
    mass = state.mass.cpu().numpy()[..., None]
    position = state.position.cpu().numpy()
    com = (mass * position).sum(1, keepdims=True) / mass.sum(1, keepdims=True)
    return np.sqrt(((position - com) ** 2).sum(-1).mean(-1))


def _phase_error(position: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Angle between the final separations of two-body systems (S,); NaN for more bodies."""
    if position.shape[1] != 2:
        return np.full(position.shape[0], math.nan)
    mine, theirs = position[:, 1] - position[:, 0], reference[:, 1] - reference[:, 0]
    cosine = (mine * theirs).sum(-1) / (np.linalg.norm(mine, axis=-1) * np.linalg.norm(theirs, axis=-1))
    return np.arccos(np.clip(cosine, -1.0, 1.0))


def _finite_max(values: np.ndarray) -> np.ndarray:
    """Max over rows (axis 0) of the finite values; NaN for a column without one."""
    finite = np.isfinite(values)
    return np.where(finite.any(0), np.where(finite, values, -np.inf).max(0), math.nan)


def rows_of(problem: Problem, policy: str, eps: list[float | None], traj: Trajectory, reference: Reference,
            evals_per_step: int, seconds_per_step: float) -> list[dict]:
    """Rows for a run of ``len(eps)`` copies of the problem's B systems, knob-major: system b at
    knob k is column ``k * B + b`` of the trajectory."""
    systems = problem.state.batch_size
    rel_dE, rel_dL = relative_errors(traj.energy, traj.angular_momentum)
    final = traj.position[-1]
    copies = len(eps)
    reference_position = np.tile(reference.position, (copies, 1, 1))
    size = np.tile(initial_size(problem), copies)
    position_error = np.linalg.norm(final - reference_position, axis=-1).max(-1) / size
    phase_error = _phase_error(final, reference_position)
    max_dE, max_dL = _finite_max(rel_dE), _finite_max(rel_dL)
    periods = np.tile((problem.t_end / problem.time_unit).cpu().numpy(), copies)
    rows = []
    for column in range(systems * copies):
        steps = int(traj.steps[column])
        evals = steps * evals_per_step
        rows.append({"problem": problem.name, "system": column % systems, "label": problem.labels[column % systems],
                     "policy": policy, "eps": eps[column // systems], "steps": steps,
                     "force_evals": evals, "evals_per_period": evals / periods[column],
                     "max_rel_dE": float(max_dE[column]), "final_rel_dE": float(rel_dE[-1, column]),
                     "max_rel_dL": float(max_dL[column]), "final_rel_dL": float(rel_dL[-1, column]),
                     "position_error": float(position_error[column]),
                     "phase_error": float(phase_error[column]), "wall_time_s": steps * seconds_per_step})
    return rows


def reference_rows(problem: Problem, reference: Reference) -> list[dict]:
    """IAS15's own cost, for the record (none for the fallback): its final |dE/E| and no error
    against itself."""
    periods = (problem.t_end / problem.time_unit).cpu().numpy()
    return [{"problem": problem.name, "system": b, "label": problem.labels[b], "policy": "IAS15", "eps": None,
             "steps": cost["steps"], "force_evals": cost["force_evals"],
             "evals_per_period": cost["force_evals"] / periods[b], "max_rel_dE": math.nan,
             "final_rel_dE": float(reference.rel_dE[b]), "max_rel_dL": math.nan, "final_rel_dL": math.nan,
             "position_error": 0.0,
             "phase_error": 0.0 if problem.state.num_bodies == 2 else math.nan, "wall_time_s": cost["wall_time_s"]}
            for b, cost in enumerate(reference.cost)]
