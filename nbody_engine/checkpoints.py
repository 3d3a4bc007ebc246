"""Training checkpoints: one dict with explicit keys, written atomically, read with
``torch.load(weights_only=True)`` so that opening a checkpoint can never run code.

Keys: ``format``, ``epoch``, ``model`` (state dict), ``optimizer`` (state dict), ``config``
(every resolved key), ``train_ic`` (mass, position, velocity of the training systems),
``metrics`` (one dict per epoch so far), ``trajectory`` (the accepted training states so far,
for the training movie) and ``trainer`` (what resuming needs: the orbits' current states and
histories, the replay buffer and the random number generators).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InputError
from .physics import State
from .runs import atomic_path

FORMAT = 1
REQUIRED = ("format", "epoch", "model", "config", "train_ic")


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return Path(path)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    data: dict

    @property
    def epoch(self) -> int:
        return int(self.data["epoch"])

    @property
    def config(self) -> dict:
        return self.data["config"]

    @property
    def model_state(self) -> dict:
        return self.data["model"]

    @property
    def train_ic(self) -> State:
        ic = self.data["train_ic"]
        return State(ic["mass"], ic["position"], ic["velocity"], torch.zeros(ic["mass"].shape[0],
                                                                              dtype=ic["position"].dtype))


def load_checkpoint(path: str | Path, map_location="cpu") -> Checkpoint:
    """Read and check a checkpoint; any problem is an InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint '{path}' does not exist; train first or fix 'model_path'")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError, IndexError,
            KeyError, TypeError, AttributeError) as err:  # the weights-only unpickler fails in many ways on garbage
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError):
            # torch's text advises weights_only=False, i.e. running the file's code: never for a checkpoint
            reason = "not a weights-only PyTorch file"
        raise InputError(f"checkpoint '{path}' cannot be read ({reason}); it is corrupt or not a checkpoint") from None
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED):
        raise InputError(f"checkpoint '{path}' is not an nbody explorer checkpoint (missing keys)")
    if data["format"] != FORMAT:
        raise InputError(f"checkpoint '{path}' has format {data['format']}; this version reads format {FORMAT}")
    return Checkpoint(path, data)
