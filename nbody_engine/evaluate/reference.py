"""The reference trajectory of every problem: where each system truly is at its end time.

REBOUND's IAS15 (Rein & Spiegel 2015), the field's reference integrator: 15th order, adaptive,
with energy errors at the level of round-off. ``rebound`` is an optional dependency (the
``reference`` extra); without it the reference is our own converged run, the time-symmetric
analytic policy at ``eps / 16``, and the output says so. ``eval_reference`` chooses: ``auto``
(IAS15 when installed), ``ias15`` (an error without rebound) or ``leapfrog`` (the fallback).

IAS15's cost is recorded too: its steps, force evaluations (counted by a no-op additional
force, which REBOUND calls once per evaluation), its own max |dE/E| over its steps and wall
time per system: a competitor's row as well as the yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config.errors import InputError
from ..integrators.loop import StopRule, simulate
from ..integrators.policies import AnalyticDt, TimeSymmetricDt
from ..physics.gravity import Gravity
from .problems import Problem
from .rebound_runs import run

FALLBACK_REFINEMENT = 16  # the fallback's eps is the run's eps divided by this


@dataclass(frozen=True)
class Reference:
    """Final positions (B, N, D) of every system; ``name`` says which integrator made them;
    ``rel_dE``: its own |dE/E| at the end (B,); ``cost``: IAS15's steps, force evaluations, wall
    time and max |dE/E| per system (empty for the fallback)."""

    name: str
    position: np.ndarray
    velocity: np.ndarray
    rel_dE: np.ndarray
    cost: list[dict]


def rebound_available() -> bool:
    try:
        import rebound  # noqa: F401
    except ImportError:
        return False
    return True


def reference_for(problem: Problem, choice: str, eps: float) -> Reference:
    """The reference of ``problem`` by ``choice`` (``auto``, ``ias15``, ``leapfrog``)."""
    if choice == "ias15" and not rebound_available():
        raise InputError("eval_reference = 'ias15' needs REBOUND: pip install 'nbody-explorer[reference]' "
                         "(or rebound), or set eval_reference = 'auto' to fall back to a converged leapfrog run")
    if choice == "leapfrog" or not rebound_available():
        return converged_leapfrog(problem, eps / FALLBACK_REFINEMENT)
    return ias15(problem)


def ias15(problem: Problem) -> Reference:
    """Each system integrated to its end time by IAS15 (:func:`.rebound_runs.run`: timed, and
    again counting its force evaluations and tracking its energy error after every step)."""
    import rebound

    state = problem.state
    mass, x0, v0 = (t.detach().cpu().double().numpy() for t in (state.mass, state.position, state.velocity))
    t_end = problem.t_end.detach().cpu().double().numpy()
    runs = [run("ias15", mass[b], x0[b], v0[b], problem.softening, t_end[b]) for b in range(state.batch_size)]
    cost = [{"steps": r.steps, "force_evals": r.force_evals, "wall_time_s": r.wall_time_s,
             "max_rel_dE": r.max_rel_dE} for r in runs]
    return Reference(f"IAS15 (REBOUND {rebound.__version__})", np.array([r.position for r in runs]),
                     np.array([r.velocity for r in runs]), np.array([r.final_rel_dE for r in runs]), cost)


def converged_leapfrog(problem: Problem, eps: float) -> Reference:
    """The fallback: the time-symmetric analytic policy at ``eps``, all systems in one batch."""
    gravity = Gravity(problem.softening)
    policy = TimeSymmetricDt(AnalyticDt(eps, problem.softening), gravity)
    traj = simulate(problem.state, policy, gravity, StopRule(t_end=problem.t_end))
    rel_dE = np.abs(traj.energy[-1] / traj.energy[0] - 1)
    return Reference(f"converged leapfrog (time-symmetric analytic, eps = {eps:g}; REBOUND not used)",
                     traj.position[-1], traj.velocity[-1], rel_dE, [])

