"""REBOUND's integrators as competitors on the same axes as our policies: force evaluations,
max |dE/E|, position error against the reference, wall time (the optional ``reference``
extra; without ``rebound`` these rows are absent and ``evaluate`` says so).

- IAS15 (Rein & Spiegel 2015), the reference, is a competitor row too: :mod:`.reference` runs
  it once and :func:`.metrics.reference_rows` reports its cost and its own max |dE/E|.
- WHFast (Rein & Tamayo 2015), the symplectic Wisdom-Holman map in Jacobi coordinates, on the
  problems with a dominant central mass or a single pair (``Problem.kepler_split``): its step
  is ``eps * P / (2 pi)``, like the ``fixed`` baseline's. On a lone binary its Kepler drift is
  the exact solution, so it is exact there at any step: the row says what a splitting that
  knows the Kepler problem buys.
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import table_rows
from .problems import Problem
from .rebound_runs import run
from .reference import Reference

WHFAST = "WHFast"


def whfast_rows(problem: Problem, eps: list[float], reference: Reference) -> list[dict]:
    """WHFast over ``eps`` on every system of ``problem``, a row per system and eps."""
    state = problem.state
    mass, x0, v0 = (t.detach().cpu().double().numpy() for t in (state.mass, state.position, state.velocity))
    t_end = problem.t_end.detach().cpu().double().numpy()
    unit = problem.time_unit.detach().cpu().double().numpy()
    runs = [run("whfast", mass[b], x0[b], v0[b], problem.softening, t_end[b], dt=e * unit[b] / (2 * math.pi))
            for e in eps for b in range(state.batch_size)]
    measured = {key: np.array([getattr(r, key) for r in runs]) for key in
                ("steps", "force_evals", "max_rel_dE", "final_rel_dE", "wall_time_s")}
    measured |= {"max_rel_dL": np.full(len(runs), math.nan), "final_rel_dL": np.full(len(runs), math.nan)}
    return table_rows(problem, WHFAST, list(eps), np.array([r.position for r in runs]), measured, reference)
