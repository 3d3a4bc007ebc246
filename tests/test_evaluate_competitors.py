"""The classical competitors of ``evaluate``: the iterated time-symmetric step, REBOUND's rows
(and their absence without it), and a user's own planetary system in its own time unit."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from nbody_engine.config.loading import load_configs
from nbody_engine.evaluate.problems import own_time_unit
from nbody_engine.integrators.loop import StopRule, simulate
from nbody_engine.integrators.policies import AnalyticDt, IteratedTimeSymmetricDt, TimeSymmetricDt
from nbody_engine.jobs.train import run_training
from nbody_engine.physics.gravity import Gravity
from nbody_engine.physics.initial_conditions import kepler_orbit, load_ic_file


def there_and_back(policy_of, orbit, steps: int):
    """Integrate ``steps`` steps, reverse the velocities, integrate ``steps`` more: a reversible
    integrator is back where it started (with reversed velocities)."""
    gravity = Gravity()
    out = simulate(orbit, policy_of(gravity), gravity, StopRule(max_steps=steps))
    turned = orbit.replace(position=torch.as_tensor(out.position[-1]), velocity=-torch.as_tensor(out.velocity[-1]))
    back = simulate(turned, policy_of(gravity), gravity, StopRule(max_steps=steps))
    return np.abs(back.position[-1] - orbit.position.numpy()).max(), out


def test_the_iterated_time_symmetric_step_is_reversible_where_one_pass_is_not():
    orbit = kepler_orbit([0.7], 1.0)
    hmm_miss, hmm = there_and_back(lambda g: IteratedTimeSymmetricDt(AnalyticDt(0.1), g), orbit, 400)
    one_pass_miss, one_pass = there_and_back(lambda g: TimeSymmetricDt(AnalyticDt(0.1), g), orbit, 400)
    assert hmm_miss < 1e-9 < 1e-6 < one_pass_miss
    # it pays for it: each step its own force evaluation and at least two trial steps
    assert hmm.force_evals[0] >= 3 * hmm.steps[0] and one_pass.force_evals[0] == 2 * one_pass.steps[0]


def runner(cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "nbody_engine.runner", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env=env)


TINY_TRAIN = {"num_particles": 2, "num_orbits": 2, "epochs": 2, "n_steps": 3, "steps_per_epoch": 2,
              "replay_steps": 3, "hidden_dims": [8, 8], "seed": 3, "lr": 1e-3}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("competitors")
    cfg = load_configs("train", cli={**TINY_TRAIN, "save_name": "tiny"})["train"]
    return root, run_training(cfg, data_dir=root / "data")["checkpoint"]


@pytest.mark.slow
def test_without_rebound_its_rows_are_absent_and_the_output_says_so(checkpoint, tmp_path):
    root, ckpt = checkpoint
    hidden = tmp_path / "no_rebound"
    (hidden / "rebound").mkdir(parents=True)
    (hidden / "rebound" / "__init__.py").write_text("raise ImportError('rebound hidden by the test')\n")
    env = {**__import__("os").environ}
    env["PYTHONPATH"] = f"{hidden}:{env.get('PYTHONPATH', '')}"
    done = runner(root, "evaluate", "--model-path", ckpt, "--eval-suite", "kepler", "--eval-systems", "0",
                  "--eval-e", "0.6", "--eval-eps", "0.1", "--Nperiod", "1", "--eval-long-periods", "0",
                  "-s", "norebound", env=env)
    assert done.returncode == 0, done.stderr
    assert "note: IAS15 and WHFast rows absent: rebound is not installed" in done.stdout
    table = json.loads((root / "data/norebound/eval/table.json").read_text())
    assert not {"IAS15", "WHFast"} & {r["policy"] for r in table["rows"]}
    assert "ttl" in {r["policy"] for r in table["rows"]} and table["notes"]


def planets(path):
    """A star of mass 1 and two Jupiter-mass planets on circular orbits at a = 1 and 1.6."""
    rows = [[1.0, 0, 0, 0, 0]]
    for mass, a, phase in ((1e-3, 1.0, 0.0), (1e-3, 1.6, 2.0)):
        v = math.sqrt((1 + mass) / a)
        rows.append([mass, a * math.cos(phase), a * math.sin(phase), -v * math.sin(phase), v * math.cos(phase)])
    np.savetxt(path, rows)


def test_own_time_unit_is_the_shortest_pairwise_period_or_the_crossing_time(tmp_path):
    planets(tmp_path / "planets.txt")
    unit, what = own_time_unit(load_ic_file(tmp_path / "planets.txt"))
    assert float(unit[0]) == pytest.approx(2 * math.pi / math.sqrt(1.001), rel=1e-12)
    assert what == "shortest pairwise orbital period"
    unbound = kepler_orbit([0.5], 1.0)
    unbound = unbound.replace(velocity=3 * unbound.velocity)
    unit, what = own_time_unit(unbound)
    assert what == "crossing time" and 0 < float(unit[0]) < 1


@pytest.mark.slow
def test_a_planetary_system_gets_its_own_time_unit_and_every_comparison_is_reported(checkpoint, tmp_path):
    """The learned policy costs more than the coarse sweep given: each baseline's sweep is
    extended toward it and the output says so; WHFast's is not, and its verdict says that the
    learned policy costs more than every point of it instead of being dropped; WHFast runs at all
    because one mass dominates; position errors are in units of the system's size."""
    root, ckpt = checkpoint
    planets(root / "planets.txt")
    done = runner(root, "evaluate", "--model-path", ckpt, "--ic-path", "planets.txt", "--duration", "12.6",
                  "--eval-eps", "1.0", "2.0", "-s", "planets")
    assert done.returncode == 0, done.stderr
    assert "note: ic_file: time unit system 0: 6.28 (shortest pairwise orbital period)" in done.stdout
    assert "note: ic_file: the fixed sweep was extended to eps" in done.stdout
    table = json.loads((root / "data/planets/eval/table.json").read_text())
    verdicts = {v["baseline"]: v for v in table["learned_versus_baselines"]}
    assert set(verdicts) == {"fixed", "classic", "analytic", "analytic-symmetric", "analytic-hmm",
                             "analytic-midpoint", "ttl", "WHFast"}
    for name, verdict in verdicts.items():
        line = next(line for line in done.stdout.splitlines() if f"learned vs {name}:" in line)
        if verdict["ratio"] is None:
            assert verdict["outside"] in ("more", "less")
            assert f"learned costs {verdict['outside']} than every point of {name} in 1 of 1" in line
        else:
            assert verdict["outside"] is None and f"at equal force evals {verdict['ratio']:.3g} [" in line
    fixed = [r for r in table["rows"] if r["policy"] == "fixed"]
    assert min(r["eps"] for r in fixed) < 1.0  # the extension's rows are in the table
    learned = next(r for r in table["rows"] if r["policy"] == "learned")
    assert 0 < learned["position_error"] < 1  # in units of the system's size (about the outer planet's orbit)


