"""The cumulative training trajectory: each checkpoint appends its rows to the run's trajectory
file and records how many it covers, exactly the rows of the finished epochs; resuming from it
(or from a format-2 or format-3 checkpoint, which held the trajectory itself) gives the same
trajectory as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import helpers
from nbody_engine.config.errors import InputError
from nbody_engine.config.loading import build_config
from nbody_engine.jobs.train import run_training
from nbody_engine.learning.train_trajectory import COLUMNS, STATE, TrainTrajectory
from nbody_engine.runs.checkpoints import HASH_KEY, content_hash, load_checkpoint

TINY = {**helpers.TINY, "seed": 7, "hidden_dims": [16, 16], "steps_per_epoch": 1, "replay_steps": 5,
        "replay_batch_size": 8, "min_replay_size": 3, "save_name": "t"}


def train(tmp_path, name: str, epochs: int, resume: bool = False):
    cfg = build_config({**TINY, "save_name": name, "epochs": epochs, "resume": resume})
    return run_training(cfg, data_dir=tmp_path)


def trajectory_file(tmp_path, name: str) -> dict[str, np.ndarray]:
    with np.load(tmp_path / name / "train_trajectory.npz") as npz:
        return dict(npz)


def rows(n: int, orbits: int = 2, bodies: int = 2, dim: int = 3) -> TrainTrajectory:
    trajectory = TrainTrajectory()
    for i in range(n):
        trajectory.append(i // 2, 0.01 * (i + 1), {"time": torch.full((orbits,), float(i)),
                                                    "position": torch.randn(orbits, bodies, dim),
                                                    "energy": torch.randn(orbits),
                                                    "angular_momentum": torch.randn(orbits, 3)})
    return trajectory


def extend(trajectory: TrainTrajectory, source: TrainTrajectory, indices) -> None:
    """Append ``source``'s rows ``indices`` to ``trajectory``, as a training would."""
    columns = source.columns()
    for i in indices:
        trajectory.append(int(columns["epoch"][i]), float(columns["dt"][i]), {key: columns[key][i] for key in STATE})


def stored_rows(path) -> dict[str, torch.Tensor]:
    """The trajectory rows checkpoint ``path`` covers, read back from the run's file."""
    return TrainTrajectory.from_checkpoint(load_checkpoint(path).data["trajectory"], path).columns()


def test_each_checkpoint_covers_the_rows_of_its_finished_epochs_in_one_file(tmp_path):
    final = train(tmp_path, "a", epochs=20)["checkpoint"]
    checkpoints = sorted((tmp_path / "a" / "model").glob("model_epoch_*.pt"))
    assert [p.name for p in checkpoints] == ["model_epoch_0009.pt", "model_epoch_0019.pt"]
    (file,) = (tmp_path / "a" / "model").glob("train_trajectory_*.bin")
    written = trajectory_file(tmp_path, "a")
    for path in checkpoints:
        stored = load_checkpoint(path).data["trajectory"]
        assert stored["file"] == file.name and not any(torch.is_tensor(v) for v in stored.values())
        rows = stored_rows(path)
        assert int(rows["epoch"].max()) == load_checkpoint(path).epoch
        for key in STATE:
            assert np.array_equal(rows[key].numpy(), written[key][:stored["rows"]]), key
        assert np.array_equal(rows["dt"].numpy(), written["dt"][:stored["rows"], 0])
    assert len(stored_rows(final)["epoch"]) == len(written["epoch"]) >= 20
    # the file holds each row once: its size is the rows times one record
    assert file.stat().st_size == len(written["epoch"]) * sum(v[0].nbytes for v in stored_rows(final).values())


def test_saving_appends_and_cuts_off_rows_past_the_last_checkpoint(tmp_path):
    trajectory = rows(9)
    first = trajectory.save(tmp_path, 4)
    assert trajectory.save(tmp_path, 7)["rows"] == 7  # a run that died after writing rows 4-6
    resumed = TrainTrajectory.from_checkpoint(first, tmp_path / "model_epoch_0001.pt")
    assert len(resumed) == 4 and resumed.file == trajectory.file
    extend(resumed, trajectory, range(4, 9))
    whole = resumed.save(tmp_path, 9)
    back = TrainTrajectory.from_checkpoint(whole, tmp_path / "model_epoch_0004.pt").columns()
    assert all(torch.equal(back[key], trajectory.columns()[key]) for key in COLUMNS)


def test_a_trajectory_file_removed_during_a_run_is_written_again_whole(tmp_path):
    trajectory = rows(7)
    trajectory.save(tmp_path, 4)
    (tmp_path / trajectory.file).unlink()
    back = TrainTrajectory.from_checkpoint(trajectory.save(tmp_path, 7), tmp_path / "model_epoch_0003.pt").columns()
    assert all(torch.equal(back[key], trajectory.columns()[key]) for key in COLUMNS)


