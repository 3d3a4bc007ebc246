"""Every class of bad input through the CLI: exit status 2, exactly one line on stderr (no
traceback, no warning before it), and nothing written under data/. The first case of each class
runs the real command in a subprocess; the others run ``runner.main`` in this process
(:func:`helpers.run_in_process`), which gives the same status and stderr without starting an
interpreter and torch for each.

The classes are those of an audit of 203 bad inputs: files that are not what they claim
(configs, IC files, checkpoints that load but disagree with themselves), values that are not
finite or far outside what a run can do, initial states no step can start from, and names that
are not portable folder names."""

from __future__ import annotations

import logging
import pickle
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY as TINY_VALUES
from helpers import flags, run_cli, run_in_process
from nbody_engine import runner
from nbody_engine.config.errors import InputError
from nbody_engine.runs.checkpoints import save_checkpoint

TINY = flags({k: v for k, v in TINY_VALUES.items() if k != "epochs"})
SIM = ["--steps", "5", "-s", "bad"]
FROM_FILE = flags({k: v for k, v in TINY_VALUES.items()  # an IC file sets the bodies and orbits
                   if k not in ("epochs", "num_particles", "num_orbits")})


def runner_for(case, cases):
    """The real command in a subprocess for the first case of a class, in process for the rest."""
    return run_cli if case == next(iter(cases)) else run_in_process


@pytest.fixture
def checkpoint(tiny_checkpoint) -> Path:
    """A good checkpoint of a tiny training, outside any scratch directory's data/."""
    return tiny_checkpoint


def altered(checkpoint: Path, tmp: Path, change) -> Path:
    """A copy of ``checkpoint`` with ``change`` applied to its content, saved the engine's way (its
    content hash is right): a file that loads but disagrees with itself."""
    data = torch.load(checkpoint, weights_only=True)
    data.pop("sha256")
    change(data)
    return save_checkpoint(tmp / "altered.pt", {k: v for k, v in data.items() if k != "format"})


def flipped(checkpoint: Path, tmp: Path) -> Path:
    """A byte-for-byte copy with 8 bytes flipped inside the largest tensor's data."""
    raw = bytearray(checkpoint.read_bytes())
    with zipfile.ZipFile(checkpoint) as archive:
        biggest = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    start = biggest.header_offset + 30 + len(biggest.filename.encode()) + len(biggest.extra)
    middle = start + biggest.file_size // 2
    raw[middle: middle + 8] = bytes(b ^ 0xFF for b in raw[middle: middle + 8])
    path = tmp / "flipped.pt"
    path.write_bytes(bytes(raw))
    return path


