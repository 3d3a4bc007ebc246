"""The seeded families of ``nbody-runner evaluate``'s problems: batches of float64 states (or
the parameters of the systems) drawn from the distributions each function states, the same
systems for the same ``torch.Generator`` seed. Units: G = 1.
"""

from __future__ import annotations

import math

import torch

from ..physics.gravity import State, centre_of_mass_frame, kinetic_energy, potential_energy

KEPLER_E_RANGE = (0.0, 0.98)


def kepler_family(generator: torch.Generator, num: int, a: float, mass: float, dim: int) -> State:
    """``num`` bound binaries of two bodies of ``mass`` and semi-major axis ``a`` in ``dim``
    dimensions (in the x-y plane): eccentricities stratified over KEPLER_E_RANGE (one uniform
    draw in each of ``num`` equal slices, so every run spans the range), pericentre direction and
    true anomaly uniform; centre of mass at rest at the origin."""
    low, high = KEPLER_E_RANGE
    e = low + (high - low) * (torch.arange(num, dtype=torch.float64) + _uniform(generator, num)) / num
    pericentre, anomaly = 2 * math.pi * _uniform(generator, num), 2 * math.pi * _uniform(generator, num)
    flat = torch.zeros(num, dtype=torch.float64)
    rel_x, rel_v = orbit_vectors(torch.full_like(e, a), e, flat, flat, pericentre, anomaly, 2 * mass)
    rel_x, rel_v = _padded(rel_x[:, :2], dim), _padded(rel_v[:, :2], dim)
    halves = torch.tensor([-0.5, 0.5], dtype=torch.float64).view(1, 2, 1)
    return State(torch.full((num, 2), float(mass), dtype=torch.float64), halves * rel_x.unsqueeze(1),
                 halves * rel_v.unsqueeze(1), torch.zeros(num, dtype=torch.float64))


def _uniform(generator: torch.Generator, num: int) -> torch.Tensor:
    return torch.rand(num, generator=generator, dtype=torch.float64)


TRIPLE_E_RANGE = (0.1, 0.9)
TRIPLE_RATIO_RANGE = (5.0, 30.0)  # a_out / a_in, log-uniform: stable (Mardling & Aarseth: above about 3.3)
TRIPLE_MAX_INCLINATION_DEG = 90.0


def triple_parameters(generator: torch.Generator, num: int) -> list[tuple[float, float, float]]:
    """``num`` hierarchical triples' (inner e, a_out / a_in, inclination in degrees): e uniform in
    TRIPLE_E_RANGE, the ratio log-uniform in TRIPLE_RATIO_RANGE, the inclination uniform in [0,
    TRIPLE_MAX_INCLINATION_DEG]."""
    (e_low, e_high), (r_low, r_high) = TRIPLE_E_RANGE, TRIPLE_RATIO_RANGE
    e = e_low + (e_high - e_low) * _uniform(generator, num)
    ratio = r_low * (r_high / r_low) ** _uniform(generator, num)
    inclination = TRIPLE_MAX_INCLINATION_DEG * _uniform(generator, num)
    return list(zip(e.tolist(), ratio.tolist(), inclination.tolist()))


IMPACT_RANGE = (0.0, 2.0)  # binary semi-major axes


def impact_parameters(generator: torch.Generator, num: int) -> list[float]:
    """``num`` impact parameters of a binary-single scattering, uniform in IMPACT_RANGE."""
    low, high = IMPACT_RANGE
    return (low + (high - low) * _uniform(generator, num)).tolist()


UNEQUAL_RATIOS = (0.1, 0.01)  # m2 / m1
UNEQUAL_E_RANGE = (0.1, 0.9)
UNEQUAL_PER_RATIO = 3