def test_a_checkpoint_before_the_first_accepted_step_covers_no_rows(tmp_path):
    trajectory = TrainTrajectory()
    empty = trajectory.save(tmp_path, 0)
    resumed = TrainTrajectory.from_checkpoint(empty, tmp_path / "model_epoch_0000.pt")
    assert len(resumed) == 0 and resumed.file == trajectory.file
    full = rows(3)
    extend(resumed, full, range(3))
    back = TrainTrajectory.from_checkpoint(resumed.save(tmp_path, 3), tmp_path / "model_epoch_0001.pt").columns()
    assert all(torch.equal(back[key], full.columns()[key]) for key in COLUMNS)


@pytest.mark.slow
def test_a_fresh_training_leaves_the_file_of_the_checkpoints_it_replaces_alone(tmp_path):
    train(tmp_path, "a", epochs=20)
    old = tmp_path / "a" / "model" / "model_epoch_0019.pt"
    before = stored_rows(old)
    cfg = build_config({**TINY, "save_name": "a", "epochs": 10, "seed": 8})
    run_training(cfg, data_dir=tmp_path)
    assert len(list((tmp_path / "a" / "model").glob("train_trajectory_*.bin"))) == 2
    after = stored_rows(old)
    assert all(torch.equal(before[key], after[key]) for key in COLUMNS)


def test_a_missing_or_short_trajectory_file_is_one_line_naming_it(tmp_path):
    path = train(tmp_path, "a", epochs=10)["checkpoint"]
    (file,) = (tmp_path / "a" / "model").glob("train_trajectory_*.bin")
    file.write_bytes(file.read_bytes()[:100])
    with pytest.raises(InputError, match=rf"'{file}' holds 0 rows of the training trajectory where checkpoint "
                                         rf"'{path}' needs \d+; the file is cut short"):
        stored_rows(path)
    file.unlink()
    with pytest.raises(InputError, match=rf"checkpoint '{path}' continues its training trajectory in '{file}', "
                                         "which is missing"):
        train(tmp_path, "a", epochs=20, resume=True)


@pytest.mark.slow
def test_resuming_continues_the_trajectory_exactly(tmp_path):
    train(tmp_path, "whole", epochs=20)
    train(tmp_path, "halves", epochs=10)
    train(tmp_path, "halves", epochs=20, resume=True)
    whole, halves = trajectory_file(tmp_path, "whole"), trajectory_file(tmp_path, "halves")
    assert whole.keys() == halves.keys()
    assert all(np.array_equal(whole[key], halves[key]) for key in whole)


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.slow
def test_a_format_2_or_3_checkpoint_holding_its_trajectory_still_resumes(tmp_path, fmt):
    train(tmp_path, "whole", epochs=20)
    path = Path(train(tmp_path, "old", epochs=10)["checkpoint"])
    columns = stored_rows(path)
    for file in path.parent.glob("train_trajectory_*.bin"):
        file.unlink()  # an older checkpoint holds its trajectory itself
    data = torch.load(path, weights_only=True)
    data.pop(HASH_KEY)
    data["format"] = fmt
    data["trajectory"] = columns if fmt == 3 else [
        {"epoch": int(columns["epoch"][i]), "dt": float(columns["dt"][i]),
         **{key: columns[key][i].clone() for key in STATE}} for i in range(len(columns["epoch"]))]
    torch.save({**data, HASH_KEY: content_hash(data)}, path)
    train(tmp_path, "old", epochs=20, resume=True)
    whole, old = trajectory_file(tmp_path, "whole"), trajectory_file(tmp_path, "old")
    assert all(np.array_equal(whole[key], old[key]) for key in whole)
    assert np.array_equal(stored_rows(path.parent / "model_epoch_0019.pt")["position"].numpy(), old["position"])


@pytest.mark.parametrize("stored", [{"epoch": torch.zeros(3)}, [{"epoch": 0}], "rows",
                                    {**rows(3).columns(), "dt": torch.zeros(2)},
                                    {"file": "../t.bin", "rows": 3, "fields": [[key, "<f8", []] for key in COLUMNS]},
                                    {"file": "t.bin", "rows": -1, "fields": [[key, "<f8", []] for key in COLUMNS]},
                                    {"file": "t.bin", "rows": 3, "fields": [["epoch", "<f8", []]]},
                                    {"file": "t.bin", "rows": 3, "fields": [[key, "no", []] for key in COLUMNS]},
                                    {"file": "t.bin", "rows": 3, "fields": [[key, "|O", []] for key in COLUMNS]}])
def test_a_malformed_trajectory_is_one_line_naming_the_checkpoint(tmp_path, stored):
    (tmp_path / "t.bin").write_bytes(bytes(4096))
    with pytest.raises(InputError, match=r"checkpoint '.*ck\.pt' trajectory must hold epoch, dt, time"):
        TrainTrajectory.from_checkpoint(stored, tmp_path / "ck.pt")