@pytest.mark.slow
def test_long_runs_tell_a_drifting_error_from_a_bounded_one(checkpoint):
    """Over 60 periods of an e = 0.7 orbit the plain analytic step's energy error drifts (growth
    exponent near 1), the one-pass time-symmetric step's barely grows, the TTL's stays at
    round-off; every row of table.json carries the long-run columns (null where not run)."""
    root, ckpt = checkpoint
    done = runner(root, "evaluate", "--model-path", ckpt, "--eval-suite", "kepler", "--eval-systems", "0",
                  "--eval-e", "0.7", "--eval-eps", "0.1", "--Nperiod", "1", "--eval-long-periods", "60", "-s", "long")
    assert done.returncode == 0, done.stderr
    table = json.loads((root / "data/long/eval/table.json").read_text())
    assert all({"long_first_dE", "long_last_dE", "growth_exponent", "long_periods"} <= set(r) for r in table["rows"])
    long = {r["policy"]: r for r in table["rows"] if r["long_periods"] is not None}
    assert set(long) == {"learned", "analytic", "analytic-midpoint", "analytic-symmetric", "ttl"}
    assert long["analytic"]["growth_exponent"] > 0.7
    assert long["analytic"]["long_last_dE"] > 3 * long["analytic"]["long_first_dE"]
    assert long["analytic-symmetric"]["growth_exponent"] < 0.5
    assert long["ttl"]["long_last_dE"] < 1e-12
    assert done.stdout.count("long run, kepler e=0.70, 60 periods") == 5


def test_a_long_run_takes_per_system_the_knob_value_that_costs_what_the_learned_policy_does():
    from nbody_engine.evaluate.long_run import equal_cost_eps

    rows = [{"policy": policy, "eps": eps, "system": system, "evals_per_period": cost}
            for policy, eps, costs in (("ttl", 0.1, (1200, 1300, 9000)), ("ttl", 0.4, (300, 330, 2200)),
                                       ("ttl", 1.6, (80, 90, 600)), ("analytic", 0.1, (100, 120, 110)))
            for system, cost in enumerate(costs)]
    # system 2 costs seven times the others at every eps: it gets a coarser knob for the same cost
    assert equal_cost_eps(rows, "ttl", {0: 250.0, 1: 150.0, 2: 500.0}) == {0: 0.4, 1: 1.6, 2: 1.6}
    assert equal_cost_eps(rows, "analytic", {0: 5000.0}) == {0: 0.1}


@pytest.mark.parametrize("dim", [2, 3])
def test_the_exact_kepler_orbit_closes_after_a_period_and_the_phase_error_converges_at_order_two(dim):
    from nbody_engine.evaluate.kepler_phase import exact_relative_orbit, phase_metrics
    from nbody_engine.integrators.loop import period_of

    orbit = kepler_orbit([0.3, 0.9], 1.0, dim=dim)
    period = period_of(orbit.mass, orbit.position, orbit.velocity).numpy()
    start = (orbit.position[:, 1] - orbit.position[:, 0]).numpy()
    speed = (orbit.velocity[:, 1] - orbit.velocity[:, 0]).numpy()
    times = np.stack([np.zeros(2), 0.5 * period, period])
    exact, a, exact_period = exact_relative_orbit(start, speed, orbit.mass.sum(-1).numpy(), times)
    assert np.allclose(exact_period, period, rtol=1e-13) and np.allclose(a, 1.0, rtol=1e-13)
    assert np.allclose(exact[0], start, atol=1e-13) and np.allclose(exact[2], start, atol=1e-9)
    assert np.allclose(exact[1][:, 0], [-1.3, -1.9])  # apocentre, a (1 + e) away on the far side
    errors = []
    for eps in (0.02, 0.01):
        traj = simulate(orbit, AnalyticDt(eps), Gravity(), StopRule(t_end=torch.as_tensor(3 * period)))
        errors.append(phase_metrics(traj.mass, traj.position, traj.velocity, traj.time)["error_one_period"])
    assert np.all((errors[0] / errors[1] > 3.5) & (errors[0] / errors[1] < 4.5))
