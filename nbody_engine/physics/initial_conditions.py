"""Initial conditions: random systems, Kepler orbits and their families (also with unequal masses),
hierarchical triples and small bound clusters (the training families of ``train_family``), and IC files.

IC files (``.npy`` or ``.txt``) hold one row per body: ``mass, x.., v..`` (so 1 + 2D columns),
or a stack of such blocks, shape (B, N, 1 + 2D), for a batch of systems in a ``.npy``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..config.errors import InputError
from ..config.files import read_ic_array
from .gravity import State, centre_of_mass_frame, kinetic_energy, potential_energy


def check_start(state: State, gravity, source: str) -> None:
    """Refuse systems no run can start from: two bodies at one position without softening (an
    infinite force), and values whose energy or forces overflow (masses of 1e308). ``gravity``
    gives the accelerations and potential; ``source`` names where the systems came from."""
    if gravity.softening == 0:
        separations = (state.position.unsqueeze(1) - state.position.unsqueeze(2)).norm(dim=-1)
        separations = separations + torch.eye(state.num_bodies, dtype=separations.dtype, device=separations.device)
        hit = (separations == 0).nonzero()
        if len(hit):
            system, i, j = (int(v) for v in hit[0])
            raise InputError(f"{source}: bodies {min(i, j)} and {max(i, j)} of system {system} start at the same "
                             "position, where the force is infinite; move them apart or set 'softening' > 0")
    acc, potential = gravity(state)
    kinetic = 0.5 * (state.mass * (state.velocity**2).sum(-1)).sum(-1)
    finite = torch.isfinite(acc).flatten(1).all(1) & torch.isfinite(potential) & torch.isfinite(kinetic)
    if not bool(finite.all()):
        system = int((~finite).nonzero()[0, 0])
        raise InputError(f"{source}: the energy or the forces of system {system} overflow (largest mass "
                         f"{float(state.mass[system].max()):.3g}); give masses, positions and velocities on a scale "
                         "where their products stay finite (G = 1)")


def make_state(mass, position, velocity, dtype=torch.float64, device="cpu") -> State:
    """A State from array-likes shaped (B, N), (B, N, D), (B, N, D); time starts at 0."""
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    mass, position, velocity = as_t(mass), as_t(position), as_t(velocity)
    return State(mass, position, velocity, torch.zeros(mass.shape[0], dtype=dtype, device=device))


def random_system(num_particles: int, dim: int, *, num_systems: int = 1, mass: float = 1.0,
                  pos_scale: float = 0.1, vel_scale: float = 1.0, generator: torch.Generator | None = None,
                  dtype=torch.float64, device="cpu") -> State:
    """Equal-mass bodies with Gaussian positions (std ``pos_scale``) and velocities (std
    ``vel_scale``), moved to the centre-of-mass frame."""
    shape = (num_systems, num_particles, dim)
    position = torch.randn(shape, generator=generator, dtype=torch.float64) * pos_scale
    velocity = torch.randn(shape, generator=generator, dtype=torch.float64) * vel_scale
    masses = torch.full(shape[:2], float(mass), dtype=torch.float64)
    state = State(masses, position, velocity, torch.zeros(num_systems, dtype=torch.float64))
    return centre_of_mass_frame(state).to(device=device, dtype=dtype)


def kepler_orbit(e, a, *, mass: float = 1.0, dim: int = 2, dtype=torch.float64, device="cpu") -> State:
    """Two bodies of mass ``mass`` each on a bound orbit of eccentricity ``e`` and semi-major
    axis ``a`` (scalars or 1-D arrays: one system each), starting at pericentre in the x-y plane,
    centre of mass at rest at the origin. The period is ``2 pi sqrt(a^3 / (2 mass))``."""
    e = torch.as_tensor(e, dtype=torch.float64).reshape(-1)
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    e, a = torch.broadcast_tensors(e, a)
    if ((e < 0) | (e >= 1)).any() or (a <= 0).any():
        raise InputError("Kepler orbits need 0 <= e < 1 and a > 0")
    M = 2.0 * mass
    r_p = a * (1 - e)
    v_p = torch.sqrt(M * (1 + e) / (a * (1 - e)))
    B = e.shape[0]
    rel_x = torch.zeros(B, dim, dtype=torch.float64)
    rel_v = torch.zeros(B, dim, dtype=torch.float64)
    rel_x[:, 0], rel_v[:, 1] = r_p, v_p
    position = torch.stack([-0.5 * rel_x, 0.5 * rel_x], 1)
    velocity = torch.stack([-0.5 * rel_v, 0.5 * rel_v], 1)
    masses = torch.full((B, 2), float(mass), dtype=torch.float64)
    return State(masses, position, velocity, torch.zeros(B, dtype=torch.float64)).to(device=device, dtype=dtype)


def kepler_period(a, mass: float = 1.0) -> torch.Tensor:
    """Period of a two-body orbit of semi-major axis ``a`` with bodies of ``mass`` each."""
    return 2 * math.pi * torch.sqrt(torch.as_tensor(a, dtype=torch.float64) ** 3 / (2.0 * mass))


def kepler_family(num_orbits: int, e_range: tuple[float, float], a_range: tuple[float, float], *,
                  mass: float = 1.0, dim: int = 2, generator: torch.Generator | None = None,
                  dtype=torch.float64, device="cpu") -> State:
    """``num_orbits`` Kepler orbits with e and a drawn uniformly from their ranges."""
    u = torch.rand(2, num_orbits, generator=generator, dtype=torch.float64)
    e = e_range[0] + (e_range[1] - e_range[0]) * u[0]
    a = a_range[0] + (a_range[1] - a_range[0]) * u[1]
    return kepler_orbit(e, a, mass=mass, dim=dim, dtype=dtype, device=device)


def energy_period(state: State) -> torch.Tensor:
    """``2 pi sqrt(a_E^3 / M)`` per system (B,), with ``a_E = sum_{i<j} m_i m_j / (2 |E|)`` and M
    the total mass: a bound binary's Kepler period exactly; for more bodies the period of a binary
    with the system's binding energy (a hierarchical triple: about its inner period; a cluster: a
    few crossing times). Infinite for unbound systems (E >= 0)."""
    energy = kinetic_energy(state) + potential_energy(state)
    i, j = torch.triu_indices(state.num_bodies, state.num_bodies, 1, device=state.mass.device)
    pair_mass = (state.mass[:, i] * state.mass[:, j]).sum(-1)
    size = pair_mass / (2 * (-energy).clamp_min(0))
    return 2 * math.pi * (size**3 / state.mass.sum(-1)).sqrt()


def _relative_orbit(e: torch.Tensor, a: torch.Tensor, total: torch.Tensor, anomaly: torch.Tensor,
                    angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative position and velocity (B, 2) of a Kepler orbit (eccentricity, semi-major axis,
    total mass, true anomaly, argument of pericentre; each (B,)) in the x-y plane."""
    p = a * (1 - e**2)
    r = p / (1 + e * anomaly.cos())
    speed = (total / p).sqrt()
    phase = anomaly + angle
    position = torch.stack([r * phase.cos(), r * phase.sin()], -1)
    v_perifocal = torch.stack([-speed * anomaly.sin(), speed * (e + anomaly.cos())], -1)
    c, s = angle.cos(), angle.sin()
    vx, vy = v_perifocal.unbind(-1)
    velocity = torch.stack([c * vx - s * vy, s * vx + c * vy], -1)
    return position, velocity


