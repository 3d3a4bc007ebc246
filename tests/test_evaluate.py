"""`nbody-runner evaluate`: the learned policy against the baselines on the problem suite, for real."""

from __future__ import annotations

import csv
import json
import math

import matplotlib.image as mpimg
import pytest

from helpers import TINY, run_cli
from nbody_engine.config.loading import load_configs
from nbody_engine.jobs.train import run_training



@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    """The session's tiny checkpoint and the folder whose data/tiny/ holds its training run."""
    return tiny_checkpoint.parents[3], str(tiny_checkpoint)


def runner(cwd, *args):
    """The real CLI; an evaluate's long runs last 20 periods unless asked (1000 by default), and
    it takes the hand-picked systems unless asked for a family (16 each by default)."""
    if args[0] == "evaluate" and "--eval-long-periods" not in args:
        args = (*args, "--eval-long-periods", "20")
    if args[0] == "evaluate" and "--eval-systems" not in args:
        args = (*args, "--eval-systems", "0")
    return run_cli(cwd, *args, timeout=1800)


BASELINE_NAMES = ("fixed", "classic", "analytic", "analytic-symmetric", "analytic-hmm", "analytic-midpoint", "ttl")


@pytest.mark.slow
def test_evaluate_writes_table_and_pareto_plot(checkpoint):
    root, ckpt = checkpoint
    done = runner(root, "evaluate", "--model-path", ckpt, "--eval-suite", "kepler", "--eval-e", "0.5", "0.8",
                  "--eval-eps", "0.05", "0.2", "--Nperiod", "1", "-s", "ev")
    assert done.returncode == 0, done.stderr
    assert "reference for kepler: IAS15 (REBOUND" in done.stdout and "force evals" in done.stdout
    with open(root / "data/ev/eval/table.csv") as fh:
        all_rows = list(csv.DictReader(fh))
    # a sweep extended to bracket the learned point's cost adds rows at other eps
    rows = [r for r in all_rows if r["eps"] in ("", "0.05", "0.2")]
    # two systems: IAS15 and the learned policy once each, seven baselines and WHFast at two eps each
    assert len(rows) == 2 * (2 + 8 * 2)
    assert {r["policy"] for r in rows} == {"IAS15", "learned", "WHFast", *BASELINE_NAMES}
    learned = [r for r in rows if r["policy"] == "learned"]
    assert all(0 <= float(r[key]) < 1 for r in learned for key in ("final_rel_dE", "max_rel_dL", "final_rel_dL"))
    for baseline in BASELINE_NAMES:
        curve = {(r["label"], float(r["eps"])): r for r in rows if r["policy"] == baseline}
        for label in ("e=0.50", "e=0.80"):
            coarse, fine = curve[(label, 0.2)], curve[(label, 0.05)]
            # a smaller eps takes more steps (the iterated step fewer iterates each) and makes smaller errors
            assert int(fine["steps"]) > 3 * int(coarse["steps"])
            assert int(fine["force_evals"]) > 2 * int(coarse["force_evals"])
            assert float(fine["position_error"]) < float(coarse["position_error"])
            if baseline == "ttl":  # log-H: the Kepler orbit is exact, its energy error round-off at any eps
                assert float(fine["max_rel_dE"]) < 1e-12 and float(coarse["max_rel_dE"]) < 1e-12
            else:
                assert float(fine["max_rel_dE"]) < float(coarse["max_rel_dE"])
    hmm = [r for r in rows if r["policy"] == "analytic-hmm"]
    assert all(int(r["force_evals"]) > 2 * int(r["steps"]) for r in hmm)  # a trial step per iterate
    whfast = [r for r in rows if r["policy"] == "WHFast"]
    assert all(float(r["max_rel_dE"]) < 1e-12 for r in whfast)  # a lone binary is WHFast's exact Kepler drift
    symmetric = [r for r in rows if r["policy"] == "analytic-symmetric"]
    assert all(int(r["force_evals"]) == 2 * int(r["steps"]) for r in symmetric)  # two force evaluations a step
    ias = [r for r in rows if r["policy"] == "IAS15"]
    assert all(float(r["max_rel_dE"]) < 1e-12 and int(r["force_evals"]) > 0 for r in ias)
    table = json.loads((root / "data/ev/eval/table.json").read_text())
    assert table["model_path"] == ckpt and len(table["rows"]) == len(all_rows)
    assert table["references"]["kepler"].startswith("IAS15")
    verdicts = table["learned_versus_baselines"]
    assert sorted((v["label"], v["baseline"]) for v in verdicts) == sorted(
        (label, b) for label in ("e=0.50", "e=0.80") for b in (*BASELINE_NAMES, "WHFast"))
    statistics = table["ratio_statistics"]
    assert sorted((e["family"], e["baseline"]) for e in statistics) == sorted({(v["family"], v["baseline"])
                                                                               for v in verdicts})
    for entry in statistics:
        mine = sorted(v["ratio"] for v in verdicts if (v["family"], v["baseline"]) == (entry["family"],
                                                                                      entry["baseline"])
                      and v["ratio"] is not None)
        if mine:
            assert entry["ratio"]["min"] == mine[0] and entry["ratio"]["max"] == mine[-1]
            assert entry["ratio"]["median"] == pytest.approx(math.sqrt(mine[0] * mine[-1]) if len(mine) == 2
                                                             else mine[len(mine) // 2])
        assert f"kepler (family {entry['family']}), learned vs {entry['baseline']}: median [range]" in done.stdout
    assert "kepler: learned on or below the baseline" in done.stdout or "outside every baseline" in done.stdout
    assert mpimg.imread(root / "data/ev/eval/pareto.png").ndim == 3


@pytest.mark.slow
def test_forced_fallback_reference_is_named_and_agrees_with_ias15(checkpoint):
    """eval_reference = "leapfrog": our converged run (time-symmetric, eps / 16) is the reference,
    the output says so, and the errors measured against it are those against IAS15 wherever they
    are well above the fallback's own."""
    root, ckpt = checkpoint
    tables = {}
    for choice in ("ias15", "leapfrog"):
        done = runner(root, "evaluate", "--model-path", ckpt, "--eval-suite", "kepler", "--eval-e", "0.6",
                      "--eval-eps", "0.1", "--Nperiod", "2", "--eval-reference", choice, "-s", f"ref-{choice}")
        assert done.returncode == 0, done.stderr
        tables[choice] = json.loads((root / f"data/ref-{choice}/eval/table.json").read_text())
    assert "converged leapfrog" in tables["leapfrog"]["references"]["kepler"]
    assert "IAS15" not in {r["policy"] for r in tables["leapfrog"]["rows"]}
    against = {choice: {r["policy"]: r["position_error"] for r in t["rows"] if r["policy"] != "IAS15"}
               for choice, t in tables.items()}
    # well above the fallback's own error (~3e-5 here): the TTL and WHFast come closer than that
    compared = {policy: error for policy, error in against["ias15"].items() if error > 3e-3}
    assert len(compared) >= 5
    for policy, error in compared.items():
        assert against["leapfrog"][policy] == pytest.approx(error, rel=0.05)


@pytest.mark.slow
def test_evaluate_with_the_training_config_takes_the_checkpoint_that_training_wrote(checkpoint):
    """Like ``both``: without model_path, the last checkpoint of the named run's training."""
    root, ckpt = checkpoint
    (root / "run.toml").write_text('save_name = "tiny"\n[train]\nepochs = 2\n')
    done = runner(root, "evaluate", "--config", "run.toml", "--eval-e", "0.5", "--eval-eps", "0.1", "0.2",
                  "--Nperiod", "1")
    assert done.returncode == 0, done.stderr
    table = json.loads((root / "data/tiny/eval/table.json").read_text())
    assert (root / table["model_path"]).samefile(ckpt)
    # the whole suite by default: every problem has rows of every policy, a reference and a summary line
    problems = ("kepler", "triples", "scattering", "burrau", "cluster")
    assert list(table["references"]) == list(problems)
    for problem in problems:
        policies = {r["policy"] for r in table["rows"] if r["problem"] == problem}
        assert policies == {"IAS15", "learned", *BASELINE_NAMES} | ({"WHFast"} if problem == "kepler" else set())
        assert f"\n{problem}: learned " in done.stdout


@pytest.mark.slow
def test_several_checkpoints_on_a_seeded_family_give_each_ratio_per_checkpoint_and_over_all(checkpoint, tmp_path):
    """eval_model_paths: a second checkpoint (another seed) is measured on every system of a
    drawn Kepler family beside the first, with long runs of its own; each ratio's median and range
    spans both, and each checkpoint's median is reported."""
    root, ckpt = checkpoint
    other = run_training(load_configs("train", cli={**TINY, "seed": 11, "save_name": "seed11"})["train"],
                         data_dir=tmp_path / "data")["checkpoint"]
    done = runner(root, "evaluate", "--model-path", ckpt, "--eval-model-paths", other, "--eval-suite", "kepler",
                  "--eval-systems", "4", "--eval-eps", "0.1", "0.2", "--Nperiod", "1", "--eval-long-periods", "5",
                  "-s", "two-checkpoints")
    assert done.returncode == 0, done.stderr
    table = json.loads((root / "data/two-checkpoints/eval/table.json").read_text())
    assert table["checkpoints"] == [ckpt, other] and table["model_path"] == ckpt
    learned = [r for r in table["rows"] if r["policy"] == "learned"]
    assert sorted((r["checkpoint"], r["system"]) for r in learned) == [(k, b) for k in (0, 1) for b in range(4)]
    assert all(math.isfinite(r["long_first_dE"]) and r["long_periods"] == 5 for r in learned)
    for k in (0, 1):  # the checkpoints differ, so do their runs
        assert len({r["steps"] for r in learned if r["checkpoint"] == k} - {r["steps"] for r in learned
                                                                            if r["checkpoint"] != k}) > 0
    for entry in table["ratio_statistics"]:
        assert entry["points"] == 2 * sum(1 for r in learned if r["checkpoint"] == 0 and r["family"] == entry["family"])
        assert len(entry["ratio"]["by_checkpoint"]) == 2
    assert "kepler (family out), learned vs analytic: median [range]" in done.stdout
    assert "per checkpoint, max|dE/E| median" in done.stdout
    with open(root / "data/two-checkpoints/eval/table.csv") as fh:
        assert {r["checkpoint"] for r in csv.DictReader(fh) if r["policy"] == "learned"} == {"0", "1"}


@pytest.mark.parametrize("args, needle", [
    ((), "model_path"),
    (("-s", "untrained"), "data/untrained/model/model_epoch_0999.pt"),
    (("--model-path", "MISSING.pt"), "MISSING.pt"),
    (("--model-path", "CKPT", "--eval-model-paths", "CKPT", "GONE.pt"), "GONE.pt"),
    (("--model-path", "CKPT", "--eval-e", "1.5"), "eval_e"),
    (("--model-path", "CKPT", "--eval-eps", "0.1", "0"), "eval_eps"),
    (("--model-path", "CKPT", "--eval-suite", "galaxy"), "eval-suite"),
])
@pytest.mark.slow
def test_evaluate_bad_input_is_one_line_and_exit_2(checkpoint, args, needle):
    root, ckpt = checkpoint
    runs_before = set((root / "data").iterdir())
    done = runner(root, "evaluate", *(ckpt if a == "CKPT" else a for a in args))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert set((root / "data").iterdir()) == runs_before


@pytest.mark.slow
def test_symmetrized_analytic_baseline_energy_error_does_not_drift(checkpoint):
    """Over 30 periods of an e = 0.7 orbit the plain adaptive step's energy error drifts; the
    time-symmetrized one stays bounded, so at each eps it ends with a smaller error."""
    root, ckpt = checkpoint
    done = runner(root, "evaluate", "--model-path", ckpt, "--eval-suite", "kepler", "--eval-e", "0.7",
                  "--eval-eps", "0.1", "0.2", "--Nperiod", "30", "-s", "sym")
    assert done.returncode == 0, done.stderr
    table = json.loads((root / "data/sym/eval/table.json").read_text())
    rows = {(r["policy"], r["eps"]): r for r in table["rows"]}
    for eps in (0.1, 0.2):
        plain, symmetric = rows[("analytic", eps)], rows[("analytic-symmetric", eps)]
        assert symmetric["final_rel_dE"] < 0.5 * plain["final_rel_dE"]


def test_learned_versus_a_baseline_interpolates_log_log_at_equal_steps():
    from nbody_engine.evaluate import learned_versus

    def row(policy, evals, err, eps=None):
        return {"problem": "kepler", "policy": policy, "system": 0, "label": "e=0.50", "eps": eps,
                "force_evals": evals, "max_rel_dE": err, "position_error": 10 * err, "wall_time_s": evals * 1e-5}

    curve = [row("classic", 100.0, 1e-3, 0.1), row("classic", 200.0, 2.5e-4, 0.05)]  # error ~ evals^-2
    [v] = learned_versus([row("learned", 100 * math.sqrt(2), 4e-4), *curve], "kepler", 0, "classic")
    assert v["baseline"] == "classic"
    assert v["baseline_max_rel_dE_at_same_evals"] == pytest.approx(5e-4, rel=1e-12)
    assert v["ratio"] == pytest.approx(0.8, rel=1e-12)
    assert v["position_ratio"] == pytest.approx(0.8, rel=1e-12)
    [outside] = learned_versus([row("learned", 400.0, 1e-5), *curve], "kepler", 0, "classic")
    assert outside["ratio"] is None


@pytest.mark.slow
def test_a_rollout_checkpoint_is_evaluated_over_the_eps_sweep_like_a_baseline(tmp_path):
    """A network trained by the rollout objective takes the accuracy asked for: evaluate runs it
    at every eps, a curve beside the baselines', each point with its verdicts."""
    rollout = {**TINY, "objective": "rollout", "feature_type": "radial", "history_len": 0, "epochs": 1,
               "steps_per_epoch": 1, "rollout_periods": 1, "rollout_eta": [0.1, 0.2], "save_name": "ro"}
    cfg = load_configs("train", cli=rollout)["train"]
    ckpt = run_training(cfg, data_dir=tmp_path / "data")["checkpoint"]
    done = runner(tmp_path, "evaluate", "--model-path", ckpt, "--eval-suite", "kepler", "--eval-e", "0.7",
                  "--eval-eps", "0.05", "0.2", "--Nperiod", "2", "-s", "ro")
    assert done.returncode == 0, done.stderr
    table = json.loads((tmp_path / "data/ro/eval/table.json").read_text())
    learned = sorted((r["eps"], r["force_evals"]) for r in table["rows"] if r["policy"] == "learned")
    assert [eps for eps, _ in learned] == [0.05, 0.2] and learned[0][1] > 3 * learned[1][1]
    assert sorted({v["learned_eps"] for v in table["learned_versus_baselines"]}) == [0.05, 0.2]


@pytest.mark.slow
def test_the_drift_corrected_step_cancels_most_of_the_secular_drift_at_high_eccentricity():
    """The analytic step taken at its midpoint: at nearly the same steps per period it ends 10
    periods of an e = 0.9 orbit with a smaller max |dE/E| than the plain analytic step."""
    from nbody_engine.integrators.loop import StopRule, period_of, simulate
    from nbody_engine.integrators.policies import AnalyticDt, DriftCorrectedDt
    from nbody_engine.physics.gravity import Gravity
    from nbody_engine.physics.initial_conditions import kepler_orbit

    orbit = kepler_orbit(0.9, 1.0)
    stop = StopRule(t_end=10 * period_of(orbit.mass, orbit.position, orbit.velocity))
    runs = {name: simulate(orbit, policy, Gravity(), stop) for name, policy in
            (("plain", AnalyticDt(0.05)), ("midpoint", DriftCorrectedDt(0.05)))}
    errors = {name: abs(t.energy[:, 0] / t.energy[0, 0] - 1).max() for name, t in runs.items()}
    assert abs(runs["midpoint"].steps[0] / runs["plain"].steps[0] - 1) < 0.02
    assert errors["midpoint"] < 0.8 * errors["plain"]


def test_ratio_statistics_give_median_and_range_per_baseline_and_training_family():
    from nbody_engine.evaluate.verdicts import ratio_statistics, statistics_line

    def verdict(ratio, family, baseline="analytic", outside=None):
        return {"problem": "kepler", "baseline": baseline, "family": family, "ratio": ratio, "position_ratio": 1.0,
                "wall_ratio": None, "outside": outside}

    verdicts = [verdict(1.0, "in") | {"wall_outside": "more"}, verdict(4.0, "in"), verdict(2.0, "in"),
                verdict(0.5, "out"), verdict(8.0, "out"),
                verdict(None, "out", outside="more"), verdict(3.0, "in", baseline="ttl")]
    by_key = {(e["baseline"], e["family"]): e for e in ratio_statistics(verdicts)}
    assert set(by_key) == {("analytic", "in"), ("analytic", "out"), ("ttl", "in")}
    inside, outside = by_key[("analytic", "in")], by_key[("analytic", "out")]
    assert inside["ratio"] == {"median": 2.0, "min": 1.0, "max": 4.0, "compared": 3, "by_checkpoint": [2.0]}
    assert inside["points"] == 3 and inside["slower"] == 1
    assert statistics_line(inside).endswith("; learned takes longer than every run of analytic in 1 of 3")
    assert outside["ratio"] == {"median": pytest.approx(2.0), "min": 0.5, "max": 8.0, "compared": 2,  # sqrt(0.5 * 8)
                                "by_checkpoint": [pytest.approx(2.0)]}
    assert outside["points"] == 3 and outside["outside"] == {"more": 1, "less": 0}
    assert outside["wall_ratio"] == {"median": None, "min": None, "max": None, "compared": 0, "by_checkpoint": [None]}
    retrained = [v | {"checkpoint": 0} for v in verdicts[:3]] + [v | {"checkpoint": 1} for v in verdicts[:2]]
    [both] = ratio_statistics(retrained)
    assert both["ratio"]["by_checkpoint"] == [2.0, 2.0] and both["ratio"]["median"] == 2.0 and both["points"] == 5
    assert "per checkpoint, max|dE/E| median 2 / 2" in statistics_line(both)
    line = statistics_line(outside)
    assert line.startswith("kepler (family out), learned vs analytic: median [range] of max|dE/E| at equal force "
                           "evals 2 [0.5, 8] of 2;")
    assert line.endswith("; learned costs more than every point of analytic in 1 of 3 (no comparison at equal force "
                         "evaluations)")


def test_the_pareto_plot_draws_ias15_beside_the_curves(monkeypatch, tmp_path):
    """IAS15, the adaptive reference, is one open hexagon per system in both panels' data and
    named in the legend; a baseline is a curve over its knob."""
    from nbody_engine.evaluate import report

    drawn = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, path: drawn.setdefault("fig", fig))

    def row(policy, evals, dE, system=0):
        return {"problem": "kepler", "system": system, "label": f"e={system}", "policy": policy,
                "evals_per_period": evals, "force_evals": evals, "max_rel_dE": dE, "position_error": dE}

    rows = [row("IAS15", 300.0, 1e-15), row("analytic", 50.0, 1e-4), row("analytic", 100.0, 1e-6),
            row("learned", 80.0, 1e-5), row("IAS15", 320.0, 2e-15, system=1)]
    report.pareto_plot(rows, tmp_path / "pareto.png")
    fig = drawn["fig"]
    hexagons = [line for line in fig.axes[0].get_lines() if line.get_marker() == "h"]
    assert [tuple(line.get_xdata()) for line in hexagons] == [(300.0,), (320.0,)]
    assert "IAS15" in [t.get_text() for t in fig.legends[0].get_texts()]


@pytest.mark.slow
def test_evaluate_runs_the_opt_in_unequal_mass_problem_labelled_out_of_an_equal_mass_family(checkpoint):
    root, ckpt = checkpoint
    done = runner(root, "evaluate", "--model-path", ckpt, "--eval-suite", "unequal", "--eval-eps", "0.1", "0.2",
                  "--Nperiod", "1", "-s", "unequal")
    assert done.returncode == 0, done.stderr
    table = json.loads((root / "data/unequal/eval/table.json").read_text())
    assert list(table["references"]) == ["unequal"]
    rows = [r for r in table["rows"] if r["problem"] == "unequal"]
    assert {r["policy"] for r in rows} == {"IAS15", "learned", "WHFast", *BASELINE_NAMES}
    assert {r["label"].split()[0] for r in rows} == {"q=0.1", "q=0.01"}
    assert {r["family"] for r in rows} == {"out"}  # the tiny checkpoint trained on equal masses
    assert all(float(r["max_rel_dE"]) < 1e-10 for r in rows if r["policy"] == "IAS15")
    assert "\nunequal: learned " in done.stdout
