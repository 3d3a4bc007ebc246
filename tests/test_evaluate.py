"""`nbody-runner evaluate`: the learned policy against the analytic and classic criteria, for real."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import matplotlib.image as mpimg
import pytest

from nbody_engine.config import load_configs
from nbody_engine.train import run_training

TINY_TRAIN = {"num_particles": 2, "num_orbits": 2, "epochs": 2, "n_steps": 3, "steps_per_epoch": 2,
              "replay_steps": 3, "hidden_dims": [8, 8], "seed": 3, "lr": 1e-3}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cfg = load_configs("train", cli={**TINY_TRAIN, "save_name": "tiny"})["train"]
    result = run_training(cfg, data_dir=root / "data")
    return root, result["checkpoint"]


def runner(cwd, *args):
    return subprocess.run([sys.executable, "-m", "nbody_engine.runner", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_evaluate_writes_table_and_pareto_plot(checkpoint):
    root, ckpt = checkpoint
    done = runner(root, "evaluate", "--model-path", ckpt, "--eval-e", "0.5", "0.8", "--eval-eps", "0.05", "0.2",
                  "--Nperiod", "1", "-s", "ev")
    assert done.returncode == 0, done.stderr
    assert "steps/period" in done.stdout
    with open(root / "data/ev/eval/table.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 5  # two systems: the learned policy, two baselines at two eps each
    assert {r["policy"] for r in rows} == {"learned", "analytic", "classic"}
    for baseline in ("analytic", "classic"):
        curve = {(float(r["e"]), float(r["eps"])): r for r in rows if r["policy"] == baseline}
        for e in (0.5, 0.8):
            coarse, fine = curve[(e, 0.2)], curve[(e, 0.05)]
            # a smaller eps takes more steps per period and makes a smaller energy error (leapfrog order 2)
            assert float(fine["steps_per_period"]) > 3 * float(coarse["steps_per_period"])
            assert float(fine["max_rel_dE"]) < float(coarse["max_rel_dE"])
    table = json.loads((root / "data/ev/eval/table.json").read_text())
    assert table["model_path"] == ckpt and len(table["rows"]) == 10
    verdicts = table["learned_versus_baselines"]
    assert sorted((v["e"], v["baseline"]) for v in verdicts) == [
        (0.5, "analytic"), (0.5, "classic"), (0.8, "analytic"), (0.8, "classic")]
    assert done.stdout.count("learned max|dE/E|") + done.stdout.count("outside the") == 4
    assert mpimg.imread(root / "data/ev/eval/pareto.png").ndim == 3


def test_evaluate_with_the_training_config_takes_the_checkpoint_that_training_wrote(checkpoint):
    """Like ``both``: without model_path, the last checkpoint of the named run's training."""
    root, ckpt = checkpoint
    (root / "run.toml").write_text('save_name = "tiny"\n[train]\nepochs = 2\n')
    done = runner(root, "evaluate", "--config", "run.toml", "--eval-e", "0.5", "--eval-eps", "0.1", "0.2",
                  "--Nperiod", "1")
    assert done.returncode == 0, done.stderr
    table = json.loads((root / "data/tiny/eval/table.json").read_text())
    assert (root / table["model_path"]).samefile(ckpt)


@pytest.mark.parametrize("args, needle", [
    ((), "model_path"),
    (("-s", "untrained"), "data/untrained/model/model_epoch_0999.pt"),
    (("--model-path", "MISSING.pt"), "MISSING.pt"),
    (("--model-path", "CKPT", "--eval-e", "1.5"), "eval_e"),
    (("--model-path", "CKPT", "--eval-eps", "0.1", "0"), "eval_eps"),
])
def test_evaluate_bad_input_is_one_line_and_exit_2(checkpoint, args, needle):
    root, ckpt = checkpoint
    runs_before = set((root / "data").iterdir())
    done = runner(root, "evaluate", *(ckpt if a == "CKPT" else a for a in args))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert set((root / "data").iterdir()) == runs_before


def test_time_symmetric_adds_the_symmetrized_analytic_baseline_whose_energy_error_does_not_drift(checkpoint):
    """Over 30 periods of an e = 0.7 orbit the plain adaptive step's energy error drifts; the
    time-symmetrized one stays bounded, so at each eps it ends with a smaller error. The
    simulate phase's learned mode does not matter to evaluate, nor forbid the baseline."""
    root, ckpt = checkpoint
    done = runner(root, "evaluate", "--model-path", ckpt, "--eval-e", "0.7", "--eval-eps", "0.1", "0.2",
                  "--Nperiod", "30", "--time-symmetric", "--integrator-mode", "ml", "-s", "sym")
    assert done.returncode == 0, done.stderr
    table = json.loads((root / "data/sym/eval/table.json").read_text())
    rows = {(r["policy"], r["eps"]): r for r in table["rows"]}
    assert {policy for policy, _ in rows} == {"learned", "analytic", "classic", "analytic-symmetric"}
    for eps in (0.1, 0.2):
        plain, symmetric = rows[("analytic", eps)], rows[("analytic-symmetric", eps)]
        assert symmetric["final_rel_dE"] < 0.5 * plain["final_rel_dE"]
    assert sorted(v["baseline"] for v in table["learned_versus_baselines"]) == [
        "analytic", "analytic-symmetric", "classic"]
    assert "analytic-symmetric" in done.stdout


def test_learned_versus_a_baseline_interpolates_log_log_at_equal_steps():
    from nbody_engine.evaluate import learned_versus

    def row(policy, steps, err, eps=None):
        return {"policy": policy, "system": 0, "e": 0.5, "eps": eps, "steps_per_period": steps, "max_rel_dE": err}

    curve = [row("classic", 100.0, 1e-3, 0.1), row("classic", 200.0, 2.5e-4, 0.05)]  # error ~ steps^-2
    v = learned_versus([row("learned", 100 * math.sqrt(2), 4e-4), *curve], 0, "classic")
    assert v["baseline"] == "classic"
    assert v["baseline_max_rel_dE_at_same_steps"] == pytest.approx(5e-4, rel=1e-12)
    assert v["ratio"] == pytest.approx(0.8, rel=1e-12)
    outside = learned_versus([row("learned", 400.0, 1e-5), *curve], 0, "classic")
    assert outside["ratio"] is None
