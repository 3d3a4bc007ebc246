"""The reference trajectory of every problem: where each system truly is at its end time.

REBOUND's IAS15 (Rein & Spiegel 2015), the field's reference integrator: 15th order, adaptive,
with energy errors at the level of round-off. ``rebound`` is an optional dependency (the
``reference`` extra); without it the reference is our own converged run, the time-symmetric
analytic policy at ``eps / 16``, and the output says so. ``eval_reference`` chooses: ``auto``
(IAS15 when installed), ``ias15`` (an error without rebound) or ``leapfrog`` (the fallback).

IAS15's cost is recorded too: its steps, force evaluations (counted by a no-op additional
force, which REBOUND calls once per evaluation) and wall time per system.
"""

from __future__ import annotations

import time as wallclock
from dataclasses import dataclass

import numpy as np
from ..config.errors import InputError
from ..integrators.loop import StopRule, simulate
from ..integrators.policies import AnalyticDt, TimeSymmetricDt
from ..physics.gravity import Gravity, relative_change, total_energy
from ..physics.initial_conditions import make_state
from .problems import Problem

FALLBACK_REFINEMENT = 16  # the fallback's eps is the run's eps divided by this


@dataclass(frozen=True)
class Reference:
    """Final positions (B, N, D) of every system; ``name`` says which integrator made them;
    ``rel_dE``: its own max |dE/E| at the end (B,); ``cost``: IAS15's rows (empty for the fallback)."""

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


def _rebound_simulation(mass, position, velocity, softening: float):
    import rebound

    sim = rebound.Simulation()
    sim.integrator = "ias15"
    sim.softening = softening
    for m, x, v in zip(mass, position, velocity):
        x3, v3 = np.zeros(3), np.zeros(3)
        x3[: len(x)], v3[: len(v)] = x, v
        sim.add(m=float(m), x=x3[0], y=x3[1], z=x3[2], vx=v3[0], vy=v3[1], vz=v3[2])
    return sim


def ias15(problem: Problem) -> Reference:
    """Each system integrated to its end time by IAS15, twice: once timed, once counting forces.
    Energies are ours (REBOUND's ``energy()`` leaves out the softening)."""
    import rebound

    state, dim = problem.state, problem.state.dim
    mass, x0, v0 = (t.detach().cpu().double().numpy() for t in (state.mass, state.position, state.velocity))
    t_end = problem.t_end.detach().cpu().double().numpy()
    positions, velocities, cost = [], [], []
    for b in range(state.batch_size):
        sim = _rebound_simulation(mass[b], x0[b], v0[b], problem.softening)
        start = wallclock.perf_counter()
        sim.integrate(float(t_end[b]), exact_finish_time=1)
        wall = wallclock.perf_counter() - start
        positions.append([[p.x, p.y, p.z][:dim] for p in sim.particles])
        velocities.append([[p.vx, p.vy, p.vz][:dim] for p in sim.particles])
        cost.append({"steps": int(sim.steps_done), "force_evals": _ias15_force_evals(mass[b], x0[b], v0[b],
                                                                                   problem.softening, t_end[b]),
                     "wall_time_s": wall})
    positions, velocities = np.array(positions), np.array(velocities)
    energy0 = total_energy(state, problem.softening).cpu().numpy()
    energy1 = total_energy(make_state(mass, positions, velocities), problem.softening).numpy()
    return Reference(f"IAS15 (REBOUND {rebound.__version__})", positions, velocities,
                     relative_change(energy1, energy0, vector=False), cost)


def _ias15_force_evals(mass, position, velocity, softening: float, t_end: float) -> int:
    sim = _rebound_simulation(mass, position, velocity, softening)
    calls = [0]

    def count(_sim) -> None:
        calls[0] += 1

    sim.additional_forces = count
    sim.force_is_velocity_dependent = 0  # the no-op force depends on nothing: IAS15 runs as without it
    sim.integrate(float(t_end), exact_finish_time=1)
    return calls[0]


def converged_leapfrog(problem: Problem, eps: float) -> Reference:
    """The fallback: the time-symmetric analytic policy at ``eps``, all systems in one batch."""
    gravity = Gravity(problem.softening)
    policy = TimeSymmetricDt(AnalyticDt(eps, problem.softening), gravity)
    traj = simulate(problem.state, policy, gravity, StopRule(t_end=problem.t_end))
    rel_dE = relative_change(traj.energy[-1], traj.energy[0], vector=False)
    return Reference(f"converged leapfrog (time-symmetric analytic, eps = {eps:g}; REBOUND not used)",
                     traj.position[-1], traj.velocity[-1], rel_dE, [])

