"""The one interface every dt policy implements, :class:`DtPolicy`: the simulation loop and a
training attempt hold a policy through it and never ask which policy it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import torch

from ..physics.gravity import State

if TYPE_CHECKING:
    from .pair_step import Frame, Pairs
    from .two_body import Binaries

RelativeRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``rule(separation (B, D), distance (B, 1), relative_velocity (B, D), drift (B, D)) -> dt (B, 1)``:
a policy's step for a batch of binaries, from their relative orbit (``distance`` is
``|separation|`` softened by the simulation's gravity) and their centre of mass's velocity."""

class PackagedRule(NamedTuple):
    """A policy's step as :mod:`~nbody_engine.integrators.aot_step`'s compiled pair step takes it:
    ``dt_of(quantities, *inputs) -> dt (B,)``, a pure function traced into the package, of the
    step's :class:`~nbody_engine.integrators.aot_step.PairQuantities` and the policy's tensor
    ``inputs``; ``kind`` names what the package is compiled for beyond shapes (what ``dt_of``
    bakes in), and ``sources`` the files of the code ``dt_of`` runs: both are in the package's key."""

    kind: str
    inputs: tuple[torch.Tensor, ...]
    dt_of: Callable[..., torch.Tensor]
    sources: tuple[str, ...]


PairRule = Callable[["Pairs"], torch.Tensor]
"""``rule(pairs) -> dt (B,)``: a policy's step for systems of three or more bodies from the pair
quantities :mod:`~nbody_engine.integrators.pair_step` computes once per step."""


@runtime_checkable
class DtPolicy(Protocol):
    """Given the state of each system, the dt (B,) of its next step.

    - ``init(state) -> carry``: what the policy keeps between steps (its history), or None;
    - ``dt(state, carry, acc=None) -> Tensor (B,)``: the next step size of each system; ``acc``
      is the state's accelerations (B, N, D) when the caller has them (the loop always does), so
      that a policy whose features need them does not evaluate the forces a second time;
    - ``update(carry, state, dt, acc=None) -> carry``: called with the state reached after each step;
    - ``relative_rule(binaries) -> RelativeRule | None``: the declaration of the two-body fast
      path (:mod:`~nbody_engine.integrators.two_body`): for a batch of
      :class:`~nbody_engine.integrators.two_body.Binaries`, the same steps as ``dt`` computed from
      the relative orbit, or None where the policy has no such form. The loop steps a binary's
      relative orbit only under a rule the policy returns; it never infers one. A policy that
      changes ``dt`` (a subclass included) must say what its rule is, None when it has none;
    - ``pair_rule(frame) -> PairRule | None``: the same declaration for
      :mod:`~nbody_engine.integrators.pair_step`'s path of three or more bodies
      (:class:`~nbody_engine.integrators.pair_step.Frame`);
    - optionally ``packaged_rule(mass, softening) -> PackagedRule | None``: the policy as
      :mod:`~nbody_engine.integrators.aot_step`'s compiled step takes it; a policy without the
      method, or one that returns None, never takes that step.
    """

    def init(self, state: State) -> Any: ...

    def dt(self, state: State, carry: Any = None, acc: torch.Tensor | None = None) -> torch.Tensor: ...

    def update(self, carry: Any, state: State, dt: torch.Tensor, acc: torch.Tensor | None = None) -> Any: ...

    def relative_rule(self, binaries: Binaries) -> RelativeRule | None: ...

    def pair_rule(self, frame: Frame) -> PairRule | None: ...


@runtime_checkable
class OwnStep(Protocol):
    """A policy that brings its own integrator (the time-transformed leapfrog,
    :class:`~nbody_engine.integrators.ttl.TimeTransformedLeapfrog`): the simulation loop runs its
    ``stepper(t_end)``, an ``advance`` of the loop's shape, instead of the leapfrog with a dt."""

    def stepper(self, t_end: torch.Tensor | None) -> Callable: ...
