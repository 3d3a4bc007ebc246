"""The pair step compiled ahead of time: a shared library per machine, loaded in milliseconds.

``torch.compile`` traces its function with Dynamo and loads Inductor's kernels graph by graph in
every new process (tens of seconds, even from a warm cache), so nobody uses it on one small
system. Here :mod:`.pair_step`'s step is written as a pure function of a block of BLOCK steps
(:class:`PairBlock`) under a policy's ``dt_of`` (its :class:`~.dt_policy.PackagedRule`: fixed and
analytic steps, and a learned step without history), exported with ``torch.export`` and
compiled by AOTInductor into a package (a ``.pt2`` holding a shared library) once per machine,
shape and kind of policy; a later process loads it with the C++ loader (``torch._C._aoti``,
without importing Inductor: a few milliseconds) and calls it on plain tensors, once per block.

A package is kept under ``cache_dir()/steps``, named by the hash of its key (:func:`package_key`:
the source of this module and of the policy's ``dt_of``, the policy's kind, torch's version, the
CPU's instruction set, dtype, N, D, B and BLOCK) and written atomically (a temporary file renamed
into place); its key is stored in the package's metadata too, and a package whose stored key is
not the one asked for is never loaded. Masses, softening and the policy's numbers (``eps``,
``dt``, a network's weights) are inputs, so one package serves every run of its shape and kind.
The physics is :mod:`.pair_step`'s to rounding (the sums over the pairs and the bodies run in
an order of the compiler's): tests/test_aot_step.py compares the two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from ..physics.gravity import State, upper_pairs
from .dt_policy import PackagedRule
from .pair_step import TINY_SPEED2

BLOCK = 16  # steps per call: a call costs ~30 us of wrapping; compile time grows with the unrolled steps
# N P B above this (P pairs, B systems): the eager pair step is the faster. Its cost is then its
# arithmetic, not its ~45 dispatched operations a step, and the compiled gathers and scatters over
# the pairs do no better (docs/BENCHMARKS.md: 32 bodies x 64 systems, N P B = 1,015,808, 1.3x
# slower compiled; 3 x 256, N P B = 2,304, 0.53x; the crossover lies between, not measured).
MOST_PAIR_WORK = 2**14
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where this machine's compiled steps live: ``$NBODY_EXPLORER_CACHE``, else
    ``$XDG_CACHE_HOME/nbody_explorer`` (``~/.cache/nbody_explorer``)."""
    chosen = os.environ.get("NBODY_EXPLORER_CACHE")
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "nbody_explorer"


class PairQuantities(NamedTuple):
    """What a policy's ``dt_of`` (:class:`~.dt_policy.PackagedRule`) sees of the state a step
    starts from, in the pair layout: ``timescale`` (B,) (:func:`~.policies.pairwise_timescale`);
    per pair (P, B) ``distance2`` (softened), ``inverse_distance``, ``free_fall2`` and
    ``collision2`` (the squared times); per body ``velocity`` and ``acc`` (N, D, B)."""

    timescale: torch.Tensor
    distance2: torch.Tensor
    inverse_distance: torch.Tensor
    free_fall2: torch.Tensor
    collision2: torch.Tensor
    velocity: torch.Tensor
    acc: torch.Tensor


class PairBlock(torch.nn.Module):
    """BLOCK leapfrog steps of :mod:`.pair_step` under a policy's ``dt_of`` as a pure function,
    for ``torch.export``.

    Inputs: ``position``, ``velocity`` (B, N, D); ``time``, ``t_end`` (B,) (inf: no end time);
    ``active`` (): steps after the first ``active`` have dt = 0 (a run's last, shorter block);
    the pairs' constants (:func:`pair_constants`); and ``rule_inputs``, the policy's inputs of
    ``dt_of(PairQuantities, *rule_inputs) -> dt (B,)``. Returns ``acc`` (B, N, D) after the last step,
    and per step ``positions``, ``velocities`` (BLOCK, B, N, D), ``times`` and ``dts`` (BLOCK, B).

    Inside, the state is in :mod:`.pair_step`'s layout, systems last (``x (N, D, B)``, pair rows
    (P, B)): the compiled loops then run over contiguous systems, which vectorizes a batch (in
    the engine's layout a batch of 256 triples stepped 1.6x slower than the eager pair step)."""

    def __init__(self, dt_of) -> None:
        super().__init__()
        self.dt_of = dt_of

    def forward(self, position, velocity, time, t_end, active, first, second, both, pulls, mass_product,
                inverse_pair_mass, kinetic_weight, softening2, rule_inputs):
        x, v = (state.permute(1, 2, 0).contiguous() for state in (position, velocity))
        t = time
        rows = []
        acc, distance2, inverse_distance, cube = _forces(x, first, second, both, pulls, softening2)
        for k in range(BLOCK):
            scale, free_fall2, collision2 = _timescale(v, first, second, distance2, inverse_distance, cube,
                                                       mass_product, inverse_pair_mass, kinetic_weight)
            quantities = PairQuantities(scale, distance2, inverse_distance, free_fall2, collision2, v, acc)
            dt = torch.minimum(self.dt_of(quantities, *rule_inputs), (t_end - t).clamp_min(0)) * (active > k)
            v = v + 0.5 * dt * acc
            x = x + dt * v
            acc, distance2, inverse_distance, cube = _forces(x, first, second, both, pulls, softening2)
            v = v + 0.5 * dt * acc
            t = t + dt
            rows.append((x, v, t, dt))
        positions, velocities, times, dts = (torch.stack(column) for column in zip(*rows))
        return (acc.permute(2, 0, 1).contiguous(), positions.permute(0, 3, 1, 2).contiguous(),
                velocities.permute(0, 3, 1, 2).contiguous(), times, dts)


