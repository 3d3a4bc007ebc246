"""The baselines the learned policy is measured against, each a family over its accuracy knob.

A family turns a tensor of knob values (one per system of a batch) into one policy, so a whole
sweep of the knob over every system of a problem is one batched simulation. Force evaluations
are counted by the simulation itself (``Trajectory.force_evals``):

- ``fixed``: ``dt = eps * P / (2 pi)`` with ``P`` the problem's time unit (a Kepler period:
  ``2 pi / eps`` steps per period);
- ``classic``: ``eps * min_i sqrt(r_i,nearest / |a_i|)``, upstream's and the literature's rule;
- ``analytic``: ``eps * tau(s)``, the pairwise time scale (``integrator_mode = "analytic"``);
- ``analytic-symmetric``: the time-symmetrized analytic step, one pass (two force evaluations a step);
- ``analytic-hmm``: the truly time-symmetric analytic step of Hut, Makino & McMillan (1995), its
  implicit equation iterated to convergence (a force evaluation per iterate);
- ``analytic-midpoint``: the drift-corrected analytic step, the criterion at the step's midpoint;
- ``ttl``: the time-transformed leapfrog with the logarithmic Hamiltonian (``integrator_mode =
  "ttl"``), its fictitious step ``h = eps U(q0) tau(q0)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..integrators.policies import (AnalyticDt, ClassicDt, DriftCorrectedDt, FixedDt, IteratedTimeSymmetricDt,
                                    TimeSymmetricDt)
from ..integrators.ttl import LogHamiltonian, TimeTransformedLeapfrog
from ..physics.gravity import Gravity


@dataclass(frozen=True)
class Baseline:
    name: str
    make: Callable[[torch.Tensor, torch.Tensor, Gravity], object]  # (eps (B,), time unit (B,), gravity) -> policy


BASELINES = (
    Baseline("fixed", lambda eps, unit, g: FixedDt(eps * unit / (2 * math.pi))),
    Baseline("classic", lambda eps, unit, g: ClassicDt(eps, g)),
    Baseline("analytic", lambda eps, unit, g: AnalyticDt(eps, g.softening)),
    Baseline("analytic-symmetric", lambda eps, unit, g: TimeSymmetricDt(AnalyticDt(eps, g.softening), g)),
    Baseline("analytic-hmm", lambda eps, unit, g: IteratedTimeSymmetricDt(AnalyticDt(eps, g.softening), g)),
    Baseline("analytic-midpoint", lambda eps, unit, g: DriftCorrectedDt(eps, g.softening)),
    Baseline("ttl", lambda eps, unit, g: TimeTransformedLeapfrog(LogHamiltonian(), g, eps=eps)),
)
