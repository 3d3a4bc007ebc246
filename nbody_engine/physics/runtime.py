"""What every run sets up before it starts: its seed, its device and dtype, and its gravity."""

from __future__ import annotations

import os
import random

import torch

from ..config.errors import InputError
from ..config.schema import Config
from .gravity import Gravity, PointMassField


def resolve_seed(cfg: Config) -> int:
    """The run's seed; a config without one gets a fresh seed, recorded so the run can be repeated."""
    if cfg.seed is None:
        cfg.seed = random.SystemRandom().randrange(2**31)
    return cfg.seed


def torch_setup(cfg: Config) -> tuple[torch.device, torch.dtype]:
    """Apply the Device/dtype section; return the device and dtype to compute in.

    On the CPU, torch runs single-threaded unless OMP_NUM_THREADS says otherwise: these
    tensors are small, and a second thread costs more in synchronisation than it gains."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device = 'cuda' but PyTorch sees no CUDA GPU; use device = 'auto' or 'cpu'")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    torch.autograd.set_detect_anomaly(cfg.detect_anomaly)
    return device, getattr(torch, cfg.dtype)


def gravity_of(cfg: Config) -> Gravity:
    field = None
    if cfg.external_field_mass is not None:
        field = PointMassField(cfg.external_field_mass, tuple(float(x) for x in cfg.external_field_position))
    return Gravity(cfg.softening, field)