def _uniform(generator, num: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(num, generator=generator, dtype=torch.float64)


def _mass_ratio(generator, num: int, smallest: float) -> torch.Tensor:
    """Mass ratios (B,) drawn log-uniformly from [smallest, 1]."""
    return torch.exp(_uniform(generator, num, math.log(smallest), 0.0))


def _in_dim(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """Planar vectors (..., 2) in ``dim`` dimensions (z = 0 in 3D)."""
    return vectors if dim == 2 else torch.cat([vectors, torch.zeros_like(vectors[..., :1])], -1)


def unequal_binaries(num: int, e_range: tuple[float, float], a_range: tuple[float, float], smallest_ratio: float, *,
                     mass: float = 1.0, dim: int = 2, generator: torch.Generator | None = None,
                     dtype=torch.float64, device="cpu") -> State:
    """``num`` bound binaries of total mass ``2 mass``, mass ratio log-uniform in
    [``smallest_ratio``, 1], e and a uniform in their ranges, at pericentre."""
    e, a = _uniform(generator, num, *e_range), _uniform(generator, num, *a_range)
    q = _mass_ratio(generator, num, smallest_ratio)
    total = torch.full_like(e, 2.0 * mass)
    masses = torch.stack([total / (1 + q), total * q / (1 + q)], -1)
    rel_x, rel_v = _relative_orbit(e, a, total, torch.zeros_like(e), torch.zeros_like(e))
    share = torch.stack([-masses[:, 1], masses[:, 0]], -1).unsqueeze(-1) / total.view(-1, 1, 1)  # (B, 2, 1)
    state = State(masses, _in_dim(share * rel_x.unsqueeze(1), dim), _in_dim(share * rel_v.unsqueeze(1), dim),
                  torch.zeros(num, dtype=torch.float64))
    return state.to(device=device, dtype=dtype)


TRIPLE_RATIO = (8.0, 14.0)  # a_out / a_in: stable (Mardling & Aarseth 2001) for e_out <= 0.3 and these masses
TRIPLE_OUTER_E = (0.0, 0.3)


def hierarchical_triples(num: int, e_range: tuple[float, float], a_range: tuple[float, float],
                         smallest_ratio: float, *, mass: float = 1.0, dim: int = 2,
                         generator: torch.Generator | None = None, dtype=torch.float64, device="cpu") -> State:
    """``num`` hierarchical triples of total mass ``3 mass``: an inner binary (mass ratio
    log-uniform in [``smallest_ratio``, 1], e and a uniform in their ranges, random phase and
    orientation) and a third body (mass ratio to the binary the same way) on an orbit with
    ``a_out / a_in`` uniform in TRIPLE_RATIO and ``e_out`` in TRIPLE_OUTER_E, coplanar (z = 0 in 3D)."""
    e_in, a_in = _uniform(generator, num, *e_range), _uniform(generator, num, *a_range)
    q_in, q_out = _mass_ratio(generator, num, smallest_ratio), _mass_ratio(generator, num, smallest_ratio)
    a_out, e_out = a_in * _uniform(generator, num, *TRIPLE_RATIO), _uniform(generator, num, *TRIPLE_OUTER_E)
    angles = [_uniform(generator, num, 0.0, 2 * math.pi) for _ in range(4)]
    total = torch.full_like(e_in, 3.0 * mass)
    m_c = total * q_out / (1 + q_out)
    m_in = total - m_c
    m_a, m_b = m_in / (1 + q_in), m_in * q_in / (1 + q_in)
    in_x, in_v = _relative_orbit(e_in, a_in, m_in, angles[0], angles[1])
    out_x, out_v = _relative_orbit(e_out, a_out, total, angles[2], angles[3])
    # each body: its share of the inner relative vector about the binary's centre, and of the outer about the whole's
    shares_in = torch.stack([-m_b / m_in, m_a / m_in, torch.zeros_like(m_in)], -1).unsqueeze(-1)
    shares_out = torch.stack([-m_c / total, -m_c / total, m_in / total], -1).unsqueeze(-1)
    position = shares_in * in_x.unsqueeze(1) + shares_out * out_x.unsqueeze(1)
    velocity = shares_in * in_v.unsqueeze(1) + shares_out * out_v.unsqueeze(1)
    state = State(torch.stack([m_a, m_b, m_c], -1), _in_dim(position, dim), _in_dim(velocity, dim),
                  torch.zeros(num, dtype=torch.float64))
    return state.to(device=device, dtype=dtype)


CLUSTER_VIRIAL_RATIO = 0.5  # T / |W| of a cluster in virial equilibrium


def bound_clusters(num: int, bodies: int, smallest_ratio: float, *, mass: float = 1.0, dim: int = 2,
                   generator: torch.Generator | None = None, dtype=torch.float64, device="cpu") -> State:
    """``num`` clusters of ``bodies`` bodies (masses log-uniform in [``smallest_ratio``, 1] times
    ``mass``), uniform in the unit ball, with Gaussian velocities scaled to virial equilibrium
    (T / |W| = 0.5, so bound), in the centre-of-mass frame."""
    shape = (num, bodies, dim)
    direction = torch.randn(shape, generator=generator, dtype=torch.float64)
    radius = torch.rand(shape[:2] + (1,), generator=generator, dtype=torch.float64) ** (1 / dim)
    position = direction / direction.norm(dim=-1, keepdim=True) * radius
    velocity = torch.randn(shape, generator=generator, dtype=torch.float64)
    masses = mass * _mass_ratio(generator, num * bodies, smallest_ratio).view(num, bodies)
    state = centre_of_mass_frame(State(masses, position, velocity, torch.zeros(num, dtype=torch.float64)))
    scale = (CLUSTER_VIRIAL_RATIO * potential_energy(state).abs() / kinetic_energy(state)).sqrt()
    return state.replace(velocity=state.velocity * scale.view(-1, 1, 1)).to(device=device, dtype=dtype)


def load_ic_file(path: str | Path, dim: int | None = None, dtype=torch.float64, device="cpu") -> State:
    """Read an IC file (:func:`nbody_engine.config.files.read_ic_array`): rows ``mass, x.., v..``;
    ``dim`` (if given) must match its columns."""
    path = Path(path)
    table = read_ic_array(path)
    file_dim = (table.shape[2] - 1) // 2
    if dim is not None and file_dim != dim:
        raise InputError(f"IC file '{path}' is {file_dim}-D but 'dim' is {dim}; set dim = {file_dim}")
    if not np.isfinite(table).all():
        raise InputError(f"IC file '{path}' contains NaN or infinite values")
    if (table[..., 0] <= 0).any():
        raise InputError(f"IC file '{path}' has a non-positive mass in its first column")
    return make_state(table[..., 0], table[..., 1:1 + file_dim], table[..., 1 + file_dim:], dtype, device)


def save_ic_file(path: str | Path, state: State) -> None:
    """Write ``state`` in the IC file format (``.npy`` keeps a batch, ``.txt`` one system)."""
    table = torch.cat([state.mass.unsqueeze(-1), state.position, state.velocity], -1).cpu().numpy()
    path = Path(path)
    if path.suffix == ".npy":
        np.save(path, table)
    else:
        np.savetxt(path, table[0], header="mass " + " ".join(f"x{i}" for i in range(state.dim))
                   + " " + " ".join(f"v{i}" for i in range(state.dim)))
