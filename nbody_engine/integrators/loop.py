"""The batched simulation loop: a dt policy driving the leapfrog, recorded and diagnosed."""

from __future__ import annotations

import math
import time as wallclock
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..config.errors import NonFiniteStateError
from ..events import Reporter, TrajectoryChunk
from ..physics.gravity import Gravity, State, angular_momentum, kinetic_energy, momentum, relative_change
from .dt_policy import OwnStep
from .leapfrog import leapfrog_step
from . import aot_step, pair_step
from .two_body import BLOCK, relative_stepper


@dataclass(frozen=True)
class StopRule:
    """When a simulation ends: after ``max_steps`` steps, or once each system's time reaches
    ``t_end`` (B,); the last step is shortened to land exactly on ``t_end``."""

    max_steps: int | None = None
    t_end: torch.Tensor | None = None


@dataclass
class Trajectory:
    """What a simulation recorded, as NumPy arrays. Rows are steps 0..S (row 0: initial state).

    time, dt (S+1, B) (dt[i]: the step that led to row i); position, velocity (S+1, B, N, D); energy (S+1, B);
    momentum (S+1, B, D); angular_momentum (S+1, B) in 2D, (S+1, B, 3) in 3D;
    steps (B,): steps each system took (systems that reached their end stay frozen);
    force_evals (B,): the force evaluations they cost (a step's one, and what the policy adds:
    trial steps, a time-transformed leapfrog's landing on the end time).
    With ``record_every = k`` the rows are every k-th step and the last one.
    """

    time: np.ndarray
    dt: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    energy: np.ndarray
    momentum: np.ndarray
    angular_momentum: np.ndarray
    mass: np.ndarray
    steps: np.ndarray
    force_evals: np.ndarray
    wall_time_s: float
    path: str = "general"  # the stepper: "two-body", "pairs", "aot", "general", "compiled" or "time-transformed"

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)}


PREALLOCATED_BYTES = 2**30  # a longer record starts at this size and grows, rather than fail up front
ROW_KEYS = ("time", "dt", "position", "velocity", "energy", "momentum", "angular_momentum")


