"""Initial conditions: random systems, Kepler orbits and their families, and IC files.

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
from .gravity import State, centre_of_mass_frame


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