def unequal_binaries(generator: torch.Generator, a: float, total: float, dim: int,
                     per_ratio: int = UNEQUAL_PER_RATIO) -> tuple[State, tuple[float, ...]]:
    """``per_ratio`` bound binaries per mass ratio of UNEQUAL_RATIOS, each of total mass
    ``total`` and semi-major axis ``a``, e uniform in UNEQUAL_E_RANGE, at pericentre with its
    pericentre direction uniform in the x-y plane, centre of mass at rest at the origin. Returns
    the states (B = 2 * per_ratio) and each system's mass ratio."""
    ratios = torch.tensor(UNEQUAL_RATIOS, dtype=torch.float64).repeat_interleave(per_ratio)
    num = ratios.shape[0]
    low, high = UNEQUAL_E_RANGE
    e = low + (high - low) * torch.rand(num, generator=generator, dtype=torch.float64)
    angle = 2 * math.pi * torch.rand(num, generator=generator, dtype=torch.float64)
    r_p = a * (1 - e)
    v_p = (total * (1 + e) / r_p).sqrt()
    direction = torch.stack([angle.cos(), angle.sin()], -1)
    normal = torch.stack([-angle.sin(), angle.cos()], -1)
    rel_x, rel_v = _padded(r_p.unsqueeze(-1) * direction, dim), _padded(v_p.unsqueeze(-1) * normal, dim)
    masses = torch.stack([total / (1 + ratios), total * ratios / (1 + ratios)], -1)
    share = torch.stack([-masses[:, 1], masses[:, 0]], -1).unsqueeze(-1) / total  # (B, 2, 1): COM at rest
    state = State(masses, share * rel_x.unsqueeze(1), share * rel_v.unsqueeze(1), torch.zeros(num, dtype=torch.float64))
    return state, tuple(ratios.tolist())