def diagnostics(state: State, potential: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energy (B,), momentum (B, D) and angular momentum (B,) or (B, 3) of ``state``."""
    return kinetic_energy(state) + potential, momentum(state), angular_momentum(state)


class _Recorder:
    """Writes the recorded rows into arrays (rows, B, ...) that hold the whole run.

    A row is time, dt, position, velocity and the diagnostics: energy, momentum and angular
    momentum. A compiled stepper computes the diagnostics with each step, fused into its kernels
    (``diagnosed``), and when it records every step it writes its rows straight into the arrays
    (:meth:`slots`, then :meth:`commit`), where copying blocks in would cost as much as the
    steps of a large batch. Otherwise only references to the rows are kept on the hot path
    (:meth:`add`), and each flush copies them in and computes their diagnostics in one
    vectorized pass. Every value is written once, where it stays: no final concatenation copies
    the trajectory, so a run's memory is the arrays alone. They are sized for ``capacity`` rows
    (exact when the run has a step limit), at most PREALLOCATED_BYTES at first; past that they
    double, but never beyond ``capacity`` while the rows fit in it.
    Row i holds the state after step i and ``dt`` the step that led to it (row 0: dt = 0).
    """

    def __init__(self, state: State, gravity: Gravity, capacity: int, diagnosed: bool) -> None:
        self.mass, self.gravity, self.diagnosed = state.mass, gravity, diagnosed
        self.pending: list[tuple[torch.Tensor, ...]] = []
        self.pending_rows = 0
        self.rows = 0  # rows written into the arrays
        self.reported = 0  # rows :meth:`flush` has returned
        first = self._row(state)
        row_bytes = sum(t.numel() * t.element_size() for t in first)
        self.expected = capacity
        self.arrays = {k: v.new_empty((max(1, min(capacity, PREALLOCATED_BYTES // row_bytes)), *v.shape))
                       for k, v in zip(ROW_KEYS, first)}
        self.add_state(state)

    def _row(self, state: State) -> tuple[torch.Tensor, ...]:
        return (state.time, torch.zeros_like(state.time), state.position, state.velocity,
                *diagnostics(state, self.gravity.potential(state)))

    def add_state(self, state: State) -> None:
        """One row of ``state`` itself, with dt = 0: the first row, or the end a run reached
        between two recorded rows."""
        self.add(tuple(t.unsqueeze(0) for t in self._row(state)[: len(ROW_KEYS) if self.diagnosed else 4]))

    def add(self, block: tuple[torch.Tensor, ...]) -> None:
        """Rows (S, B, ...) of time, dt, position, velocity, and the diagnostics if diagnosed."""
        self.pending.append(block)
        self.pending_rows += block[0].shape[0]

    def slots(self, count: int) -> tuple[torch.Tensor, ...]:
        """Views (count, B, ...) of the next ``count`` rows of every array, in ROW_KEYS order,
        for a diagnosed stepper to write its rows into; :meth:`commit` then takes the rows."""
        self._write_pending()
        self._reserve(self.rows + count)
        return tuple(self.arrays[k][self.rows: self.rows + count] for k in ROW_KEYS)

    def commit(self, count: int) -> None:
        """The first ``count`` rows of the last :meth:`slots` hold recorded steps."""
        self.rows += count

    @property
    def unreported(self) -> int:
        return self.rows + self.pending_rows - self.reported

    def flush(self) -> dict[str, torch.Tensor]:
        """Write the pending rows (with their diagnostics); returns the rows not yet returned
        (views (S, B, ...))."""
        self._write_pending()
        chunk = {k: v[self.reported: self.rows] for k, v in self.arrays.items()}
        self.reported = self.rows
        return chunk

    def _write_pending(self) -> None:
        S = self.pending_rows
        if not S:
            return
        self._reserve(self.rows + S)
        chunk = {k: v[self.rows: self.rows + S] for k, v in self.arrays.items()}
        columns = tuple(zip(*self.pending))
        for key, blocks in zip(ROW_KEYS, columns):
            torch.cat(blocks, out=chunk[key])
        self.pending, self.pending_rows = [], 0
        if not self.diagnosed:
            flat = State(self.mass.repeat(S, 1), chunk["position"].flatten(0, 1), chunk["velocity"].flatten(0, 1),
                         chunk["time"].flatten())
            for key, value in zip(ROW_KEYS[4:], diagnostics(flat, self.gravity.potential(flat))):
                chunk[key].copy_(value.view(chunk[key].shape))
        self.rows += S

    def _reserve(self, rows: int) -> None:
        capacity = self.arrays["time"].shape[0]
        if rows > capacity:
            size = max(rows, 2 * capacity)
            if rows <= self.expected:
                size = min(size, self.expected)
            grown = {k: v.new_empty((size, *v.shape[1:])) for k, v in self.arrays.items()}
            for k, v in grown.items():
                v[: self.rows].copy_(self.arrays[k][: self.rows])
            self.arrays = grown

    def numpy(self) -> dict[str, np.ndarray]:
        """All rows, without trailing rows in which every system stood still (views, not copies)."""
        time = self.arrays["time"][: self.rows]
        moving = (time[1:] != time[:-1]).any(1).nonzero()
        last = int(moving[-1, 0]) + 1 if len(moving) else 0
        return {k: v[: last + 1].cpu().numpy() for k, v in self.arrays.items()}


STEPS_PER_CALL = 8  # steps fused into one call of the (compiled) stepper


def _stepper(policy, gravity: Gravity, t_end: torch.Tensor | None, compile: bool, mass: torch.Tensor, dim: int):
    """``(advance, per_call, path)``: eager runs of a binary take :mod:`.two_body`'s relative
    coordinates where the policy allows (``per_call`` = two_body.BLOCK steps, path "two-body"),
    eager runs of three or more bodies :mod:`.pair_step`'s pair layout where the policy allows
    (pair_step.BLOCK, "pairs"), everything else the general stepper below (STEPS_PER_CALL,
    "general", or "compiled" with ``compile``): each is the fastest there is for its runs. Runs
    of three or more bodies that :mod:`.aot_step` covers take its compiled pair step (aot_step.BLOCK,
    "aot") where this machine has it, eager or not, and with ``compile`` compile it first; with
    many pairs the eager pair step is faster than any compiled step, and takes them even with ``compile``.

    ``advance(state, acc, carry, steps, n, keep, out=None)``: ``n <= per_call`` simulation steps;
    per step, the policy's dt (cut to land on ``t_end``), leapfrog, policy update, and each
    system's count of steps taken. Returns the new state and the rows (time, dt, position,
    velocity), each (len(keep), B, ...), of the steps ``keep`` (indices into the n; None if empty);
    a compiled stepper given ``out`` (the recorder's slots for STEPS_PER_CALL rows) writes every
    step's row there instead and returns None.
    Compiled, the rows also hold the diagnostics (energy, momentum, angular momentum): fused
    into the step's kernels they cost almost nothing, where computing them afterwards reads the
    recorded states again (a third of a batched run that records every step).

    Several steps per call because a compiled call costs tens of microseconds of guards and
    wrapping on top of its kernels, as much as a whole step of one orbit. The compiled stepper
    always takes STEPS_PER_CALL steps, returns all their rows, and zeroes dt after the first
    ``active`` (a tensor, so a run's last, shorter call reuses the same compiled graph).

    An integrator with its own step (:class:`~.dt_policy.OwnStep`: the time-transformed leapfrog)
    offers ``stepper(t_end)``, an ``advance`` of the same shape, and runs eager (path "time-transformed")."""
    if isinstance(policy, OwnStep):
        if compile:
            raise ValueError(f"{type(policy).__name__} runs eager: simulate it with compile=False")
        return policy.stepper(t_end), STEPS_PER_CALL, "time-transformed"

    def steps_of(state: State, acc: torch.Tensor, carry, steps: torch.Tensor, n: int, keep: tuple[int, ...] | None,
                 active: torch.Tensor | None = None, out: tuple[torch.Tensor, ...] | None = None):
        rows = []
        for j in range(n):
            dt = policy.dt(state, carry, acc)
            if t_end is not None:
                dt = torch.minimum(dt, (t_end - state.time).clamp_min(0))
            if active is not None:
                dt = dt * (active > j)
            state, acc, potential = leapfrog_step(state, dt, acc, gravity, with_potential=compile)
            carry = policy.update(carry, state, dt, acc)
            if t_end is not None:  # without an end time every system takes every step: `simulate` counts them
                steps = steps + (dt > 0)
            if keep is None or j in keep:
                row = (state.time, dt, state.position, state.velocity)
                rows.append(row + diagnostics(state, potential) if compile else row)
        blocks = tuple(torch.stack(t) for t in zip(*rows)) if rows else None
        if out is None:
            return state, acc, carry, steps, blocks
        for slot, block in zip(out, blocks):  # compiled, every step recorded: straight into the record
            slot.copy_(block)
        return state, acc, carry, steps, None
    binary = None if compile else relative_stepper(policy, gravity, mass, t_end)
    if binary is not None:
        return binary, BLOCK, "two-body"
    packaged = aot_step.aot_stepper(policy, gravity, mass, dim, t_end, compile)
    if packaged is not None:
        return packaged, aot_step.BLOCK, "aot"
    if not compile or aot_step.eager_is_faster(policy, gravity, mass):
        pairs = pair_step.pair_stepper(policy, gravity, mass, t_end)
        return (steps_of, STEPS_PER_CALL, "general") if pairs is None else (pairs, pair_step.BLOCK, "pairs")
    # Dynamo traces through the lru_cache'd helpers that build constant index and mask tensors
    # from shapes, and says so once per helper; what they return depends on their arguments
    # alone, so tracing them is exact and the note is noise to a user.
    warnings.filterwarnings("ignore", message=r"Dynamo detected a call to a `functools.lru_cache`")
    # On a CPU, Inductor's C++ wrapper calls the kernels from C++ instead of Python, which a
    # single orbit's tiny kernels feel (docs/BENCHMARKS.md). CUDA keeps the default Python wrapper.
    device = mass.device
    compiled = torch.compile(steps_of, dynamic=False, options={"cpp_wrapper": device.type == "cpu"})
    counts = [torch.tensor(n, device=device) for n in range(STEPS_PER_CALL + 1)]

    def advance(state: State, acc: torch.Tensor, carry, steps: torch.Tensor, n: int, keep: tuple[int, ...],
                out: tuple[torch.Tensor, ...] | None = None):
        *moved, rows = compiled(state, acc, carry, steps, STEPS_PER_CALL, None, counts[n], out)
        if out is not None or not keep:
            return *moved, None
        # consecutive rows as a slice: one view per array instead of a gathered copy, the most of a
        # strided single-orbit call; the views hold their block until the next flush, `chunk` steps on
        rows_kept = slice(keep[0], keep[-1] + 1) if keep[-1] - keep[0] == len(keep) - 1 else list(keep)
        return *moved, tuple(t[rows_kept] for t in rows)
    return advance, STEPS_PER_CALL, "compiled"


def _recorded(first: int, n: int, record_every: int, last: bool) -> tuple[int, ...]:
    """Which of the steps ``first .. first + n - 1`` (as indices 0..n-1) are recorded: every
    ``record_every``-th step, and the block's last when the run ends with it."""
    keep = tuple(j for j in range(n) if (first + j) % record_every == 0)
    return keep + (n - 1,) if last and (not keep or keep[-1] != n - 1) else keep


def _rows_needed(stop: StopRule, record_every: int, chunk: int) -> int:
    """The rows a run records: exact with a step limit (row 0, every ``record_every``-th step and
    the last); a first guess of a few chunks for a run that stops at ``t_end``."""
    if stop.max_steps is None:
        return 4 * chunk
    return 2 + stop.max_steps // record_every + STEPS_PER_CALL  # a last, partial call writes a full block


def simulate(state: State, policy, gravity: Gravity, stop: StopRule, reporter: Reporter | None = None,
             phase: str = "simulate", chunk: int = 256, compile: bool = False, record_every: int = 1) -> Trajectory:
    """Integrate every system with ``policy`` until ``stop``; record every ``record_every``-th
    step (and the last), with its diagnostics.

    Systems that reached ``stop.t_end`` take zero-length steps while the others finish. Every
    ``chunk`` steps (at the next recorded row) the new rows are checked, reported as a
    TrajectoryChunk event and tested for the end of the run.
    Raises NonFiniteStateError naming the first recorded step and time where a value stopped
    being finite, and RunCancelled when the reporter's token is set.
    """
    reporter = reporter or Reporter()
    start = wallclock.perf_counter()
    advance, per_call, path = _stepper(policy, gravity, stop.t_end, compile, state.mass, state.dim)
    compiled = path == "compiled"  # the general compiled step computes the diagnostics with its rows
    per_call = min(per_call, chunk)
    with torch.inference_mode():
        # inference tensors from the start: a compiled stepper guards on the kind of tensor it
        # gets, and would compile a second time once the state it returns comes back
        state = State(*(t.clone() for t in (state.mass, state.position, state.velocity, state.time)))
        recorder = _Recorder(state, gravity, _rows_needed(stop, record_every, chunk), diagnosed=compiled)
        acc, _ = gravity(state, with_potential=False)
        carry = policy.init(state)
        steps_taken = torch.zeros_like(state.time, dtype=torch.long)
        in_place = compiled and record_every == 1
        step, flushed, done = 0, 0, False
        while not done:
            reporter.cancel.raise_if_cancelled()
            n = per_call if stop.max_steps is None else min(per_call, stop.max_steps - step)
            at_limit = stop.max_steps is not None and step + n >= stop.max_steps
            keep = _recorded(step + 1, n, record_every, at_limit)
            out = recorder.slots(STEPS_PER_CALL) if in_place else None
            state, acc, carry, steps_taken, rows = advance(state, acc, carry, steps_taken, n, keep, out)
            step += n
            if in_place:
                recorder.commit(n)
            elif rows:
                recorder.add(rows)
            if at_limit or step - flushed >= chunk:
                if _reached_end(state, stop) and not (keep and keep[-1] == n - 1):
                    recorder.add_state(state)  # the end lies between recorded rows: record it now
                if recorder.unreported:
                    done = _flush(recorder, step, stop, reporter, phase, record_every) or at_limit
                flushed = step
        data = recorder.numpy()
    if stop.t_end is None:
        steps_taken = torch.full_like(steps_taken, step)
    return Trajectory(mass=state.mass.cpu().numpy(), steps=steps_taken.cpu().numpy(),
                      force_evals=force_evals(policy, carry, steps_taken).cpu().numpy(),
                      wall_time_s=wallclock.perf_counter() - start, path=path, **data)


def force_evals(policy, carry, steps: torch.Tensor) -> torch.Tensor:
    """The force evaluations (B,) of ``steps`` (B,) steps of ``policy``: one a step, unless the
    policy counts its own (``policy.force_evals(carry, steps)``: trial steps, iterations)."""
    counted = getattr(policy, "force_evals", None)
    return steps if counted is None else counted(carry, steps)


def _reached_end(state: State, stop: StopRule) -> bool:
    """Whether every system has reached the run's end time (never, without one)."""
    return stop.t_end is not None and bool((state.time >= stop.t_end).all())


def _flush(recorder: _Recorder, step: int, stop: StopRule, reporter: Reporter, phase: str, record_every: int) -> bool:
    """Check the newest rows, report them, and say whether every system has reached its end."""
    # the step of the chunk's first row; only a run's final row lies off the record_every grid
    first_step = min(recorder.reported * record_every, step)
    rows = recorder.flush()
    _check_finite(rows, first_step, record_every, step)
    time = rows["time"]
    done = stop.t_end is not None and bool((time[-1] >= stop.t_end).all())
    if stop.max_steps:
        progress = step / stop.max_steps
    elif stop.t_end is not None:
        progress = float((time[-1] / stop.t_end).clamp(max=1).min())
    else:
        progress = 0.0
    energy0, L0 = recorder.arrays["energy"][0], recorder.arrays["angular_momentum"][0]
    rel_dE = relative_change(rows["energy"], energy0, vector=False).cpu().numpy()
    rel_dL = relative_change(rows["angular_momentum"], L0, vector=L0.dim() > 1).cpu().numpy()
    reporter.emit(TrajectoryChunk(phase=phase, step=first_step, time=time.cpu().numpy(), dt=rows["dt"].cpu().numpy(),
                                  position=rows["position"].cpu().numpy(), rel_dE=rel_dE, rel_dL=rel_dL,
                                  progress=progress))
    return done


def _check_finite(rows: dict[str, torch.Tensor], first: int, record_every: int, last: int) -> None:
    # a NaN or an infinity makes its array's sum non-finite: one cheap reduction per array, and
    # the rows are searched only then (a sum of huge finite values that overflows is searched too)
    if all(bool(torch.isfinite(rows[k].sum())) for k in ("position", "velocity", "energy")):
        return
    finite = torch.isfinite(rows["position"]).flatten(1).all(1) & torch.isfinite(rows["velocity"]).flatten(1).all(1)
    finite &= torch.isfinite(rows["energy"]).all(-1)
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0, 0])
    step = min(first + bad * record_every, last)
    last_good = max(bad - 1, 0)
    t = float(rows["time"][last_good].max()) if step else 0.0
    if t > FLEW_APART or float(rows["position"][last_good].abs().max()) > FLEW_APART:
        cause = ("bodies flew apart (an unbound system: the adaptive step grows with their separation until"
                 " time overflows); set 'steps', 'duration' or 'Nperiod', or start from bound initial conditions")
    else:
        cause = "a close encounter or too large a dt; lower 'eps' or 'dt', or add 'softening'"
    when = f"at step {step}" if record_every == 1 else f"by step {step} (recorded every {record_every})"
    raise NonFiniteStateError(f"the state stopped being finite {when} (time {t:.6g}): {cause}")


FLEW_APART = 1e100  # positions or times beyond this mean escape, not a collision


def period_of(mass: torch.Tensor, position: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """Kepler period of each two-body system (B,); inf for unbound or non-two-body systems."""
    if mass.shape[1] != 2:
        return torch.full(mass.shape[:1], math.inf, dtype=position.dtype, device=position.device)
    M = mass.sum(1)
    r = (position[:, 1] - position[:, 0]).norm(dim=-1)
    v2 = ((velocity[:, 1] - velocity[:, 0]) ** 2).sum(-1)
    specific_energy = 0.5 * v2 - M / r
    a = -M / (2 * specific_energy)
    period = 2 * math.pi * (a.clamp_min(0) ** 3 / M).sqrt()
    return torch.where(specific_energy < 0, period, torch.full_like(period, math.inf))
