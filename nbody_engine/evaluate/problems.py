"""The problem suite of ``nbody-runner evaluate``: each problem a batch of systems that share a
body count, a softening, an end time per system and a time unit per system (the period whose
multiples the run lasts, so cost reads as force evaluations per period).

Every problem is small enough for two cores, and each tests a different way of going wrong.
Each is a seeded family of ``eval_systems`` systems (:mod:`.systems` states the distributions),
or with ``eval_systems = 0`` a few hand-picked ones:

- ``kepler``: two-body orbits of semi-major axis ``eval_a`` for ``Nperiod`` periods, e spread
  over 0-0.98 (hand-picked: ``eval_e``, at pericentre): the learned policy's home ground, inside
  and outside its training range, and the one problem with an exact answer.
- ``triples``: hierarchical triples in 3D, an inner binary (e 0.1-0.9) and a third body on a
  circular outer orbit inclined by 0-90 degrees at 5-30 inner semi-major axes, for 10 inner
  periods: two time scales far apart.
- ``scattering``: a single star thrown at an eccentric binary (impact parameters 0-2 binary
  semi-major axes, 3D), until it has gone past: one violent close encounter.
- ``burrau``: the Pythagorean three-body problem (masses 3, 4, 5 at rest on the corners of a
  3-4-5 triangle, opposite the sides of their own length), to t = 10: its first close
  approaches, chaotic, so the phase error grows fast for every integrator. One system always.
- ``cluster``: a small cold cluster (12 bodies of total mass 1, uniform in a unit sphere, virial
  ratio 0.1, Plummer softening 0.05, 3D) for two free-fall times: collapse and bounce.

Opt-in (not in ``all``, which keeps the default evaluate's cost), each a seeded batch from
:mod:`.systems`, mostly outside the training family:

- ``unequal``: bound two-body orbits with mass ratios 0.1 and 0.01 (half each) for ``Nperiod`` periods.
- ``planetary``: a star of mass 1 and three planets (1e-3, 3e-4, 5e-4; near-circular, slightly
  inclined, 1.8-2.2 times farther out each) for 10 innermost periods: WHFast's home ground.
- ``plummer``: Plummer spheres of 64 equal masses in virial equilibrium (softening 0.05) for
  three crossing times: many bodies, many time scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config.errors import InputError
from ..config.schema import Config
from ..integrators.loop import period_of
from ..physics.gravity import (State, centre_of_mass_frame, diagonals, kinetic_energy, pair_separations,
                               potential_energy, squared_halves)
from ..physics.initial_conditions import kepler_orbit, load_ic_file, make_state
from .systems import (PLANET_MASSES, PLANETARY_SYSTEMS, PLUMMER_SYSTEMS, UNEQUAL_PER_RATIO, crossing_time,
                      impact_parameters, in_virial_equilibrium, kepler_family, planetary_systems, plummer_spheres,
                      triple_parameters, unequal_binaries)


@dataclass(frozen=True)
class Problem:
    """``state``: B systems; ``t_end``, ``time_unit``: (B,); ``labels``: one name per system;
    ``kepler_split``: one pair or a dominant mass, where WHFast's Kepler splitting applies;
    ``unit_note``: which time unit the systems got, where that is worth printing."""

    name: str
    state: State
    t_end: torch.Tensor
    time_unit: torch.Tensor
    labels: tuple[str, ...]
    softening: float = 0.0
    kepler_split: bool = False
    unit_note: str = ""


def kepler_problem(cfg: Config, dtype, device) -> Problem:
    if cfg.eval_systems:
        state = kepler_family(_generator(cfg), cfg.eval_systems, cfg.eval_a, cfg.mass, cfg.dim).to(device=device,
                                                                                                  dtype=dtype)
        labels = tuple(f"e={e:.3f}" for e in orbit_elements(state)[1].tolist())
    else:
        state = kepler_orbit(cfg.eval_e, cfg.eval_a, mass=cfg.mass, dim=cfg.dim, dtype=dtype, device=device)
        labels = tuple(f"e={e:.2f}" for e in cfg.eval_e)
    period = period_of(state.mass, state.position, state.velocity)
    return Problem("kepler", state, cfg.Nperiod * period, period, labels, kepler_split=True)


def _generator(cfg: Config) -> torch.Generator:
    """The generator of a problem's family: the same systems for the same ``seed``."""
    return torch.Generator().manual_seed(cfg.seed or 0)


