"""`nbody-runner evaluate`: the learned policy against the analytic one, for real."""

from __future__ import annotations

import csv
import json
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
    assert len(rows) == 2 * 3  # two systems, the learned policy and two analytic eps
    assert {r["policy"] for r in rows} == {"learned", "analytic"}
    analytic = {(float(r["e"]), float(r["eps"])): r for r in rows if r["policy"] == "analytic"}
    for e in (0.5, 0.8):
        coarse, fine = analytic[(e, 0.2)], analytic[(e, 0.05)]
        # a smaller eps takes more steps per period and makes a smaller energy error (leapfrog order 2)
        assert float(fine["steps_per_period"]) > 3 * float(coarse["steps_per_period"])
        assert float(fine["max_rel_dE"]) < float(coarse["max_rel_dE"])
    table = json.loads((root / "data/ev/eval/table.json").read_text())
    assert table["model_path"] == ckpt and len(table["rows"]) == 6
    assert mpimg.imread(root / "data/ev/eval/pareto.png").ndim == 3


@pytest.mark.parametrize("args, needle", [
    ((), "model_path"),
    (("--model-path", "MISSING.pt"), "MISSING.pt"),
    (("--model-path", "CKPT", "--eval-e", "1.5"), "eval_e"),
])
def test_evaluate_bad_input_is_one_line_and_exit_2(checkpoint, args, needle):
    root, ckpt = checkpoint
    done = runner(root, "evaluate", "-s", "bad", *(ckpt if a == "CKPT" else a for a in args))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert not (root / "data/bad").exists()
