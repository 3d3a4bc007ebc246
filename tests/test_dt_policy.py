"""Every dt policy implements the one interface, DtPolicy, and the two-body fast path is taken
exactly where a policy declares a relative rule."""

from __future__ import annotations

import pytest
import torch

from nbody_engine.config.loading import build_config, config_values
from nbody_engine.integrators.dt_policy import DtPolicy
from nbody_engine.integrators.loop import StopRule, simulate
from nbody_engine.integrators.policies import (AnalyticDt, ClassicDt, DriftCorrectedDt, FixedDt, TimeSymmetricDt,
                                               analytic_or_fixed)
from nbody_engine.integrators.two_body import Binaries, relative_stepper
from nbody_engine.learning.network import LearnedDt, build_network
from nbody_engine.physics.gravity import Gravity
from nbody_engine.physics.initial_conditions import kepler_orbit


def learned(history_len: int = 0, feature_type: str = "basic") -> LearnedDt:
    values = config_values(build_config({"feature_type": feature_type, "history_len": history_len,
                                         "hidden_dims": [8]}))
    return LearnedDt(build_network(values).eval(), feature_type, history_len, Gravity())


POLICIES = {
    "fixed": lambda: FixedDt(0.01),
    "analytic": lambda: AnalyticDt(0.05),
    "drift-corrected": lambda: DriftCorrectedDt(0.05),
    "classic": lambda: ClassicDt(0.05),
    "time-symmetric": lambda: TimeSymmetricDt(AnalyticDt(0.05), Gravity()),
    "learned": lambda: learned(),
    "history": lambda: learned(history_len=2),
}
DECLARES_A_RULE = {"fixed", "analytic", "learned"}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_implements_the_protocol(name):
    assert isinstance(POLICIES[name](), DtPolicy)


class Undeclared:
    """A fixed step of 0.01 with ``init``, ``dt`` and ``update`` but no declared relative rule."""

    def init(self, state):
        return None

    def dt(self, state, carry=None, acc=None):
        return torch.full_like(state.time, 0.01)

    def update(self, carry, state, dt, acc=None):
        return carry


def test_an_object_without_a_declared_rule_is_no_policy():
    assert not isinstance(Undeclared(), DtPolicy)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_fast_path_is_taken_only_where_the_policy_declares_a_rule(name):
    binary = kepler_orbit(0.5, 1.0)
    policy = POLICIES[name]()
    declared = policy.relative_rule(Binaries(binary.mass, 0.0)) is not None
    assert declared == (name in DECLARES_A_RULE)
    assert (relative_stepper(policy, Gravity(), binary.mass, None) is not None) == declared


def test_the_analytic_rule_of_the_spec_declares_the_path_unless_time_symmetric():
    binary = kepler_orbit(0.5, 1.0)
    for time_symmetric, expected in ((False, True), (True, False)):
        policy = analytic_or_fixed(-1.0, 0.05, Gravity(), time_symmetric)
        assert (relative_stepper(policy, Gravity(), binary.mass, None) is not None) == expected


def test_a_declared_rule_is_the_one_the_loop_steps_with():
    """A policy whose rule says something else than its dt: the binary follows the rule."""
    class RuleOfItsOwn(Undeclared):
        def relative_rule(self, binaries):
            return lambda separation, distance, relative_velocity, drift: torch.full_like(distance, 0.02)

    traj = simulate(kepler_orbit(0.5, 1.0), RuleOfItsOwn(), Gravity(), StopRule(max_steps=10))
    assert traj.time[-1, 0] == pytest.approx(0.2, rel=1e-14)


def test_a_subclass_that_redefines_dt_declares_no_rule_unless_it_says_so():
    class Halved(AnalyticDt):
        def dt(self, state, carry=None, acc=None):
            return super().dt(state) / 2

    class HalvedWithItsRule(Halved):
        def relative_rule(self, binaries):
            rule = AnalyticDt.relative_rule(self, binaries)
            return lambda *relative: rule(*relative) / 2

    binary = kepler_orbit(0.5, 1.0)
    assert relative_stepper(Halved(0.05), Gravity(), binary.mass, None) is None
    assert relative_stepper(HalvedWithItsRule(0.05), Gravity(), binary.mass, None) is not None
    general = simulate(binary, Halved(0.05), Gravity(), StopRule(max_steps=50))
    fast = simulate(binary, HalvedWithItsRule(0.05), Gravity(), StopRule(max_steps=50))
    torch.testing.assert_close(torch.as_tensor(fast.time), torch.as_tensor(general.time), rtol=1e-12, atol=0)