TRIPLES = ((0.3, 5.0, 30.0), (0.6, 10.0, 45.0), (0.9, 20.0, 60.0), (0.5, 30.0, 20.0))  # e_in, a_out/a_in, degrees


def hierarchical_triple(e_inner: float, ratio: float, inclination_deg: float) -> tuple[list, list, list]:
    """Masses, positions and velocities (3D) of an equal-mass inner binary (a = 1, at pericentre)
    and a third body of mass 1 on a circular orbit of radius ``ratio`` about the binary's centre
    of mass, its plane inclined by ``inclination_deg`` to the binary's."""
    r_p = 1 - e_inner
    v_p = math.sqrt(2 * (1 + e_inner) / r_p)
    v_out = math.sqrt(3 / ratio)  # circular speed about a mass 2, reduced to the outer pair: sqrt(G (2+1) / R)
    inc = math.radians(inclination_deg)
    # positions relative to the binary's centre of mass; the outer relative velocity is shared 1 : 2
    position = [[-r_p / 2, 0, 0], [r_p / 2, 0, 0], [0, 0, 0]]
    velocity = [[0, -v_p / 2, 0], [0, v_p / 2, 0], [0, 0, 0]]
    outer_x = [0, ratio * math.cos(inc), ratio * math.sin(inc)]
    outer_v = [-v_out, 0, 0]
    for k in range(3):
        for body, share in ((0, -1 / 3), (1, -1 / 3), (2, 2 / 3)):
            position[body][k] += share * outer_x[k]
            velocity[body][k] += share * outer_v[k]
    return [1.0, 1.0, 1.0], position, velocity


def triples_problem(cfg: Config, dtype, device) -> Problem:
    triples = triple_parameters(_generator(cfg), cfg.eval_systems) if cfg.eval_systems else TRIPLES
    systems = [hierarchical_triple(*t) for t in triples]
    state = make_state(*(list(column) for column in zip(*systems)), dtype=dtype, device=device)
    inner_period = torch.full_like(state.time, 2 * math.pi / math.sqrt(2))
    labels = tuple(f"e_in={e:.2f} ratio={r:.3g} i={i:.0f}" for e, r, i in triples)
    return Problem("triples", state, 10 * inner_period, inner_period, labels)


IMPACT_PARAMETERS = (0.0, 0.5, 1.0, 2.0)
SCATTER_DISTANCE, SCATTER_SPEED = 10.0, 1.0


def binary_single(impact: float) -> tuple[list, list, list]:
    """A binary (masses 1, a = 1, e = 0.5, at apocentre) and a single star of mass 1 coming in at
    speed 1 from 10 away (unbound: ``v^2 / 2 - 3 / 10 > 0``), offset by ``impact`` along y and
    slightly out of the binary's plane."""
    e = 0.5
    r_a, v_a = 1 + e, math.sqrt(2 * (1 - e) / (1 + e))
    position = [[-r_a / 2, 0, 0], [r_a / 2, 0, 0], [-SCATTER_DISTANCE, impact, 0.1]]
    velocity = [[0, -v_a / 2, 0], [0, v_a / 2, 0], [SCATTER_SPEED, 0, 0]]
    return [1.0, 1.0, 1.0], position, velocity


def scattering_problem(cfg: Config, dtype, device) -> Problem:
    impacts = impact_parameters(_generator(cfg), cfg.eval_systems) if cfg.eval_systems else IMPACT_PARAMETERS
    systems = [binary_single(b) for b in impacts]
    state = centre_of_mass_frame(make_state(*(list(c) for c in zip(*systems)), dtype=dtype, device=device))
    binary_period = torch.full_like(state.time, 2 * math.pi / math.sqrt(2))
    crossing = 3 * SCATTER_DISTANCE / SCATTER_SPEED  # in, through and out to beyond where it started
    return Problem("scattering", state, torch.full_like(state.time, crossing), binary_period,
                   tuple(f"b={b:.3g}" for b in impacts))


