"""The metrics of one policy on one problem, a row per system and knob value.

- ``max_rel_dE``, ``final_rel_dE``: max over the run and final |E(t)/E0 - 1|; ``max_rel_dL``,
  ``final_rel_dL`` the same for the angular momentum (NaN where L0 = 0, as in Burrau's problem);
- ``position_error``: the largest distance of a body from where the reference puts it at the
  end, in units of the system's size (:func:`system_size`: the semi-major axis of a bound
  binary, else the larger rms distance of the bodies from their centre of mass at the start and
  at the reference's end); ``phase_error`` (two bodies only): the angle in radians between the final separation
  vectors of run and reference;
- ``steps``, ``force_evals`` (counted by the simulation: a step's one plus the policy's trial
  steps, iterations and landing on the end time; REBOUND's counted by a no-op force) and
  ``evals_per_period``: force evaluations per time unit of the problem (the Kepler period,
  the inner binary's period, ...);
- ``error_one_period``, ``periods_to_tenth`` (bound binaries, against the exact Kepler orbit:
  :mod:`.kepler_phase`): the relative orbit's position error one period in, in semi-major axes,
  and the periods until it first exceeds 0.1 of one (NaN: never within the run, or not a binary);
- ``checkpoint``: a learned row's checkpoint, its index in ``model_path`` then
  ``eval_model_paths`` (empty for other policies);
- ``family``: "in" where the system lies in the checkpoint's training family (its body count,
  and for binaries its eccentricity and semi-major axis ranges), else "out";
- ``wall_time_s``: the policy's measured time per step on one system of the problem, times its
  steps: what the system would take alone (a batch shares its steps' cost among its systems).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..integrators.loop import Trajectory, period_of
from ..physics.gravity import relative_errors
from .kepler_phase import phase_metrics
from .problems import Problem
from .reference import Reference

COLUMNS = ("problem", "system", "label", "family", "policy", "checkpoint", "eps", "steps", "force_evals",
           "evals_per_period",
           "max_rel_dE", "final_rel_dE", "max_rel_dL", "final_rel_dL", "position_error", "phase_error", "wall_time_s",
           "error_one_period", "periods_to_tenth", "long_periods", "long_first_dE", "long_last_dE", "growth_exponent")
NOT_RUN_LONG = {"long_periods": math.nan, "long_first_dE": math.nan, "long_last_dE": math.nan,
                "growth_exponent": math.nan}  # the long-run columns of a row without a long run


def initial_size(problem: Problem) -> np.ndarray:
    """rms distance of the bodies from their centre of mass at the start, (B,)."""
    return _rms_size(problem.state.mass.cpu().numpy(), problem.state.position.cpu().numpy())


def system_size(problem: Problem, reference: Reference) -> np.ndarray:
    """The length (B,) position errors are measured in: the semi-major axis of a bound binary
    (its initial separation can be 1% of it, at pericentre of an e = 0.99 orbit), else the
    larger rms size of the system at the start and at the reference's end."""
    state = problem.state
    mass = state.mass.cpu().numpy()
    if state.num_bodies == 2:
        separation = (state.position[:, 1] - state.position[:, 0]).norm(dim=-1).cpu().numpy()
        speed2 = ((state.velocity[:, 1] - state.velocity[:, 0]) ** 2).sum(-1).cpu().numpy()
        total = mass.sum(-1)
        energy = 0.5 * speed2 - total / np.hypot(separation, problem.softening)
        if (energy < 0).all():
            return -total / (2 * energy)
    return np.maximum(initial_size(problem), _rms_size(mass, reference.position))


def _rms_size(mass: np.ndarray, position: np.ndarray) -> np.ndarray:
    """rms distance of the bodies (B, N, D) from their centre of mass, (B,)."""
    weights = mass[..., None]
    com = (weights * position).sum(1, keepdims=True) / weights.sum(1, keepdims=True)
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
            seconds_per_step: float) -> list[dict]:
    """Rows for a run of ``len(eps)`` copies of the problem's B systems, knob-major: system b at
    knob k is column ``k * B + b`` of the trajectory."""
    rel_dE, rel_dL = relative_errors(traj.energy, traj.angular_momentum)
    measured = {"steps": traj.steps, "force_evals": traj.force_evals, "max_rel_dE": _finite_max(rel_dE),
                "final_rel_dE": rel_dE[-1], "max_rel_dL": _finite_max(rel_dL), "final_rel_dL": rel_dL[-1],
                "wall_time_s": traj.steps * seconds_per_step}
    if bound_binaries(problem):
        measured |= phase_metrics(traj.mass, traj.position, traj.velocity, traj.time)
    else:
        measured |= {key: np.full(len(traj.steps), math.nan) for key in PHASE_COLUMNS}
    return table_rows(problem, policy, eps, traj.position[-1], measured, reference)


PHASE_COLUMNS = ("error_one_period", "periods_to_tenth")


def bound_binaries(problem: Problem) -> bool:
    """Whether every system of ``problem`` is a bound two-body orbit (its exact solution known)."""
    state = problem.state
    return bool(torch.isfinite(period_of(state.mass, state.position, state.velocity)).all()) and \
        problem.softening == 0


def table_rows(problem: Problem, policy: str, eps: list[float | None], final: np.ndarray, measured: dict,
               reference: Reference) -> list[dict]:
    """Rows of ``len(eps)`` copies of the problem's B systems (knob-major: system b at knob k is
    column ``k * B + b``) from their final positions (columns, N, D) and the ``measured`` arrays
    (columns,) of steps, force_evals, max/final rel_dE and rel_dL and wall_time_s."""
    systems, copies = problem.state.batch_size, len(eps)
    reference_position = np.tile(reference.position, (copies, 1, 1))
    size = np.tile(system_size(problem, reference), copies)
    position_error = np.linalg.norm(final - reference_position, axis=-1).max(-1) / size
    phase_error = _phase_error(final, reference_position)
    periods = np.tile((problem.t_end / problem.time_unit).cpu().numpy(), copies)
    rows = []
    for column in range(systems * copies):
        values = {k: (int if k in ("steps", "force_evals") else float)(v[column]) for k, v in measured.items()}
        values = {**dict.fromkeys(PHASE_COLUMNS, math.nan), **values}
        rows.append({"problem": problem.name, "system": column % systems, "label": problem.labels[column % systems],
                     "policy": policy, "eps": eps[column // systems], **values,
                     "evals_per_period": values["force_evals"] / periods[column],
                     "position_error": float(position_error[column]), "phase_error": float(phase_error[column]),
                     **NOT_RUN_LONG})
    return rows


def reference_rows(problem: Problem, reference: Reference) -> list[dict]:
    """IAS15's own rows (none for the fallback): its cost, its max and final |dE/E| and no
    error against itself."""
    periods = (problem.t_end / problem.time_unit).cpu().numpy()
    return [{"problem": problem.name, "system": b, "label": problem.labels[b], "policy": "IAS15", "eps": None,
             "steps": cost["steps"], "force_evals": cost["force_evals"],
             "evals_per_period": cost["force_evals"] / periods[b], "max_rel_dE": cost["max_rel_dE"],
             "final_rel_dE": float(reference.rel_dE[b]), "max_rel_dL": math.nan, "final_rel_dL": math.nan,
             "position_error": 0.0,
             "phase_error": 0.0 if problem.state.num_bodies == 2 else math.nan, "wall_time_s": cost["wall_time_s"],
             "error_one_period": math.nan, "periods_to_tenth": math.nan, **NOT_RUN_LONG}
            for b, cost in enumerate(reference.cost)]