def _forces(x, first, second, both, pulls, softening2):
    """Accelerations (N, D, B) at ``x`` (N, D, B), and per pair (P, B) the softened squared
    distance, its inverse square root and that cubed (:meth:`.pair_step.Pairs.forces`)."""
    separation = x.index_select(0, second) - x.index_select(0, first)  # (P, D, B)
    distance2 = (separation * separation).sum(1) + softening2
    inverse_distance = torch.rsqrt(distance2)
    cube = inverse_distance * inverse_distance * inverse_distance
    strengths = cube.repeat(2, 1) * pulls  # m_j / r^3 for body i, -m_i / r^3 for body j: (2P, B)
    contributions = separation.repeat(2, 1, 1) * strengths.unsqueeze(1)
    return torch.zeros_like(x).index_add(0, both, contributions), distance2, inverse_distance, cube


def _timescale(v, first, second, distance2, inverse_distance, cube, mass_product, inverse_pair_mass,
               kinetic_weight):
    """:meth:`.pair_step.Pairs.timescale` (B,) of velocities ``v`` (N, D, B) at the positions whose
    pair quantities these are, and its squared free-fall and collision times (P, B)."""
    relative = v.index_select(0, second) - v.index_select(0, first)
    speed2 = (relative * relative).sum(1)
    binding = mass_product * inverse_distance  # m_i m_j / r, whose sum is -W
    kinetic, bound = (kinetic_weight * speed2).sum(0), binding.sum(0)
    scale = torch.maximum((kinetic - bound).abs(), 0.01 * (kinetic + bound))
    free_fall2 = inverse_pair_mass / cube
    collision2 = distance2 / speed2.clamp_min(TINY_SPEED2)
    shortest = torch.minimum(free_fall2, collision2)
    guard = (scale / binding).clamp(max=1.0)
    return (torch.rsqrt(shortest) * shortest * shortest * guard).amin(0).pow(1.0 / 3.0), free_fall2, collision2


def pair_constants(mass: torch.Tensor, softening: float) -> list[torch.Tensor]:
    """The inputs of :class:`PairBlock` after ``active`` for systems of ``mass`` (B, N): pair rows (P, B)."""
    i, j = upper_pairs(mass.shape[1], mass.device)
    m = mass.t().contiguous()  # (N, B)
    m_i, m_j = m.index_select(0, i), m.index_select(0, j)  # (P, B)
    mass_product = m_i * m_j
    return [i, j, torch.cat([i, j]), torch.cat([m_j, -m_i]), mass_product, (m_i + m_j).reciprocal(),
            mass_product / (2 * m.sum(0)), mass.new_tensor(softening**2)]


def package_key(mass: torch.Tensor, dim: int, rule: PackagedRule) -> dict:
    """What a package must have been compiled for to step systems of ``mass`` (B, N) in ``dim``
    dimensions under ``rule`` on this machine with this code (this module's and the rule's)."""
    code = b"".join(Path(source).read_bytes() for source in (__file__, *rule.sources))
    return {"step": hashlib.sha256(code).hexdigest()[:16], "kind": rule.kind, "block": BLOCK,
            "torch": torch.__version__, "cpu": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}",
            "dtype": str(mass.dtype).removeprefix("torch."), "bodies": mass.shape[1], "dim": dim,
            "systems": mass.shape[0]}


def package_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "steps" / f"{_shape_prefix(key['bodies'], key['dim'], key['systems'])}{digest}.pt2"


def _shape_prefix(bodies: int, dim: int, systems: int) -> str:
    return f"pairs-n{bodies}-d{dim}-b{systems}-"


def _any_package_of_shape(mass: torch.Tensor, dim: int) -> bool:
    """Whether this machine holds a package of the shape of ``mass`` (B, N) in ``dim`` dimensions:
    an eager run looks no further where it does not (a policy's rule and the key's hash of the
    sources cost a millisecond, as much as a short run's steps)."""
    prefix = _shape_prefix(mass.shape[1], dim, mass.shape[0])
    folder = cache_dir() / "steps"
    return folder.is_dir() and any(name.startswith(prefix) for name in os.listdir(folder))


_loaded: dict[Path, object] = {}  # packages loaded in this process, by path