def burrau_state(dtype=torch.float64, device="cpu") -> State:
    """The Pythagorean problem: masses 3, 4, 5 at rest at (1, 3), (-2, -1), (1, -1), each opposite
    the side of the 3-4-5 triangle of its own length; centre of mass at the origin."""
    return make_state([[3.0, 4.0, 5.0]], [[[1.0, 3.0], [-2.0, -1.0], [1.0, -1.0]]], [[[0.0, 0.0]] * 3],
                      dtype=dtype, device=device)


def burrau_problem(_cfg: Config, dtype, device) -> Problem:
    state = burrau_state(dtype, device)
    unit = torch.ones_like(state.time)
    return Problem("burrau", state, 10 * unit, unit, ("3-4-5",))


CLUSTER_SIZE, CLUSTER_SYSTEMS, CLUSTER_SOFTENING, CLUSTER_VIRIAL = 12, 2, 0.05, 0.1


def cold_cluster(generator: torch.Generator, dtype, device, num: int = CLUSTER_SYSTEMS) -> State:
    """``num`` clusters of CLUSTER_SIZE equal masses (total 1), uniform in the unit sphere, with
    random velocities scaled to the virial ratio T / |W| = CLUSTER_VIRIAL."""
    shape = (num, CLUSTER_SIZE, 3)
    direction = torch.randn(shape, generator=generator, dtype=torch.float64)
    radius = torch.rand(shape[:2] + (1,), generator=generator, dtype=torch.float64) ** (1 / 3)
    position = direction / direction.norm(dim=-1, keepdim=True) * radius
    velocity = torch.randn(shape, generator=generator, dtype=torch.float64)
    mass = torch.full(shape[:2], 1 / CLUSTER_SIZE, dtype=torch.float64)
    state = centre_of_mass_frame(State(mass, position, velocity, torch.zeros(num, dtype=torch.float64)))
    scale = (CLUSTER_VIRIAL * potential_energy(state, CLUSTER_SOFTENING).abs() / kinetic_energy(state)).sqrt()
    return state.replace(velocity=state.velocity * scale.view(-1, 1, 1)).to(device=device, dtype=dtype)


def cluster_problem(cfg: Config, dtype, device) -> Problem:
    state = cold_cluster(_generator(cfg), dtype, device, cfg.eval_systems or CLUSTER_SYSTEMS)
    free_fall = torch.full_like(state.time, math.pi / 2 / math.sqrt(2.0))  # uniform sphere, M = R = 1
    return Problem("cluster", state, 2 * free_fall, free_fall, _seeded_labels(cfg, state.batch_size),
                   CLUSTER_SOFTENING)


def _seeded_labels(cfg: Config, num: int) -> tuple[str, ...]:
    return tuple(f"seed {cfg.seed or 0}, #{k}" for k in range(num))


