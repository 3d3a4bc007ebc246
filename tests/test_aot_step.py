"""The pair step compiled ahead of time (:mod:`nbody_engine.integrators.aot_step`) against the eager
pair step: the same physics to rounding, which runs take it, and its packages on disk.

Most tests run the package's function, :class:`~nbody_engine.integrators.aot_step.PairBlock`,
eagerly in place of a compiled package (:func:`eager_packages`): the plumbing of blocks, recorded
rows, end times and the stepper's choice without a compile. The slow ones compile two packages
(``compiled``, once per module, and one of a learned step: about a minute each on two cores) and
check that they step as the eager pair step, that a new process loads a package instead of
compiling it, and that a package of another key or a broken one is never loaded."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from nbody_engine.integrators import aot_step
from nbody_engine.integrators.loop import StopRule, simulate
from nbody_engine.integrators.policies import AnalyticDt, ClassicDt, FixedDt
from nbody_engine.learning.network import DtNetwork, LearnedDt
from nbody_engine.physics.gravity import Gravity, PointMassField

from helpers import run_cli
from test_pair_step import assert_runs_agree, systems, triples
from test_two_body import trained_looking

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def cache_of_this_module(tmp_path_factory):
    """The packages this module compiles stay in a cache of its own: another module's eager runs
    of their shapes would take them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NBODY_EXPLORER_CACHE", str(tmp_path_factory.mktemp("aot_cache")))
        yield


SHARED_INPUTS = 13  # the block's inputs before the policy's: position, velocity, time, t_end, active, 8 constants


class EagerPackage:
    """A loaded package's interface (``run(list of tensors)``) over the uncompiled block of ``dt_of``."""

    def __init__(self, dt_of) -> None:
        self.block = aot_step.PairBlock(dt_of)

    def run(self, inputs):
        return list(self.block(*inputs[:SHARED_INPUTS], tuple(inputs[SHARED_INPUTS:])))


@pytest.fixture
def eager_packages(monkeypatch, tmp_path):
    """'Compiling' a package (``compile = true``) makes the eager
    :class:`~nbody_engine.integrators.aot_step.PairBlock` its loaded package, and an empty file
    its file in a cache of this test's own."""
    loaded = {}
    monkeypatch.setenv("NBODY_EXPLORER_CACHE", str(tmp_path))
    monkeypatch.setattr(aot_step, "_loaded", loaded)

    def compile_package(key, dt_of, example):
        path = aot_step.package_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        loaded[path] = EagerPackage(dt_of)
    monkeypatch.setattr(aot_step, "compile_package", compile_package)


def eager_run(state, policy, gravity, stop, record_every=1):
    """The eager pair step's run, whatever this machine's cache holds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aot_step, "aot_stepper", lambda *args: None)
        traj = simulate(state, policy, gravity, stop, record_every=record_every)
    assert traj.path == "pairs"
    return traj


@pytest.mark.parametrize("policy", [AnalyticDt(torch.tensor([0.02, 0.05], dtype=F64), 0.01), FixedDt(0.003)],
                         ids=["analytic", "fixed"])
@pytest.mark.parametrize(("stop", "record_every"), [(StopRule(max_steps=300), 1), (StopRule(max_steps=301), 7),
                                                    (StopRule(t_end=torch.tensor([3.0, 1.7], dtype=F64)), 1)],
                         ids=["300-steps", "every-7th", "to-an-end-time"])
def test_the_block_steps_as_the_pair_step(eager_packages, policy, stop, record_every):
    """Blocks of 16 steps (the last one cut short, or landing on each system's end time), every
    recorded row: the eager pair step's to rounding, for two hierarchical triples in 3D (regular
    orbits: rounding differences stay rounding differences)."""
    state, gravity = triples(), Gravity(0.01)
    ours = simulate(state, policy, gravity, stop, record_every=record_every, compile=True)
    assert ours.path == "aot"
    eager = eager_run(state, policy, gravity, stop, record_every)
    assert_runs_agree(ours, eager)
    if stop.t_end is not None:
        np.testing.assert_array_equal(ours.time[-1], stop.t_end.numpy())


@pytest.mark.parametrize(("feature_type", "objective", "eta"), [("basic", "band", None), ("delta_mag", "band", None),
                                                                ("basic", "rollout", [0.01, 0.1])],
                         ids=["basic", "delta_mag", "conditioned"])
def test_a_learned_step_in_the_block_is_the_pair_steps(eager_packages, feature_type, objective, eta):
    """The learned step without a history (its features from the block's pair quantities, its
    network folded as for the pair step): the eager pair step's run to float32 rounding."""
    network = trained_looking(feature_type, objective=objective)
    eta = None if eta is None else torch.tensor(eta, dtype=F64)
    gravity, stop = Gravity(0.01), StopRule(max_steps=300)
    policy = LearnedDt(network, feature_type, 0, gravity, eta)
    ours = simulate(triples(), policy, gravity, stop, record_every=10, compile=True)
    assert ours.path == "aot"
    assert_runs_agree(ours, eager_run(triples(), policy, gravity, stop, record_every=10), rtol=1e-5)
    assert len(set(np.round(ours.dt[2:, 0] / ours.dt[1:-1, 0], 6))) > 1


