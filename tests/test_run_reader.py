"""The one reader of a run folder (nbody_engine.runs.reader), the one batch reduction, the one
json_safe and the one relative error, on folders and values made by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nbody_engine.events import json_safe
from nbody_engine.physics.gravity import relative_change, relative_errors
from nbody_engine.runs import reader
from nbody_engine.runs.directory import DirectoryLock


def write_run(root, metrics=(), summaries=None, progress=None):
    root.mkdir(parents=True)
    (root / "config.toml").write_text('epochs = 3\n[simulate]\nnum_orbits = 4\n')
    (root / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    for label, summary in (summaries or {}).items():
        (root / "sim" / label).mkdir(parents=True)
        (root / "sim" / label / "summary.json").write_text(json.dumps(summary))
    if progress is not None:
        (root / "progress.jsonl").write_text(json.dumps({"event": progress}) + "\n")
    return root


def test_a_batch_is_reduced_to_its_worst_its_smallest_dt_and_its_mean_cost():
    summary = {"max_rel_energy_error": [1e-5, None, 3e-5], "dt_min": [0.2, 0.1], "steps_per_period": [100, 300],
               "steps": 7, "dt_max": [None, None]}
    assert reader.summary_value(summary, "max_rel_energy_error") == 3e-5
    assert reader.summary_value(summary, "dt_min") == 0.1
    assert reader.summary_value(summary, "steps_per_period") == 200
    assert reader.summary_value(summary, "steps") == 7
    assert reader.summary_value(summary, "dt_max") is None


def test_the_folder_s_config_metrics_summaries_and_final_metrics(tmp_path):
    root = write_run(tmp_path / "r", metrics=[{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": None,
                                                                            "acceptance_rate": 0.5}],
                     summaries={"ml": {"steps": [10, 30], "max_rel_energy_error": [1e-4, 2e-4],
                                       "steps_per_period": [5.0, 7.0]}}, progress="RunFinished")
    assert reader.phase_setting(reader.read_config(root), "simulate", "num_orbits") == 4
    assert reader.phase_setting(reader.read_config(root), "train", "num_orbits") == 8  # the schema's default
    assert reader.last_metrics(root)["epoch"] == 1
    assert reader.final_metrics(root) == {"loss": None, "acceptance_rate": 0.5, "steps": 30,
                                          "max_rel_energy_error": 2e-4, "steps_per_period": 6.0}
    assert reader.run_status(root) == "finished"
    assert reader.list_runs(tmp_path) == ["r"]


def test_metrics_are_read_line_by_line_from_an_offset(tmp_path):
    root = write_run(tmp_path / "r", metrics=[{"epoch": 0}])
    lines, offset = reader.read_metrics(root)
    assert lines == [{"epoch": 0}]
    with (root / "metrics.jsonl").open("a") as fh:
        fh.write('{"epoch": 1}\n{"epo')  # a line being written
    lines, offset = reader.read_metrics(root / "metrics.jsonl", offset)
    assert lines == [{"epoch": 1}]
    assert reader.read_metrics(root, offset) == ([], offset)


@pytest.mark.parametrize(("progress", "status"), [("RunFailed", "failed"), ("RunCancelledEvent", "stopped"),
                                                  ("StepAccepted", "interrupted"), (None, "incomplete")])
def test_how_a_run_ended(tmp_path, progress, status):
    assert reader.run_status(write_run(tmp_path / "r", progress=progress)) == status


def test_a_run_that_holds_its_lock_is_running(tmp_path):
    root = write_run(tmp_path / "r", progress="RunFinished")
    with DirectoryLock(root):
        assert reader.run_status(root).startswith("running (pid ")


def test_json_safe_makes_numpy_and_non_finite_values_strict_json():
    value = {"a": np.float64(math.nan), "b": np.array([1.0, np.inf]), "c": (np.int64(3), -math.inf), "d": "x"}
    assert json_safe(value) == {"a": None, "b": [1.0, None], "c": [3, None], "d": "x"}
    json.dumps(json_safe(value), allow_nan=False)


def test_relative_change_is_the_same_for_arrays_and_tensors():
    energy = np.array([[-1.0, -2.0], [-1.1, -1.8]])
    L = np.array([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], [[0.0, 0.1, 1.0], [0.0, 0.0, 0.0]]])
    rel_dE, rel_dL = relative_errors(energy, L)
    np.testing.assert_allclose(rel_dE, [[0, 0], [0.1, 0.1]], rtol=1e-12)
    np.testing.assert_allclose(rel_dL[:, 0], [0, 0.1], rtol=1e-12)
    assert np.isnan(rel_dL[:, 1]).all()  # L0 = 0: undefined
    as_tensor = relative_change(torch.tensor(energy[1]), torch.tensor(energy[0]), vector=False)
    np.testing.assert_allclose(as_tensor.numpy(), rel_dE[1], rtol=1e-15)


def test_notes_and_tags_are_written_atomically_and_read_back(tmp_path):
    from nbody_engine.config.errors import InputError
    from nbody_engine.runs.directory import write_notes

    root = write_run(tmp_path / "run")
    assert reader.read_notes(root) == {"notes": "", "tags": []}  # none yet
    write_notes(root, "first try\nlr too high", ["baseline", "kepler", "baseline"])
    assert reader.read_notes(root) == {"notes": "first try\nlr too high", "tags": ["baseline", "kepler"]}
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    for bad in ("a,b", " padded", "", "two\nlines"):
        with pytest.raises(InputError, match="a tag is a non-empty text without commas"):
            write_notes(root, "", [bad])
    with pytest.raises(InputError, match="holds no run"):
        write_notes(tmp_path, "", [])
    (root / "notes.json").write_text('{"notes": 3}')
    with pytest.raises(ValueError, match=r"notes.json is not \{\"notes\""):
        reader.read_notes(root)
    (root / "notes.json").write_text("{")
    with pytest.raises(ValueError, match="notes.json is not JSON"):
        reader.read_notes(root)