def unequal_problem(cfg: Config, dtype, device) -> Problem:
    """:func:`.systems.unequal_binaries` of total mass ``2 mass`` and a = ``eval_a`` in ``dim``
    dimensions, for ``Nperiod`` periods."""
    per_ratio = -(-cfg.eval_systems // 2) if cfg.eval_systems else UNEQUAL_PER_RATIO
    state, ratios = unequal_binaries(_generator(cfg), cfg.eval_a, 2 * cfg.mass, cfg.dim, per_ratio)
    period = period_of(state.mass, state.position, state.velocity)
    e = orbit_elements(state)[1]
    labels = tuple(f"q={q:g} e={ecc:.2f}" for q, ecc in zip(ratios, e.tolist()))
    return Problem("unequal", state.to(device=device, dtype=dtype), cfg.Nperiod * period.to(device=device, dtype=dtype),
                   period.to(device=device, dtype=dtype), labels, kepler_split=True)


def planetary_problem(cfg: Config, dtype, device) -> Problem:
    state, a, _ = planetary_systems(_generator(cfg), cfg.eval_systems or PLANETARY_SYSTEMS)
    innermost = 2 * math.pi * (a[:, 0] ** 3 / (1 + PLANET_MASSES[0])).sqrt()
    labels = tuple(f"{label}: a=" + "/".join(f"{x:.2f}" for x in row)
                   for label, row in zip(_seeded_labels(cfg, len(a)), a.tolist()))
    return Problem("planetary", state.to(device=device, dtype=dtype), (10 * innermost).to(device=device, dtype=dtype),
                   innermost.to(device=device, dtype=dtype), labels, kepler_split=dominated(state))


PLUMMER_CROSSINGS = 3


def plummer_problem(cfg: Config, dtype, device) -> Problem:
    state = in_virial_equilibrium(plummer_spheres(_generator(cfg), cfg.eval_systems or PLUMMER_SYSTEMS),
                                  CLUSTER_SOFTENING)
    unit = crossing_time(state, CLUSTER_SOFTENING)
    labels = _seeded_labels(cfg, state.batch_size)
    return Problem("plummer", state.to(device=device, dtype=dtype),
                   (PLUMMER_CROSSINGS * unit).to(device=device, dtype=dtype), unit.to(device=device, dtype=dtype),
                   labels, CLUSTER_SOFTENING)


def ic_file_problem(cfg: Config, dtype, device) -> Problem:
    """The systems of ``ic_path``, for ``Nperiod`` periods (bound two-body systems) or ``duration``,
    each in a time unit of its own dynamics (:func:`own_time_unit`): a baseline's fixed step and
    the cost per period read in it. ``Problem.unit_note`` says which unit each system got."""
    state = load_ic_file(cfg.ic_path, cfg.dim, dtype, device)
    period = period_of(state.mass, state.position, state.velocity)
    if bool(torch.isfinite(period).all()) and cfg.Nperiod > 0:
        t_end, unit, note = cfg.Nperiod * period, period, "the binary's orbital period"
    elif cfg.duration is not None:
        unit, note = own_time_unit(state, cfg.softening)
        t_end = torch.full_like(state.time, cfg.duration)
    else:
        raise InputError("evaluate runs each system of 'ic_path' for 'Nperiod' periods, which needs bound "
                         "two-body systems; for other ICs set 'duration'")
    labels = tuple(f"system {k}" for k in range(state.batch_size))
    units = "; ".join(f"{label}: {u:.4g} ({note})" for label, u in zip(labels, unit.tolist()))
    return Problem("ic_file", state, t_end, unit, labels, cfg.softening, kepler_split=dominated(state),
                   unit_note=f"ic_file: time unit {units}")


def own_time_unit(state: State, softening: float = 0.0) -> tuple[torch.Tensor, str]:
    """A time unit (B,) from each system's own dynamics: the shortest orbital period of a pair
    bound on its own (``2 pi sqrt(a^3 / (m_i + m_j))``, its energy taken as if the pair were
    alone), else the crossing time ``R / V`` (rms size over rms speed, both mass-weighted, about
    the centre of mass). Returns the units and what they are."""
    pairs = pair_separations(torch.cat([state.position, state.velocity], -1))
    squares = squared_halves(pairs, state.dim)  # r^2 and |v_j - v_i|^2, (B, N, N, 2)
    total = state.mass.unsqueeze(2) + state.mass.unsqueeze(1)
    eye, _, inf_diagonal = diagonals(state.num_bodies, state.mass.dtype, state.mass.device)
    r = (squares[..., 0] + softening**2 + eye).sqrt()
    energy = 0.5 * squares[..., 1] - total / r + inf_diagonal  # a body is no bound pair with itself
    a = total / (-2 * energy)
    period = torch.where(energy < 0, 2 * math.pi * (a.clamp_min(0) ** 3 / total).sqrt(), math.inf)
    shortest = period.flatten(1).amin(1)
    frame = centre_of_mass_frame(state)
    weights = state.mass / state.mass.sum(-1, keepdim=True)
    size = (weights * (frame.position**2).sum(-1)).sum(-1).sqrt()
    speed = (weights * (frame.velocity**2).sum(-1)).sum(-1).sqrt()
    bound = torch.isfinite(shortest)
    unit = torch.where(bound, shortest, size / speed)
    what = "shortest pairwise orbital period" if bool(bound.all()) else \
        "crossing time" if not bool(bound.any()) else "shortest pairwise orbital period, else crossing time"
    return unit, what


def dominated(state: State) -> bool:
    """Two bodies, or one body at least DOMINANT_RATIO times the mass of all the others together
    in every system: where a Kepler splitting (WHFast) applies."""
    heaviest = state.mass.amax(-1)
    return state.num_bodies == 2 or bool((heaviest >= DOMINANT_RATIO * (state.mass.sum(-1) - heaviest)).all())


DOMINANT_RATIO = 10.0


def training_family(problem: Problem, trained: dict) -> tuple[str, ...]:
    """Per system, "in" where it lies in the family the checkpoint trained on (``trained``: its
    stored config, :func:`trained_on`): the same number of bodies, no mass ratio below the
    trained one (equal masses, unless an ml_ttl rollout trained on unequal ones), and for two
    bodies a bound orbit whose eccentricity and semi-major axis lie within the training ranges;
    else "out"."""
    state = problem.state
    bodies, smallest_ratio = trained_on(trained)
    ratio = state.mass.amin(-1) / state.mass.amax(-1)
    inside = (ratio >= smallest_ratio * (1 - 1e-9)) & (state.num_bodies == bodies)
    if state.num_bodies == 2:  # random N-body systems of more bodies have no orbit range to leave
        energy, e, a = orbit_elements(state)
        inside &= (energy < 0) & (e >= trained["e_min"] - 1e-9) & (e <= trained["e_max"] + 1e-9) & \
            (a >= trained["a_min"] * (1 - 1e-9)) & (a <= trained["a_max"] * (1 + 1e-9))
    return tuple("in" if flag else "out" for flag in inside.tolist())


FAMILY_BODIES = {"kepler": 2, "binaries": 2, "triples": 3}  # clusters: family_cluster_size


def trained_on(trained: dict) -> tuple[int, float]:
    """The body count and smallest mass ratio (lightest / heaviest) a checkpoint trained on:
    an ml_ttl rollout's ``train_family`` (binaries, triples and clusters down to
    ``family_mass_ratio``), else ``num_particles`` equal masses."""
    family = trained.get("train_family", "kepler")
    if trained.get("integrator_mode") != "ml_ttl" or trained.get("ic_path"):
        return trained["num_particles"], 1.0
    bodies = FAMILY_BODIES.get(family, trained.get("family_cluster_size"))
    return bodies, 1.0 if family == "kepler" else trained["family_mass_ratio"]


def orbit_elements(state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Specific energy, eccentricity and semi-major axis (each (B,)) of two-body systems."""
    total = state.mass.sum(-1)
    r = state.position[:, 1] - state.position[:, 0]
    v = state.velocity[:, 1] - state.velocity[:, 0]
    energy = 0.5 * (v * v).sum(-1) - total / r.norm(dim=-1)
    a = -total / (2 * energy)
    h2 = (r.norm(dim=-1) * v.norm(dim=-1)) ** 2 - ((r * v).sum(-1)) ** 2  # |r x v|^2 in any dimension
    return energy, (1 - h2 / (total * a)).clamp_min(0).sqrt(), a


# `all`; unequal, planetary and plummer are named alone only: in `all` they would multiply its cost
SUITE = ("kepler", "triples", "scattering", "burrau", "cluster")
PROBLEMS = {"kepler": kepler_problem, "triples": triples_problem, "scattering": scattering_problem,
            "burrau": burrau_problem, "cluster": cluster_problem, "unequal": unequal_problem,
            "planetary": planetary_problem, "plummer": plummer_problem}  # each (cfg, dtype, device) -> Problem


def problems_of(cfg: Config, dtype, device) -> list[Problem]:
    """The problems ``eval_suite`` names (all of SUITE by default); the systems of ``ic_path``
    instead, when it is given."""
    if cfg.ic_path:
        return [ic_file_problem(cfg, dtype, device)]
    if cfg.eval_systems and "eval_e" in cfg.given_keys:
        raise InputError(f"'eval_e' ({cfg.eval_e}) picks the Kepler orbits by hand, but eval_systems = "
                         f"{cfg.eval_systems} draws them; set eval_systems = 0 to evaluate eval_e's orbits")
    names = SUITE if cfg.eval_suite == "all" else (cfg.eval_suite,)
    return [PROBLEMS[name](cfg, dtype, device) for name in names]