def load(key: dict):
    """The loaded package of ``key`` (its runner: ``run(list of tensors)``), or None where there
    is none or the one there was compiled for another key or cannot be read."""
    path = package_path(key)
    if path in _loaded:
        return _loaded[path]
    if not path.is_file():
        return None
    try:
        runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    except (RuntimeError, AttributeError, TypeError) as err:  # a torch whose loader differs: the eager step
        log.warning("ignoring the compiled step %s: it cannot be loaded (%s)", path, str(err).splitlines()[0])
        return None
    if runner.get_metadata().get("nbody_key") != json.dumps(key, sort_keys=True):
        log.warning("ignoring the compiled step %s: it was compiled for another key", path)
        return None
    _loaded[path] = runner
    return runner


def compile_package(key: dict, dt_of, example: tuple) -> Path:
    """Compile :class:`PairBlock` of ``dt_of`` for ``key`` on the inputs ``example`` into its
    package, written atomically; returns its path."""
    import torch._inductor  # the compiler: imported only to compile (about a second)

    path = package_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.pt2")
    log.info("compiling the pair step for N = %d, D = %d, %d system(s) into %s (once per machine and kind: "
             "a minute or two)", key["bodies"], key["dim"], key["systems"], path)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")  # export's and Inductor's notes to torch's developers
            example = (*(t.clone() for t in example[:-1]), tuple(t.clone() for t in example[-1]))
            exported = torch.export.export(PairBlock(dt_of), example)
            torch._inductor.aoti_compile_and_package(
                exported, package_path=str(partial),
                inductor_configs={"aot_inductor.metadata": {"nbody_key": json.dumps(key, sort_keys=True)}})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _packaged(policy, gravity, mass: torch.Tensor):
    """``policy.packaged_rule`` (:class:`~.dt_policy.PackagedRule`) where the compiled step covers
    the run (CPU, N >= 3, no external field, a policy that declares such a rule), else None."""
    rule = getattr(policy, "packaged_rule", None)
    if mass.device.type != "cpu" or mass.shape[1] < 3 or gravity.field is not None or rule is None:
        return None
    return rule(mass, gravity.softening)


def _many_pairs(mass: torch.Tensor) -> bool:
    N, B = mass.shape[1], mass.shape[0]
    return N * (N * (N - 1) // 2) * B > MOST_PAIR_WORK


def eager_is_faster(policy, gravity, mass: torch.Tensor) -> bool:
    """Whether the compiled step covers a run of systems of ``mass`` (B, N) that has too many pairs
    for it to pay (MOST_PAIR_WORK): there the eager pair step is the fastest, compiled or not."""
    return _many_pairs(mass) and _packaged(policy, gravity, mass) is not None


def aot_stepper(policy, gravity, mass: torch.Tensor, dim: int, t_end: torch.Tensor | None, compile: bool):
    """The stepper of :func:`~nbody_engine.integrators.loop.simulate` that calls this machine's
    compiled pair step, or None: where the run is not one it covers (:func:`_packaged`) or has too
    many pairs for it (:func:`eager_is_faster`), or where no package for its key exists and
    ``compile`` is off. With ``compile`` a missing package is compiled first; a compile that
    fails is logged and gives None (the caller's general compiled step).

    ``steps_of(state, acc, carry, steps, n, keep, out=None)``: as :func:`.pair_step.pair_stepper`'s."""
    if _many_pairs(mass) or not (compile or _any_package_of_shape(mass, dim)):
        return None
    rule = _packaged(policy, gravity, mass)
    if rule is None:
        return None
    key = package_key(mass, dim, rule)
    constants = pair_constants(mass, gravity.softening)
    end = torch.full_like(mass[:, 0], torch.inf) if t_end is None else t_end.to(mass).expand(mass.shape[0])
    counts = [torch.tensor(n, device=mass.device) for n in range(BLOCK + 1)]
    runner = load(key)
    if runner is None and compile:
        example = [mass.new_zeros(mass.shape[0], mass.shape[1], dim)] * 2 + [end.new_zeros(end.shape), end,
                                                                             counts[BLOCK]]
        try:
            compile_package(key, rule.dt_of, (*example, *constants, rule.inputs))
        except Exception as err:  # noqa: BLE001 - any compiler failure: the run goes on, compiled the general way
            log.warning("could not compile the pair step ahead of time (%s): compiling the general step",
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
            return None
        runner = load(key)
    if runner is None:
        return None

    def steps_of(state: State, acc: torch.Tensor, carry, steps: torch.Tensor, n: int, keep: tuple[int, ...],
                 out: None = None):
        acc, positions, velocities, times, dts = runner.run(
            [state.position, state.velocity, state.time, end, counts[n], *constants, *rule.inputs])
        moved = State(state.mass, positions[n - 1], velocities[n - 1], times[n - 1])
        if t_end is not None:
            steps = steps + (dts[:n] > 0).sum(0)
        if not keep:
            return moved, acc, carry, steps, None
        kept = slice(keep[0], keep[-1] + 1) if keep[-1] - keep[0] == len(keep) - 1 else list(keep)
        return moved, acc, carry, steps, (times[kept], dts[kept], positions[kept], velocities[kept])
    return steps_of
