"""The cumulative training trajectory in checkpoints: one tensor per quantity, exactly the rows
of the finished epochs, and resuming from it (or from a format-2 checkpoint, which kept it as
one dict of tensors per accepted step) gives the same trajectory as an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nbody_engine.checkpoints import HASH_KEY, content_hash, load_checkpoint
from nbody_engine.config import build_config
from nbody_engine.errors import InputError
from nbody_engine.train import run_training
from nbody_engine.train_trajectory import COLUMNS, STATE, TrainTrajectory

TINY = dict(num_particles=2, num_orbits=2, seed=7, hidden_dims=[16, 16], n_steps=3, replay_steps=5,
            replay_batch_size=8, lr=1e-3, min_replay_size=3, save_name="t")


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


def test_a_checkpoint_holds_the_trajectory_so_far_as_one_tensor_per_quantity(tmp_path):
    ckpt = load_checkpoint(train(tmp_path, "a", epochs=10)["checkpoint"])
    stored = ckpt.data["trajectory"]
    assert set(stored) == set(COLUMNS) and all(torch.is_tensor(stored[key]) for key in COLUMNS)
    written = trajectory_file(tmp_path, "a")
    assert len(stored["epoch"]) == len(written["epoch"]) >= 10
    assert int(stored["epoch"].max()) == ckpt.epoch == 9
    for key in STATE:
        assert np.array_equal(stored[key].numpy(), written[key]), key
    assert np.array_equal(stored["dt"].numpy(), written["dt"][:, 0])


def test_columns_of_the_first_rows_are_tensors_of_their_own():
    trajectory = rows(7)
    first = trajectory.columns(4)
    whole = trajectory.columns()
    assert len(trajectory) == 7 and len(whole["epoch"]) == 7
    for key in COLUMNS:
        assert torch.equal(first[key], whole[key][:4])
        # a view would make a checkpoint write the storage of all seven rows
        assert first[key].untyped_storage().nbytes() == first[key].nbytes
    trajectory.append(3, 0.5, {key: value[-1] for key, value in whole.items() if key in STATE})
    assert len(trajectory) == 8 and torch.equal(trajectory.columns(7)["position"], whole["position"])


def test_resuming_continues_the_trajectory_exactly(tmp_path):
    train(tmp_path, "whole", epochs=20)
    train(tmp_path, "halves", epochs=10)
    train(tmp_path, "halves", epochs=20, resume=True)
    whole, halves = trajectory_file(tmp_path, "whole"), trajectory_file(tmp_path, "halves")
    assert whole.keys() == halves.keys()
    assert all(np.array_equal(whole[key], halves[key]) for key in whole)


def test_a_format_2_checkpoint_with_one_row_per_step_still_resumes(tmp_path):
    train(tmp_path, "whole", epochs=20)
    path = train(tmp_path, "old", epochs=10)["checkpoint"]
    data = torch.load(path, weights_only=True)
    columns = data.pop("trajectory")
    data.pop(HASH_KEY)
    data["format"] = 2
    data["trajectory"] = [{"epoch": int(columns["epoch"][i]), "dt": float(columns["dt"][i]),
                           **{key: columns[key][i].clone() for key in STATE}} for i in range(len(columns["epoch"]))]
    torch.save({**data, HASH_KEY: content_hash(data)}, path)
    train(tmp_path, "old", epochs=20, resume=True)
    whole, old = trajectory_file(tmp_path, "whole"), trajectory_file(tmp_path, "old")
    assert all(np.array_equal(whole[key], old[key]) for key in whole)


@pytest.mark.parametrize("stored", [{"epoch": torch.zeros(3)}, [{"epoch": 0}], "rows",
                                    {**rows(3).columns(), "dt": torch.zeros(2)}])
def test_a_malformed_trajectory_is_one_line_naming_the_checkpoint(tmp_path, stored):
    with pytest.raises(InputError, match=r"checkpoint '.*ck\.pt' trajectory must hold epoch, dt, time"):
        TrainTrajectory.from_checkpoint(stored, tmp_path / "ck.pt")
