"""The real CLI in a subprocess, started in a scratch directory (outputs go to ./data there)."""

from __future__ import annotations

import json
import math
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli, run_in_process


def ok(cwd: Path, *args: str) -> dict:
    """Run, require success, return the summary JSON printed on stdout."""
    result = run_cli(cwd, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def all_finite(value) -> bool:
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


ENERGY_FIELDS = ("energy_initial", "energy_final", "energy_residual", "max_rel_energy_error")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """One 3-body analytic run shared by the tests that only read its outputs."""
    cwd = tmp_path_factory.mktemp("s3")
    result = run_cli(cwd, "simulate", "--num-particles", "3", "--steps", "200", "-s", "s3")
    return cwd, result


@pytest.mark.slow
def test_simulate_prints_summary(s3):
    _, result = s3
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 200
    assert summary["num_systems"] == 1
    for key in ENERGY_FIELDS + ("momentum_initial", "angular_momentum_initial", "time_final"):
        assert all_finite(summary[key]), (key, summary[key])
    assert summary["time_final"] > 0
    assert "outputs" not in summary


@pytest.mark.slow
def test_time_symmetric_flag_bounds_the_energy_drift(tmp_path):
    """The same 2-body run (~150 periods) with and without --time-symmetric."""
    common = ("simulate", "--num-particles", "2", "--steps", "15000", "--Nperiod", "0", "--seed", "0")
    plain = ok(tmp_path, *common, "-s", "plain")
    symmetric = ok(tmp_path, *common, "-s", "sym", "--time-symmetric")
    assert symmetric["max_rel_energy_error"] < plain["max_rel_energy_error"] / 10
    assert "time_symmetric = true" in (tmp_path / "data" / "sym" / "config.toml").read_text()


@pytest.mark.slow
def test_simulate_writes_run_directory(s3):
    cwd, result = s3
    run = cwd / "data" / "s3"
    out = run / "sim" / "analytic"
    assert (run / "config.toml").is_file()
    assert json.loads((out / "summary.json").read_text()) == json.loads(result.stdout)
    with np.load(out / "trajectory.npz") as npz:
        arrays = dict(npz)
    rows = 201  # the initial state and 200 steps
    assert arrays["time"].shape == (rows, 1)
    assert arrays["dt"].shape == (rows, 1)
    assert arrays["position"].shape == (rows, 1, 3, 2)
    assert arrays["velocity"].shape == (rows, 1, 3, 2)
    assert arrays["energy"].shape == (rows, 1)
    assert arrays["momentum"].shape == (rows, 1, 2)
    assert arrays["angular_momentum"].shape == (rows, 1)
    assert arrays["mass"].shape == (1, 3)
    assert np.isfinite(arrays["energy"]).all()
    assert arrays["time"][0, 0] == 0 and np.all(np.diff(arrays["time"][:, 0]) > 0)
    assert np.isclose(arrays["time"][-1, 0], json.loads(result.stdout)["time_final"])
    assert arrays["energy"][0, 0] == json.loads(result.stdout)["energy_initial"]


@pytest.mark.slow
def test_recorded_config_reproduces_the_run(s3, tmp_path):
    cwd, result = s3
    first = json.loads(result.stdout)
    config = tomllib.loads((cwd / "data" / "s3" / "config.toml").read_text())
    assert isinstance(config["seed"], int)  # the drawn seed is recorded
    assert (config["num_particles"], config["steps"], config["save_name"]) == (3, 200, "s3")
    shutil.copy(cwd / "data" / "s3" / "config.toml", tmp_path / "recorded.toml")
    (tmp_path / "data").mkdir()
    again = ok(tmp_path, "simulate", "--config", "recorded.toml")
    first.pop("wall_time_s")
    again.pop("wall_time_s")
    assert again == first


@pytest.mark.slow
def test_multi_orbit(tmp_path):
    summary = ok(tmp_path, "simulate", "--multi-orbit-sim", "--num-orbits", "4", "--Nperiod", "2", "-s", "m")
    assert summary["num_systems"] == 4
    for key in ("steps", "time_final", "period") + ENERGY_FIELDS:
        assert isinstance(summary[key], list) and len(summary[key]) == 4, key
        assert all_finite(summary[key]), key
    assert np.allclose(summary["time_final"], 2 * np.asarray(summary["period"]), rtol=1e-9)  # Nperiod = 2
    out = next((tmp_path / "data" / "m" / "sim").iterdir())
    with np.load(out / "trajectory.npz") as npz:
        assert npz["position"].shape == (max(summary["steps"]) + 1, 4, 2, 2)


@pytest.mark.slow
def test_record_every_thins_the_trajectory_but_not_the_run(tmp_path):
    summary = ok(tmp_path, "simulate", "--steps", "205", "--record-every", "10", "-s", "strided")
    assert summary["steps"] == 205
    with np.load(tmp_path / "data" / "strided" / "sim" / "analytic" / "trajectory.npz") as npz:
        assert npz["time"].shape[0] == 22  # rows 0, 10, ..., 200 and the last step
        assert npz["time"][-1, 0] == pytest.approx(summary["time_final"])


@pytest.mark.slow
def test_external_field(tmp_path):
    base = ["simulate", "--num-particles", "3", "--steps", "100", "--seed", "5"]
    field = ok(tmp_path, *base, "--external-field-mass", "1.0", "--external-field-position", "2", "0", "0",
               "-s", "ef")
    free = ok(tmp_path, *base, "-s", "free")
    for summary in (field, free):
        assert summary["steps"] == 100
        for key in ENERGY_FIELDS:
            assert all_finite(summary[key]), key
    with np.load(tmp_path / "data" / "ef" / "sim" / "analytic" / "trajectory.npz") as npz:
        x0, mass = npz["position"][0, 0], npz["mass"][0]
        assert np.isfinite(npz["energy"]).all()
    # Same seed, same bodies: the energies differ by the field's potential, -M sum m_i / |x_i - R|.
    field_potential = -(1.0 * mass / np.linalg.norm(x0 - np.array([2.0, 0.0]), axis=-1)).sum()
    assert np.isclose(field["energy_initial"] - free["energy_initial"], field_potential, rtol=1e-9)
    recorded = tomllib.loads((tmp_path / "data" / "ef" / "config.toml").read_text())
    assert recorded["external_field_mass"] == 1.0 and recorded["external_field_position"] == [2, 0, 0]


@pytest.mark.slow
def test_cli_overrides_config_file(tmp_path):
    (tmp_path / "run.toml").write_text(
        'save_name = "ov"\nnum_particles = 3\nseed = 4\nsteps = 20\n\n[simulate]\nsteps = 30\n')
    summary = ok(tmp_path, "simulate", "--config", "run.toml", "--steps", "50")
    assert summary["steps"] == 50
    recorded = tomllib.loads((tmp_path / "data" / "ov" / "config.toml").read_text())
    assert (recorded["steps"], recorded["num_particles"], recorded["seed"]) == (50, 3, 4)
    # [simulate] over top level (a second simulation into that folder replaces the first only when asked)
    assert ok(tmp_path, "simulate", "--config", "run.toml", "--overwrite")["steps"] == 30


BAD_FILES = {
    "unknown.toml": "[train]\nenergy_treshold = 1e-4\n",
    "malformed.toml": "steps = \n",
    "wrongtype.toml": 'steps = "many"\n',
    "bounds.toml": "[simulate]\ne_max = 1.0\n",
    "section.toml": "[trian]\nepochs = 3\n",
    "bad.txt": "1 0 0 0 0\n",  # one body: not an N-body system
    "cols.txt": "1 0 0 0\n1 1 0 0\n",  # 4 columns: neither 2-D nor 3-D
}


BAD_INPUT = [
    (["simulate", "--config", "unknown.toml"], ["'energy_treshold'", "[train]", "unknown.toml",
                                                "did you mean 'energy_threshold'"]),
    (["simulate", "--config", "malformed.toml"], ["malformed.toml"]),
    (["simulate", "--config", "missing.toml"], ["missing.toml"]),
    (["simulate", "--config", "wrongtype.toml"], ["'steps'", "wrongtype.toml"]),
    (["simulate", "--dim", "5"], ["--dim", "'dim'"]),
    (["train", "--epochs", "1.5"], ["--epochs", "'epochs'"]),
    (["simulate", "-s", "../escape"], ["'save_name'", "../escape"]),
    (["simulate", "--ic-path", "bad.txt"], ["bad.txt"]),
    (["simulate", "--ic-path", "missing.txt"], ["missing.txt"]),
    (["simulate", "--bogus"], ["--bogus"]),
]

# The same contract for more inputs, checked in process (runner.main) to keep the suite fast.
MORE_BAD_INPUT = [
    (["simulate", "--config", "bounds.toml"], ["'e_max'", "bounds.toml"]),
    (["train", "--config", "section.toml"], ["[trian]"]),
    (["simulate", "--steps", "many"], ["--steps"]),
    (["both", "-n", "1.5"], ["'epochs'"]),
    (["simulate", "--E_lower", "1e-3", "--E_upper", "1e-4"], ["'E_lower'", "'E_upper'"]),
    (["simulate", "--ic-path", "cols.txt"], ["cols.txt"]),
    (["simulate", "--ic-path", "bad.csv"], ["bad.csv"]),
    (["simulate", "--feature-type", "fancy"], ["--feature-type", "fancy"]),
    (["both", "--ic-path", "bad.txt"], ["--ic-path"]),  # both takes --train-ic-path / --sim-ic-path
    (["simulate", "--external-field-mass", "1.0"], ["external_field_position"]),
    (["simulate", "--external-field-position", "1", "2"], ["--external-field-position"]),
    (["simulate", "--integrator-mode", "ml", "--time-symmetric"], ["'time_symmetric'", "'ml'"]),
    # refused before training, which would otherwise run in full first
    (["both", "--multi-orbit-sim", "--num-particles", "3"], ["'multi_orbit_sim'", "num_particles = 2"]),
    (["explore"], ["explore"]),
    ([], ["MODE"]),
]


def _ids(case):
    return " ".join(case[0]) or "no-mode"


def _check_bad_input(cwd: Path, code: int, stdout: str, stderr: str, expected: list[str]) -> None:
    assert code == 2, (code, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert stdout == ""
    assert not (cwd / "data").exists()


def _write_bad_files(cwd: Path) -> None:
    for name, text in BAD_FILES.items():
        (cwd / name).write_text(text)


@pytest.mark.parametrize(("args", "expected"), BAD_INPUT, ids=[_ids(c) for c in BAD_INPUT])
def test_bad_input(tmp_path, args, expected):
    """The first case through the real command in a subprocess, the others in process (the same
    exit status and stderr without an interpreter and torch for each)."""
    _write_bad_files(tmp_path)
    result = (run_cli if (args, expected) == BAD_INPUT[0] else run_in_process)(tmp_path, *args)
    _check_bad_input(tmp_path, result.returncode, result.stdout, result.stderr, expected)


@pytest.mark.parametrize(("args", "expected"), MORE_BAD_INPUT, ids=[_ids(c) for c in MORE_BAD_INPUT])
def test_more_bad_input_in_process(tmp_path, args, expected):
    _write_bad_files(tmp_path)
    result = run_in_process(tmp_path, *args)
    _check_bad_input(tmp_path, result.returncode, result.stdout, result.stderr, expected)


@pytest.mark.slow
def test_non_finite_run_reports_the_step(tmp_path):
    # two bodies flying apart: the adaptive step grows with their separation, which then grows
    # geometrically, until it overflows some 3,700 steps in (the first step is fine)
    (tmp_path / "unbound.txt").write_text("1 0.5 0 10 0\n1 -0.5 0 -10 0\n")
    result = run_cli(tmp_path, "simulate", "--ic-path", "unbound.txt", "--steps", "10000", "-s", "nf")
    assert result.returncode == 2, result.stderr
    assert any("step" in line and "error" in line for line in result.stderr.splitlines()), result.stderr
    assert "Traceback" not in result.stderr
    sim = tmp_path / "data" / "nf" / "sim"
    assert not sim.exists() or not any(p.is_file() for p in sim.rglob("*"))


@pytest.mark.slow
def test_module_help():
    result = run_cli(Path.cwd(), "--help")
    assert result.returncode == 0, result.stderr
    for mode in ("train", "simulate", "both"):
        assert mode in result.stdout


@pytest.mark.slow
def test_console_script_help(tmp_path):
    script = Path(sys.executable).with_name("nbody-runner")
    exe = str(script) if script.exists() else shutil.which("nbody-runner")
    if exe is None:
        pytest.skip("the nbody-runner console script is not installed next to this Python")
    result = run_cli(tmp_path, "simulate", "--help", exe=[exe])
    assert result.returncode == 0, result.stderr
    for flag in ("--config", "--E_lower", "--Nperiod", "--external-field-position", "--ic-path", "-s"):
        assert flag in result.stdout, flag
    both = run_cli(tmp_path, "both", "--help", exe=[exe])
    assert both.returncode == 0 and "--train-ic-path" in both.stdout and "--sim-ic-path" in both.stdout


@pytest.mark.slow
def test_a_report_survives_errors_beyond_any_log_scale(tmp_path):
    """Bodies all but at rest: |dL/L| against L0 ~ 1e-300 reaches 1e284, beyond what a log axis
    can draw; the report leaves those points out instead of failing the run."""
    result = run_cli(tmp_path, "simulate", "--vel-scale", "1e-300", "--steps", "3", "-s", "still")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data/still/sim/analytic/report.png").stat().st_size > 0
