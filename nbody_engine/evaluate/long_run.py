"""Long-term drift: one long run per policy, on the problems that live long (bound orbits).

A step-size rule that is not time-reversible lets the energy error grow secularly, so a policy
that wins over 10 periods can lose over 1000. Each policy listed in LONG_POLICIES runs the
problem's systems for ``eval_long_periods`` time units (Kepler periods; a tenth as many inner
periods for the triples, whose outer orbits make each period cost more) at equal cost: the
learned policy at its own knob (or at the ``eval_eps`` value nearest ``eps``, where it has one),
each baseline, system by system, at the knob value of its sweep whose force evaluations per
period in the short run lie nearest the learned policy's on that system (:func:`equal_cost_eps`;
one knob for all would let one system take many times the others' steps, and a batch runs as
long as its slowest system).
Per system it gives:

- ``long_first_dE``, ``long_last_dE``: max |dE/E| over the first and over the last tenth of the run;
- ``growth_exponent``: the slope of log max |dE/E| per tenth against log time over the last nine
  tenths: about 0 for a bounded error, 0.5 for a random walk, 1 for a linear drift, 2 for a
  quadratic one; none (NaN) where the error stays at round-off (below ROUND_OFF), whose
  ups and downs have no trend to measure.
"""

from __future__ import annotations

import math

import numpy as np

from ..config.errors import NonFiniteStateError
from ..events import Reporter
from ..integrators.loop import StopRule, simulate
from ..physics.gravity import Gravity, relative_change
from .problems import Problem

LONG_POLICIES = ("learned", "analytic", "analytic-midpoint", "analytic-symmetric", "ttl")
PERIOD_SCALE = {"kepler": 1.0, "triples": 0.1}  # long-lived problems, and their share of eval_long_periods
WINDOWS = 10
ROUND_OFF = 1e-12
RECORDED_ROWS = 20_000  # rows kept per run at most: enough for ten windows' maxima


def long_eps(eval_eps: list[float], eps: float) -> float:
    """The knob value of the long runs: the ``eval_eps`` value nearest ``eps`` (log scale)."""
    return min(eval_eps, key=lambda value: abs(math.log(value / eps)))


def equal_cost_eps(rows: list[dict], policy: str, costs: dict[int, float]) -> dict[int, float]:
    """Per system of ``costs`` (system -> force evaluations per period), the knob value of
    ``policy``'s rows of that system whose force evaluations per period lie nearest (log scale)."""
    chosen = {}
    for system, cost in costs.items():
        mine = [r for r in rows if r["policy"] == policy and r["system"] == system and r["evals_per_period"] > 0]
        chosen[system] = min(mine, key=lambda r: abs(math.log(r["evals_per_period"] / cost)))["eps"]
    return chosen


def long_metrics(problem: Problem, make, periods: float, reporter: Reporter) -> list[dict]:
    """The long-run metrics of each system of ``problem`` under ``make(unit) -> policy``, or []
    for a problem that does not live long."""
    if problem.name not in PERIOD_SCALE or periods <= 0:
        return []
    reporter.cancel.raise_if_cancelled()
    t_end = periods * PERIOD_SCALE[problem.name] * problem.time_unit
    gravity = Gravity(problem.softening)
    policy = make(problem.time_unit)
    every = max(1, int(float((t_end / problem.time_unit).max()) * 1000 // RECORDED_ROWS))
    try:
        traj = simulate(problem.state, policy, gravity, StopRule(t_end=t_end), reporter, phase="evaluate",
                        record_every=every)
    except NonFiniteStateError:  # the policy did not survive the long run: an infinite error, said as such
        return [{"long_periods": float(periods * PERIOD_SCALE[problem.name]), "long_first_dE": math.inf,
                 "long_last_dE": math.inf, "growth_exponent": math.nan} for _ in range(problem.state.batch_size)]
    rel_dE = relative_change(traj.energy, traj.energy[0], vector=False)
    return [_windows(traj.time[:, b], rel_dE[:, b], float(t_end[b]), periods * PERIOD_SCALE[problem.name])
            for b in range(problem.state.batch_size)]


def _windows(time: np.ndarray, rel_dE: np.ndarray, t_end: float, periods: float) -> dict:
    """Max |dE/E| per tenth of the run, its first and last, and the growth exponent."""
    edges = np.linspace(0, t_end, WINDOWS + 1)
    index = np.clip(np.searchsorted(edges, time, side="right") - 1, 0, WINDOWS - 1)
    largest = np.zeros(WINDOWS)
    np.maximum.at(largest, index, np.nan_to_num(rel_dE, nan=np.inf))
    later = largest[1:]
    usable = later > 0
    measurable = usable.sum() > 1 and largest.max() >= ROUND_OFF
    slope = np.polyfit(np.log(edges[2:][usable]), np.log(later[usable]), 1)[0] if measurable else math.nan
    return {"long_periods": float(periods), "long_first_dE": float(largest[0]), "long_last_dE": float(largest[-1]),
            "growth_exponent": float(slope)}


def attach(rows: list[dict], policy: str, eps: dict[int, float | None], metrics: list[dict],
           checkpoint: int | None = None) -> None:
    """Copy the long-run metrics onto the table rows of ``policy`` (of the learned policy of
    ``checkpoint``), system by system, each at its knob value ``eps[system]``."""
    for row in rows:
        if row["policy"] == policy and row["system"] < len(metrics) and row["eps"] == eps[row["system"]] and \
                row.get("checkpoint") == checkpoint:
            row.update(metrics[row["system"]])

