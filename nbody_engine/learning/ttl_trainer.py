"""Training of the learned time transformation (``integrator_mode = "ml_ttl"``): each epoch is
``steps_per_epoch`` optimizer steps of the TTL rollout objective (:mod:`.ttl_rollout`) on the
training family. Same job, checkpoints, events and run directory as the dt network's
:class:`~.trainer.Trainer`, with the same interface (``run_epoch``, ``snapshot``,
``checkpoint``, ``restore``); the checkpoint's ``model`` is the Omega network's weights
(:class:`~.time_transform.OmegaNetwork`), computed in float64 like the physics."""

from __future__ import annotations

import time as wallclock
from pathlib import Path

import torch

from ..config.errors import InputError
from ..config.loading import Config, config_values
from ..events import Reporter
from ..physics.gravity import Gravity
from ..physics.initial_conditions import check_start
from .network import load_weights
from .rollout import sample_eta
from .time_transform import LearnedOmega, build_omega_network
from .train_trajectory import TrainTrajectory
from .trainer import EpochStats, _clone_nested, make_optimizer
from .ttl_rollout import training_family, ttl_rollout_step


def check_ttl_training(cfg: Config) -> None:
    """The objective an ml_ttl training needs (the network refuses a rough activation itself)."""
    if cfg.objective != "rollout":
        raise InputError("integrator_mode = 'ml_ttl' trains its time transformation with objective = 'rollout' "
                         f"(through whole TTL rollouts), not {cfg.objective!r}; set objective = 'rollout'")


class TTLTrainer:
    """Holds everything an ml_ttl training run changes; :meth:`run_epoch` is one epoch."""

    def __init__(self, cfg: Config, reporter: Reporter, device, dtype, gravity: Gravity) -> None:
        check_ttl_training(cfg)
        self.cfg, self.reporter, self.gravity = cfg, reporter, gravity
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.initial, self.time_unit = training_family(cfg, self.generator, device, torch.float64)
        check_start(self.initial, gravity, f"the training family '{cfg.train_family}'")
        self.network = build_omega_network(config_values(cfg)).to(device=device, dtype=torch.float64)
        self.omega = LearnedOmega(self.network, gravity.softening)
        self.optimizer = make_optimizer(cfg, self.network.parameters())
        self.metrics: list[dict] = []
        self.trajectory = TrainTrajectory()  # a rollout epoch accepts no steps: nothing to record
        self.epoch = -1

    def run_epoch(self) -> dict:
        self.epoch += 1
        start = wallclock.perf_counter()
        stats = EpochStats()
        t_end = self.cfg.rollout_periods * self.time_unit
        for _ in range(self.cfg.steps_per_epoch):
            self.reporter.cancel.raise_if_cancelled()
            eta = sample_eta(self.initial.batch_size, self.cfg.rollout_eta, self.generator, self.initial.time)
            result = ttl_rollout_step(self.omega, self.optimizer, self.initial, t_end, eta, self.cfg.rollout_lambda,
                                      self.cfg.rollout_clip, self.gravity)
            stats.add_rollout(result)
        metrics = stats.metrics(wallclock.perf_counter() - start, 0)
        self.metrics.append(metrics)
        return metrics

    def snapshot(self) -> dict:
        """Everything needed to continue exactly from the end of the current epoch (copied)."""
        return {
            "epoch": self.epoch,
            "model": {k: v.detach().clone() for k, v in self.network.state_dict().items()},
            "optimizer": _clone_nested(self.optimizer.state_dict()),
            "config": config_values(self.cfg),
            "train_ic": {"mass": self.initial.mass.cpu(), "position": self.initial.position.cpu(),
                         "velocity": self.initial.velocity.cpu()},
            "metrics": list(self.metrics),
            "trajectory": 0,
            "trainer": {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()},
        }

    def checkpoint(self, snapshot: dict, directory: Path) -> dict:
        """What a checkpoint of ``snapshot`` holds (no training trajectory: ``trajectory`` is None)."""
        return {**snapshot, "trajectory": None}

    def restore(self, ckpt) -> None:
        """Continue from a loaded checkpoint (:class:`nbody_engine.runs.checkpoints.Checkpoint`)."""
        data = ckpt.data
        self.epoch = int(data["epoch"])
        load_weights(self.network, data["model"], ckpt.path)
        self.optimizer.load_state_dict(data["optimizer"])
        self.metrics = list(data["metrics"])
        self.generator.set_state(data["trainer"]["generator"])
        torch.set_rng_state(data["trainer"]["torch_rng"])
