"""Runs of REBOUND's integrators (the optional ``reference`` extra), system by system: IAS15 as
the reference and as a competitor, WHFast as a competitor where one mass dominates.

Each run is made twice: once timed alone, once with a no-op additional force that counts the
force evaluations (REBOUND calls it once per evaluation) and a heartbeat that tracks the energy
error after every step. Energies are ours, from the engine's physics (REBOUND's ``energy()``
leaves out the softening).
"""

from __future__ import annotations

import time as wallclock
from dataclasses import dataclass

import numpy as np
import torch

from ..physics.gravity import State, total_energy


@dataclass(frozen=True)
class ReboundRun:
    """One system's run: final positions and velocities (N, D), steps, force evaluations, max
    |dE/E| over its steps, final |dE/E| and the wall time of the timed run (s)."""

    position: np.ndarray
    velocity: np.ndarray
    steps: int
    force_evals: int
    max_rel_dE: float
    final_rel_dE: float
    wall_time_s: float


def energies(mass: np.ndarray, position: np.ndarray, velocity: np.ndarray, softening: float) -> np.ndarray:
    """The engine's total energy (S,) of S snapshots of one system: masses (N,), positions and
    velocities (S, N, D)."""
    snapshots = position.shape[0]
    state = State(torch.as_tensor(mass, dtype=torch.float64).expand(snapshots, -1),
                  torch.as_tensor(position, dtype=torch.float64), torch.as_tensor(velocity, dtype=torch.float64),
                  torch.zeros(snapshots, dtype=torch.float64))
    return total_energy(state, softening).numpy()


def simulation(integrator: str, mass, position, velocity, softening: float, dt: float | None = None):
    """A REBOUND simulation of one system (positions and velocities (N, D), D = 2 or 3)."""
    import rebound

    sim = rebound.Simulation()
    sim.integrator = integrator
    sim.softening = softening
    if dt is not None:
        sim.dt = dt
    for m, x, v in zip(mass, position, velocity):
        x3, v3 = np.zeros(3), np.zeros(3)
        x3[: len(x)], v3[: len(v)] = x, v
        sim.add(m=float(m), x=x3[0], y=x3[1], z=x3[2], vx=v3[0], vy=v3[1], vz=v3[2])
    return sim


def run(integrator: str, mass, position, velocity, softening: float, t_end: float, dt: float | None = None
        ) -> ReboundRun:
    """One system (numpy arrays) integrated to ``t_end`` by ``integrator`` (ias15, whfast)."""
    dim = position.shape[-1]
    timed = simulation(integrator, mass, position, velocity, softening, dt)
    start = wallclock.perf_counter()
    timed.integrate(float(t_end), exact_finish_time=1)
    wall = wallclock.perf_counter() - start
    x, v = np.zeros((len(mass), 3)), np.zeros((len(mass), 3))
    timed.serialize_particle_data(xyz=x, vxvyvz=v)
    counted = simulation(integrator, mass, position, velocity, softening, dt)
    calls, seen = [0], [_padded(position, velocity)]
    buffers = np.zeros((len(mass), 3)), np.zeros((len(mass), 3))

    def count(_sim) -> None:
        calls[0] += 1

    def heartbeat(_sim) -> None:
        counted.serialize_particle_data(xyz=buffers[0], vxvyvz=buffers[1])
        seen.append((buffers[0].copy(), buffers[1].copy()))

    counted.additional_forces = count
    counted.force_is_velocity_dependent = 0  # the no-op force depends on nothing: the run is as without it
    counted.heartbeat = heartbeat
    counted.integrate(float(t_end), exact_finish_time=1)
    seen.append((x, v))
    energy = energies(mass, np.stack([s[0] for s in seen]), np.stack([s[1] for s in seen]), softening)
    rel_dE = np.abs(energy / energy[0] - 1)
    worst, final = float(rel_dE.max()), float(rel_dE[-1])
    return ReboundRun(x[:, :dim], v[:, :dim], int(timed.steps_done), calls[0], worst, final, wall)


def _padded(position: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) as (N, 3)."""
    pad = ((0, 0), (0, 3 - position.shape[-1]))
    return np.pad(position, pad), np.pad(velocity, pad)