def _padded(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """Planar vectors (..., 2) in ``dim`` dimensions (zeros beyond the plane)."""
    return torch.cat([vectors, vectors.new_zeros(vectors.shape[:-1] + (dim - 2,))], -1)


PLANET_MASSES = (1e-3, 3e-4, 5e-4)  # Jupiter-, Saturn-ish masses about a star of mass 1
PLANET_SPACING = (1.8, 2.2)  # a_{k+1} / a_k, uniform: 7-9 mutual Hill radii apart at these masses
PLANET_MAX_E = 0.05
PLANET_MAX_INCLINATION_DEG = 2.0
PLANETARY_SYSTEMS = 4


def planetary_systems(generator: torch.Generator, num: int = PLANETARY_SYSTEMS
                      ) -> tuple[State, torch.Tensor, torch.Tensor]:
    """``num`` systems in 3D: a star of mass 1 and planets of PLANET_MASSES, the
    innermost at a = 1 and each next one PLANET_SPACING times farther out; heliocentric
    osculating elements e uniform in [0, PLANET_MAX_E], inclination uniform in [0,
    PLANET_MAX_INCLINATION_DEG] degrees, node, argument of pericentre and true anomaly uniform;
    centre-of-mass frame. Returns the states and each planet's a and e (B, P)."""
    planets = len(PLANET_MASSES)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(num, planets, generator=generator, dtype=torch.float64)

    spacing = uniform(*PLANET_SPACING)
    spacing[:, 0] = 1.0
    a, e = spacing.cumprod(-1), uniform(0.0, PLANET_MAX_E)
    inclination = uniform(0.0, math.radians(PLANET_MAX_INCLINATION_DEG))
    node, pericentre, anomaly = uniform(0, 2 * math.pi), uniform(0, 2 * math.pi), uniform(0, 2 * math.pi)
    planet_mass = torch.tensor(PLANET_MASSES, dtype=torch.float64).expand(num, planets)
    position, velocity = orbit_vectors(a, e, inclination, node, pericentre, anomaly, 1.0 + planet_mass)
    star = torch.zeros(num, 1, 3, dtype=torch.float64)
    mass = torch.cat([torch.ones(num, 1, dtype=torch.float64), planet_mass], -1)
    state = State(mass, torch.cat([star, position], 1), torch.cat([star, velocity], 1),
                  torch.zeros(num, dtype=torch.float64))
    return centre_of_mass_frame(state), a, e


def orbit_vectors(a, e, inclination, node, pericentre, anomaly, mu) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative position and velocity (..., 3) of Kepler orbits from their elements (tensors of
    one shape; angles in radians, ``mu`` = G times the pair's total mass)."""
    p = a * (1 - e**2)
    r = p / (1 + e * anomaly.cos())
    speed = (mu / p).sqrt()
    perifocal_x = torch.stack([r * anomaly.cos(), r * anomaly.sin()], -1)
    perifocal_v = torch.stack([-speed * anomaly.sin(), speed * (e + anomaly.cos())], -1)
    cos_O, sin_O, cos_w, sin_w = node.cos(), node.sin(), pericentre.cos(), pericentre.sin()
    cos_i, sin_i = inclination.cos(), inclination.sin()
    # the perifocal unit vectors P (towards pericentre) and Q in the reference frame (Murray & Dermott 2.119)
    P = torch.stack([cos_O * cos_w - sin_O * sin_w * cos_i, sin_O * cos_w + cos_O * sin_w * cos_i, sin_w * sin_i], -1)
    Q = torch.stack([-cos_O * sin_w - sin_O * cos_w * cos_i, -sin_O * sin_w + cos_O * cos_w * cos_i,
                     cos_w * sin_i], -1)
    return (perifocal_x[..., :1] * P + perifocal_x[..., 1:] * Q, perifocal_v[..., :1] * P + perifocal_v[..., 1:] * Q)


PLUMMER_SIZE, PLUMMER_SYSTEMS = 64, 2
PLUMMER_CUTOFF = 10.0  # radii beyond this many scale lengths are drawn again (0.1% of the mass lies there)
HENON_LENGTH = 3 * math.pi / 16  # the Plummer scale length in Henon units (M = G = 1, E = -1/4)


def plummer_spheres(generator: torch.Generator, num: int = PLUMMER_SYSTEMS, size: int = PLUMMER_SIZE) -> State:
    """``num`` Plummer spheres of ``size`` equal masses (total 1) in 3D, sampled as Aarseth,
    Henon & Wielen (1974) do: radii from the cumulative mass, isotropic directions, speeds by
    von Neumann rejection from ``g(q) = q^2 (1 - q^2)^(7/2)`` times the local escape speed; in
    Henon units, centre-of-mass frame. Virial ratio T / |W| is 0.5 up to sampling noise."""
    shape = (num, size)
    radius = torch.empty(shape, dtype=torch.float64)
    missing = torch.ones(shape, dtype=torch.bool)
    while bool(missing.any()):
        u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp_min(1e-300)
        drawn = (u ** (-2 / 3) - 1).rsqrt()
        radius = torch.where(missing, drawn, radius)
        missing = radius > PLUMMER_CUTOFF
    q = _plummer_speed_fraction(generator, shape)
    speed = q * math.sqrt(2) * (1 + radius**2) ** -0.25
    position = _isotropic(generator, shape) * (radius * HENON_LENGTH).unsqueeze(-1)
    velocity = _isotropic(generator, shape) * (speed / math.sqrt(HENON_LENGTH)).unsqueeze(-1)
    mass = torch.full(shape, 1 / size, dtype=torch.float64)
    return centre_of_mass_frame(State(mass, position, velocity, torch.zeros(num, dtype=torch.float64)))


def _plummer_speed_fraction(generator: torch.Generator, shape: tuple[int, int]) -> torch.Tensor:
    """``q = v / v_escape`` (shape), drawn from ``g(q) = q^2 (1 - q^2)^(7/2)`` on [0, 1] by
    rejection under its bound 0.1 (its maximum is 0.092)."""
    q = torch.empty(shape, dtype=torch.float64)
    missing = torch.ones(shape, dtype=torch.bool)
    while bool(missing.any()):
        x = torch.rand(shape, generator=generator, dtype=torch.float64)
        y = 0.1 * torch.rand(shape, generator=generator, dtype=torch.float64)
        accepted = missing & (y < x**2 * (1 - x**2) ** 3.5)
        q = torch.where(accepted, x, q)
        missing = missing & ~accepted
    return q


def _isotropic(generator: torch.Generator, shape: tuple[int, int]) -> torch.Tensor:
    """Unit vectors (shape, 3) uniform on the sphere."""
    direction = torch.randn(shape + (3,), generator=generator, dtype=torch.float64)
    return direction / direction.norm(dim=-1, keepdim=True)


def in_virial_equilibrium(state: State, softening: float) -> State:
    """``state`` with its velocities scaled so that T / |W| = 1/2 exactly (``W`` softened)."""
    scale = (0.5 * potential_energy(state, softening).abs() / kinetic_energy(state)).sqrt()
    return state.replace(velocity=state.velocity * scale.view(-1, 1, 1))


def crossing_time(state: State, softening: float) -> torch.Tensor:
    """``G M^(5/2) / (2 |E|)^(3/2)`` per system (B,): 2 sqrt(2) in Henon units."""
    energy = kinetic_energy(state) + potential_energy(state, softening)
    return state.mass.sum(-1) ** 2.5 / (2 * energy.abs()) ** 1.5