def test_learned_steps_the_package_cannot_express_are_not_packaged():
    mass = triples().mass
    basic = trained_looking("basic")
    assert LearnedDt(basic, "basic", 0, Gravity()).packaged_rule(mass, 0.0) is not None
    assert LearnedDt(basic, "basic", 0, Gravity(0.1)).packaged_rule(mass, 0.0) is None  # its own softening
    assert LearnedDt(trained_looking("delta_mag"), "delta_mag", 2, Gravity()).packaged_rule(mass, 0.0) is None
    assert LearnedDt(trained_looking("rich"), "rich", 0, Gravity()).packaged_rule(mass, 0.0) is None
    assert LearnedDt(trained_looking("basic", fourier_dim=4), "basic", 0, Gravity()).packaged_rule(mass, 0.0) is None
    assert LearnedDt(basic.train(), "basic", 0, Gravity()).packaged_rule(mass, 0.0) is None
    other = trained_looking("basic", activation="relu")
    kinds = {LearnedDt(net, "basic", 0, Gravity()).packaged_rule(mass, 0.0).kind for net in (basic.eval(), other)}
    assert len(kinds) == 2  # the activation is compiled in: another package


def test_the_block_conserves_what_the_leapfrog_conserves(eager_packages):
    """Hierarchical triples over 4,000 steps: momentum to rounding, energy bounded."""
    state = triples()
    traj = simulate(state, AnalyticDt(0.02), Gravity(), StopRule(max_steps=4000), record_every=50, compile=True)
    assert traj.path == "aot"
    scale = np.abs(traj.velocity).max() * traj.mass.max()
    np.testing.assert_allclose(traj.momentum, traj.momentum[:1].repeat(len(traj.momentum), 0), atol=1e-13 * scale)
    assert np.abs(traj.energy / traj.energy[:1] - 1).max() < 1e-4


def test_which_runs_take_the_compiled_step(eager_packages):
    three, two, many = systems(3, 3, 1), systems(2, 3, 1), systems(32, 2, 16)
    steps = StopRule(max_steps=3)
    learned = LearnedDt(DtNetwork(11, [8, 8], eps=0.02).eval(), "basic", 0, Gravity())
    for policy, state, gravity, compile, path in [
            (FixedDt(0.01), three, Gravity(), True, "aot"),  # compiled first
            (AnalyticDt(0.02), three, Gravity(), False, "aot"),  # the package exists: the automatic choice
            (AnalyticDt(0.02), many, Gravity(), True, "pairs"),  # many pairs: the eager pair step is faster
            (AnalyticDt(0.02), many, Gravity(), False, "pairs"),
            (AnalyticDt(0.02), two, Gravity(), False, "two-body"),  # faster eager, with 22 operations a step
            (AnalyticDt(0.02, softening=0.1), three, Gravity(), False, "general"),  # a softening of its own
            (ClassicDt(0.02), three, Gravity(), False, "general"),
            (learned, three, Gravity(), False, "pairs"),  # no package of this kind yet
            (learned, three, Gravity(), True, "aot"),
            (AnalyticDt(0.02), three, Gravity(field=PointMassField(1.0, (5.0, 0.0, 0.0))), False, "general")]:
        assert simulate(state, policy, gravity, steps, compile=compile).path == path, (policy, path)


def test_without_a_package_an_eager_run_takes_the_eager_pair_step():
    assert simulate(systems(3, 3, 1), AnalyticDt(0.02), Gravity(), StopRule(max_steps=3)).path == "pairs"


