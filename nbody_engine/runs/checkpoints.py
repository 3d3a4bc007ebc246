"""Training checkpoints: one dict with explicit keys, written atomically, read with
``torch.load(weights_only=True)`` so that opening a checkpoint can never run code.

Keys: ``format``, ``epoch``, ``model`` (state dict), ``optimizer`` (state dict), ``config``
(every resolved key), ``train_ic`` (mass, position, velocity of the training systems),
``metrics`` (one dict per epoch so far), ``trajectory`` (how many accepted training states so
far, and the file beside the checkpoint that holds them: :mod:`nbody_engine.learning.train_trajectory`),
``trainer`` (what resuming needs: the orbits' current states and histories, the replay buffer
and the random number generators) and ``sha256``, the hash of everything else
(:func:`content_hash`).

Loading checks all of it before anything runs: the hash (a flipped byte is a corrupt file, not
a different model), the stored config through the schema like a TOML file's, and the training
initial conditions; :func:`nbody_engine.runs.trained_policy.checked_network` then checks the weights against
the config. Every problem is one line (an InputError) naming the file.

The hash is unkeyed: it shows that a file was damaged, not that nobody changed it on purpose
(whoever edits a checkpoint can write the new hash too). Opening one stays safe regardless,
since weights-only loading never runs code from the file; checkpoints of format 1, which carry
no hash, are refused.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config.errors import InputError
from ..config.loading import check_value
from ..config.schema import Config, KEYS
from ..physics.gravity import State
from .directory import atomic_path

FORMAT = 4  # 1 (before the content hash) is refused; 2 kept the trajectory as rows,
# 3 as columns; 4 keeps it in the run's trajectory file and records how many rows it covers
HASHED = 2  # the first format with a content hash: checkpoints of format 1 cannot show damage
REQUIRED = ("format", "epoch", "model", "config", "train_ic")
# The keys a checkpoint must agree on with the config that uses it, declared once: what the network
# is (a simulation reads them from the checkpoint, and one the user sets otherwise is an error), and
# for resuming also what the trainer's stored state is shaped by (the seed only where one is asked for).
ARCHITECTURE_KEYS = ("objective", "feature_type", "history_len", "hidden_dims", "activation", "dropout", "fourier_dim",
                     "fourier_scale", "normalize_inputs", "norm_mode")
RESUME_KEYS = (*ARCHITECTURE_KEYS, "num_particles", "dim", "num_orbits", "seed", "optimizer")
HASH_KEY = "sha256"


def content_hash(value: Any) -> str:
    """SHA-256 of a checkpoint's content: tensors by dtype, shape and bytes, containers walked
    in a fixed order, other values by repr. Independent of how torch lays the file out."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if torch.is_tensor(value):
        t = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{t.dtype}{tuple(value.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{value!r};".encode())


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` with the format and content hash, atomically. The file is serialized in
    memory and written by Python, so that a full disk is an OSError naming the file (torch's own
    writer reports it as a RuntimeError about positions in its zip stream)."""
    content = {"format": FORMAT, **payload}
    serialized = io.BytesIO()
    torch.save({**content, HASH_KEY: content_hash(content)}, serialized)
    with atomic_path(path) as tmp:
        tmp.write_bytes(serialized.getbuffer())
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
    if path.is_dir():
        raise InputError(f"checkpoint '{path}' is a directory; give a checkpoint file in it, such as "
                         f"'{path / 'model_epoch_0000.pt'}'")
    if not path.exists():
        raise InputError(f"checkpoint '{path}' does not exist; train first or fix 'model_path'")
    if not path.is_file():  # a FIFO would block the read, a device never end
        raise InputError(f"checkpoint '{path}' is not a regular file (a pipe, device or socket); fix 'model_path'")
    data = _read(path, map_location)
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED):
        raise InputError(f"checkpoint '{path}' is not an nbody explorer checkpoint (missing keys)")
    if data["format"] not in range(HASHED, FORMAT + 1):
        raise InputError(f"checkpoint '{path}' has format {data['format']!r}; this version reads the formats "
                         f"{HASHED} to {FORMAT}, whose content hash shows a damaged file (format 1 has none): train "
                         "again")
    stored = data.pop(HASH_KEY, None)
    if stored != content_hash(data):
        raise InputError(f"checkpoint '{path}' is damaged: its content does not match the hash written with it; "
                         "restore a copy or train again")
    data["config"] = _checked_config(path, data["config"])
    _check_epoch(path, data["epoch"], data.get("metrics"), data["config"]["epochs"])
    _check_train_ic(path, data["train_ic"], data["config"]["dim"])
    return Checkpoint(path, data)


def _check_epoch(path: Path, epoch: Any, metrics: Any, epochs: int) -> None:
    """The epoch a checkpoint was written after: an integer in [0, epochs) with one line of
    metrics per epoch up to it."""
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and 0 <= epoch < epochs):
        raise InputError(f"checkpoint '{path}' says it was written after epoch {_shown(epoch)}, which its training "
                         f"of {epochs} epochs never reaches; the file is not a checkpoint this tool wrote")
    if metrics is not None and not (isinstance(metrics, list) and len(metrics) == epoch + 1):
        raise InputError(f"checkpoint '{path}' was written after epoch {epoch} but does not hold the metrics of "
                         f"{epoch + 1} epochs; the file is not a checkpoint this tool wrote")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read(path: Path, map_location) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns before it fails on a file that is no checkpoint
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError, IndexError,
            KeyError, TypeError, AttributeError) as err:  # the weights-only unpickler fails in many ways on garbage
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError):
            # torch's text advises weights_only=False, i.e. running the file's code: never for a checkpoint
            reason = "not a weights-only PyTorch file"
        raise InputError(f"checkpoint '{path}' cannot be read ({reason}); it is corrupt or not a checkpoint") from None


def _checked_config(path: Path, stored: Any) -> dict:
    """The stored config, every key checked through the schema; keys it predates get defaults."""
    where = f"checkpoint '{path}' config"
    if not isinstance(stored, dict):
        raise InputError(f"{where} is a {type(stored).__name__}, not a table of keys; the file is not a checkpoint "
                         "this tool wrote")
    unknown = sorted(set(stored) - set(KEYS))
    if unknown:
        raise InputError(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}: it was written by another "
                         "version of nbody explorer")
    values = {key: Config.param[key].default for key in KEYS}
    values.update({key: check_value(key, value, where) for key, value in stored.items()})
    return values


def _check_train_ic(path: Path, ic: Any, dim: int) -> None:
    """mass (B, N) > 0 and position, velocity (B, N, dim), all finite, B >= 1."""
    where = f"checkpoint '{path}' train_ic"
    if not isinstance(ic, dict) or not all(torch.is_tensor(ic.get(k)) for k in ("mass", "position", "velocity")):
        raise InputError(f"{where} must hold the tensors mass, position and velocity")
    mass, position, velocity = ic["mass"], ic["position"], ic["velocity"]
    if mass.dim() != 2 or mass.shape[0] < 1 or mass.shape[1] < 2:
        raise InputError(f"{where}: mass has shape {tuple(mass.shape)}; expected (systems >= 1, bodies >= 2)")
    expected = (*mass.shape, dim)
    for name, t in (("position", position), ("velocity", velocity)):
        if tuple(t.shape) != expected:
            raise InputError(f"{where}: {name} has shape {tuple(t.shape)}; the config's dim and mass say {expected}")
    if not all(bool(torch.isfinite(t).all()) for t in (mass, position, velocity)) or not bool((mass > 0).all()):
        raise InputError(f"{where} holds non-finite values or non-positive masses")