def set_in(*keys_and_value):
    *keys, value = keys_and_value

    def change(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value(target[keys[-1]]) if callable(value) else value
    return change


def ic_file(tmp: Path, name: str, rows) -> Path:
    path = tmp / name
    np.savetxt(path, np.asarray(rows, dtype=float))
    return path


CHECKPOINT_CASES = {
    "weights vs hidden_dims": set_in("config", "hidden_dims", [32, 32]),
    "wrong tensor shape": set_in("model", "mlp.0.weight", torch.zeros(3, 3)),
    "config not a table": set_in("config", [1, 2]),
    "unknown feature_type": set_in("config", "feature_type", "fancy"),
    "empty train_ic": set_in("train_ic", {}),
    "NaN weights": set_in("model", "mlp.0.weight", lambda w: torch.full_like(w, float("nan"))),
}

# name: (args after the mode, a function of (tmp, checkpoint) giving extra args, modes)
FLAG_CASES = {
    "hidden_dims -5": ["train", *TINY, "--hidden-dims", "-5"],
    "hidden_dims 1e9": ["train", *TINY, "--hidden-dims", "1000000000"],
    "hidden_dims 0": ["train", *TINY, "--hidden-dims", "0"],
    "history_len 1e9": ["train", *TINY, "--history-len", "1000000000"],
    "save_name over 255 bytes": ["simulate", "--steps", "5", "-s", "x" * 300],
    "save_name of whitespace": ["simulate", "--steps", "5", "-s", "   "],
    "save_name with control characters": ["simulate", "--steps", "5", "-s", "a\x07b"],
    "dt inf": ["simulate", *SIM, "--dt", "inf"],
    "dt nan": ["simulate", *SIM, "--dt", "nan"],
    "dt 1e300": ["simulate", *SIM, "--dt", "1e300"],
    "eps inf": ["simulate", *SIM, "--eps", "inf"],
    "mass inf": ["simulate", *SIM, "--mass", "inf"],
    "mass 1e308": ["simulate", *SIM, "--mass", "1e308"],
    "mass 1e308 in training": ["train", *TINY, "--mass", "1e308", "-s", "bad"],
    "softening inf": ["simulate", *SIM, "--softening", "inf"],
    "lr inf": ["train", *TINY, "--lr", "inf"],
    "energy_threshold inf": ["train", *TINY, "--energy-threshold", "inf"],
    "external field position NaN": ["simulate", *SIM, "--external-field-mass", "1", "--external-field-position",
                                    "0", "nan", "0"],
    "steps 1e30": ["simulate", "--steps", "1" + "0" * 30, "-s", "bad"],
    "epochs 1e12": ["train", *TINY, "--epochs", "1000000000000"],
    "duration inf": ["simulate", "--duration", "inf", "-s", "bad"],
    "num_particles 10000": ["simulate", *SIM, "--num-particles", "10000"],
    "memory: pairs of a large training batch": ["train", *TINY, "--num-particles", "2000", "--num-orbits", "1000"],
    "memory: a long recorded run": ["simulate", "--steps", "3000000000", "--multi-orbit-sim", "--num-orbits", "64",
                                    "-s", "bad"],
}


def assert_refused(cwd: Path, result: subprocess.CompletedProcess, *absent: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("nbody-runner: error: "), result.stderr
    assert not any((cwd / "data").rglob("*")) if (cwd / "data").exists() else True, list((cwd / "data").rglob("*"))
    for text in absent:
        assert text not in result.stderr
    return lines[0]


def test_in_process_the_stderr_holds_a_warning_or_log_line_before_the_error(tmp_path, monkeypatch):
    """run_in_process stands in for the real command only if its stderr holds what the command's
    would: a warning or a log line before the error line is seen, and a test of one line fails."""
    def run(configs, started):
        warnings.warn("a warning before the error", UserWarning, stacklevel=2)
        logging.getLogger("nbody_engine").info("a log line before the error")
        raise InputError("the error")

    monkeypatch.setattr(runner, "run", run)
    handlers = logging.getLogger().handlers[:]
    result = run_in_process(tmp_path, "simulate", *SIM)
    assert result.returncode == 2 and "UserWarning: a warning before the error" in result.stderr, result.stderr
    assert "a log line before the error" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "nbody-runner: error: the error"
    with pytest.raises(AssertionError):
        assert_refused(tmp_path, result)
    assert logging.getLogger().handlers == handlers  # pytest's own, put back


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_bad_flags(tmp_path, case):
    assert_refused(tmp_path, runner_for(case, FLAG_CASES)(tmp_path, *FLAG_CASES[case]))


@pytest.mark.parametrize("mode", ["simulate", "evaluate"])
@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_checkpoints_that_disagree_with_themselves(tmp_path, checkpoint, mode, case):
    path = altered(checkpoint, tmp_path, CHECKPOINT_CASES[case])
    args = ["--integrator-mode", "ml", *SIM] if mode == "simulate" else \
        ["--eval-e", "0.5", "--eval-eps", "0.1", "--Nperiod", "1", "-s", "bad"]
    run = run_cli if (mode, case) == ("simulate", next(iter(CHECKPOINT_CASES))) else run_in_process
    line = assert_refused(tmp_path, run(tmp_path, mode, "--model-path", str(path), *args))
    assert str(path) in line


@pytest.mark.parametrize("make, says", [
    (flipped, "damaged"),
    (lambda ckpt, tmp: tmp / "missing.pt", "does not exist"),
    (lambda ckpt, tmp: tmp, "is a directory"),
])
def test_unreadable_checkpoints(tmp_path, checkpoint, make, says):
    path = make(checkpoint, tmp_path)
    run = run_cli if says == "damaged" else run_in_process
    line = assert_refused(tmp_path, run(tmp_path, "simulate", "--integrator-mode", "ml", "--model-path", str(path),
                                        *SIM))
    assert says in line


def test_a_plain_pickle_is_no_checkpoint_and_warns_nothing(tmp_path):
    path = tmp_path / "pickle.pt"
    path.write_bytes(pickle.dumps({"format": 2, "epoch": 0}))
    line = assert_refused(tmp_path, run_in_process(tmp_path, "simulate", "--integrator-mode", "ml", "--model-path",
                                                   str(path), *SIM))
    assert "not a weights-only PyTorch file" in line


def test_a_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("save_name = 'caf\xe9'\n".encode("latin-1"))
    assert "not UTF-8" in assert_refused(tmp_path, run_cli(tmp_path, "train", "--config", str(path)))


@pytest.mark.parametrize("rows, says", [
    ([[1, 0.5, 0, 0, 1], [1, 0.5, 0, 0, -1]], "start at the same position"),
    ([[1e308, 0.5, 0, 0, 1], [1e308, -0.5, 0, 0, -1]], "overflow"),
])
@pytest.mark.parametrize("mode", ["simulate", "train"])
def test_ic_files_no_run_can_start_from(tmp_path, rows, says, mode):
    path = ic_file(tmp_path, "ic.txt", rows)
    extra = FROM_FILE + ["-s", "bad"] if mode == "train" else SIM
    run = run_cli if (mode, says) == ("simulate", "start at the same position") else run_in_process
    assert says in assert_refused(tmp_path, run(tmp_path, mode, "--ic-path", str(path), *extra))


def test_an_empty_ic_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    line = assert_refused(tmp_path, run_in_process(tmp_path, "simulate", "--ic-path", "empty.txt", *SIM))
    assert "holds no bodies" in line


def test_ic_errors_never_quote_the_file(tmp_path):
    (tmp_path / "secret.txt").write_text("TOPSECRET 1 2 3 4\n")
    assert_refused(tmp_path, run_in_process(tmp_path, "simulate", "--ic-path", "secret.txt", *SIM), "TOPSECRET")