def test_a_package_is_named_by_everything_it_was_compiled_for(monkeypatch, tmp_path):
    monkeypatch.setenv("NBODY_EXPLORER_CACHE", str(tmp_path / "cache"))
    mass = torch.ones(1, 3, dtype=F64)
    key = aot_step.package_key(mass, 3, AnalyticDt(0.02).packaged_rule(mass, 0.0))
    assert key["torch"] == torch.__version__ and key["dtype"] == "float64" and key["block"] == aot_step.BLOCK
    path = aot_step.package_path(key)
    assert path.parent == tmp_path / "cache" / "steps" and path.suffix == ".pt2"
    for field, other in [("systems", 2), ("bodies", 4), ("dim", 2), ("dtype", "float32"), ("torch", "0.0"),
                         ("step", "0" * 16), ("cpu", "other"), ("block", 8), ("kind", "learned")]:
        assert aot_step.package_path({**key, field: other}) != path, field
    monkeypatch.delenv("NBODY_EXPLORER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert aot_step.cache_dir() == tmp_path / "xdg" / "nbody_explorer"


# --- one compiled package -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled():
    """One package, compiled by a first ``compile = true`` run: one system of three bodies in 3D,
    float64, in :func:`cache_of_this_module`."""
    state = triples().select(slice(0, 1))
    traj = simulate(state, AnalyticDt(0.02), Gravity(), StopRule(max_steps=20), compile=True)
    assert traj.path == "aot"
    key = aot_step.package_key(state.mass, state.dim, AnalyticDt(0.02).packaged_rule(state.mass, 0.0))
    assert aot_step.load(key) is not None
    return {"state": state, "key": key, "path": aot_step.package_path(key)}


@pytest.mark.slow
@pytest.mark.parametrize("policy", [AnalyticDt(0.02), FixedDt(0.01)], ids=["analytic", "fixed"])
@pytest.mark.parametrize("stop", [StopRule(max_steps=300), StopRule(t_end=torch.tensor([2.5], dtype=F64))],
                         ids=["300-steps", "to-an-end-time"])
def test_the_compiled_step_is_the_eager_pair_step(compiled, policy, stop):
    state, gravity = compiled["state"], Gravity()
    ours = simulate(state, policy, gravity, stop, compile=True)
    assert ours.path == "aot"
    assert_runs_agree(ours, eager_run(state, policy, gravity, stop))
    automatic = simulate(state, policy, gravity, stop)  # eager, but this machine has the package: it takes it
    assert automatic.path == "aot"
    np.testing.assert_array_equal(automatic.position, ours.position)


@pytest.mark.slow
def test_a_compiled_learned_step_is_the_eager_pair_steps():
    """The second and last compile of this module: a learned step without history, softened."""
    state, gravity = triples().select(slice(1, 2)), Gravity(0.01)
    policy, stop = LearnedDt(trained_looking("delta_mag"), "delta_mag", 0, gravity), StopRule(max_steps=300)
    ours = simulate(state, policy, gravity, stop, compile=True)
    assert ours.path == "aot"
    assert_runs_agree(ours, eager_run(state, policy, gravity, stop), rtol=1e-5)


@pytest.mark.slow
def test_a_new_process_loads_the_package_instead_of_compiling(compiled, tmp_path):
    """The runner in a subprocess with ``--compile``, on the package's shape: it reports the
    'aot' stepper and writes nothing to the cache (no compile)."""
    before = {p: p.stat().st_mtime_ns for p in compiled["path"].parent.iterdir()}
    result = run_cli(tmp_path, "simulate", "--num-particles", "3", "--dim", "3", "--steps", "200", "--Nperiod", "0",
                     "--compile", "-s", "loaded")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "data" / "loaded" / "sim" / "analytic" / "summary.json").read_text())
    assert summary["stepper"] == "aot"
    assert "compiling" not in result.stderr
    assert {p: p.stat().st_mtime_ns for p in compiled["path"].parent.iterdir()} == before


@pytest.mark.slow
def test_a_package_of_another_key_or_a_broken_one_is_never_loaded(compiled, caplog):
    key = compiled["key"]
    other = {**key, "systems": 2}
    shutil.copy(compiled["path"], aot_step.package_path(other))  # the right name, the wrong package
    assert aot_step.load(other) is None
    assert "compiled for another key" in caplog.text
    state = systems(3, 3, 2)
    assert simulate(state, AnalyticDt(0.02), Gravity(), StopRule(max_steps=3)).path == "pairs"
    aot_step.package_path(other).write_bytes(b"not a package")
    assert aot_step.load(other) is None
    assert "cannot be loaded" in caplog.text
    aot_step.package_path(other).unlink()
