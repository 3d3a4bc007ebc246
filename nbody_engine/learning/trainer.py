"""Two-phase training of the dt network.

Each epoch:

1. **Collect** ``steps_per_epoch`` accepted steps per orbit, starting where the last epoch
   ended. An attempt predicts dt, takes ``n_steps`` leapfrog steps with it (differentiably) and
   measures |dE/E| (the largest over its sub-steps: an attempt that steps through a pericentre
   gives most of its energy error back on the way out, and its end point alone would reward the
   too-long step) and |dL/L| at its end. It is accepted when |dE/E| <= ``energy_threshold`` and all is
   finite; a rejected attempt costs one optimizer step on the band loss of that same state, then
   is retried, at most ``max_retrain_steps`` times (0 = no limit).
2. **Replay** accepted states from a bounded buffer: once it holds ``min_replay_size`` states,
   up to ``replay_steps`` optimizer steps on minibatches of ``replay_batch_size``, stopping early
   when every sampled state's loss is at most ``rel_loss_bound``, or when the loss has not
   improved by 1% for ``REPLAY_PATIENCE`` iterations (states that no step within the policy's
   bounds can bring into the band would otherwise keep replay busy for nothing).

With ``objective = "rollout"`` an epoch is instead ``steps_per_epoch`` optimizer steps through
whole rollouts of the training family (:mod:`nbody_engine.learning.rollout`).

Checkpoints are written every 10 epochs and at the last; ``resume`` continues from the latest.
"""


from __future__ import annotations

import logging
import math
import time as wallclock
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config.budget import REPLAY_CAPACITY
from ..config.errors import InputError, TrainingStalled
from ..config.loading import Config, config_values
from ..events import Reporter, StepAccepted, StepRejected, TrajectoryChunk
from ..physics.gravity import Gravity, angular_momentum
from ..physics.initial_conditions import check_start
from .attempt import Attempt, Orbits, attempt, training_initial_state, training_source
from .features import empty_rows
from .network import LearnedDt, build_network, load_weights
from .replay import ReplayBuffer
from .rollout import RolloutResult, periods_of, rollout_step, sample_eta
from .train_trajectory import TrainTrajectory

log = logging.getLogger("nbody_engine.learning.trainer")

REPLAY_PATIENCE = 50  # replay also stops once its loss has not improved by 1% for this many iterations


class Trainer:
    """Holds everything a training run changes; :meth:`run_epoch` is one collect + replay."""

    def __init__(self, cfg: Config, reporter: Reporter, device, dtype, gravity: Gravity) -> None:
        self.cfg, self.reporter = cfg, reporter
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.initial = training_initial_state(cfg, self.generator, device, dtype)
        check_start(self.initial, gravity, training_source(cfg))
        if cfg.objective == "rollout":
            periods_of(self.initial)
        self.network = build_network(config_values(cfg)).to(device=device)
        if cfg.objective == "rollout":
            self.network.double()  # gradients through whole rollouts: the network computes in float64 too
        self.policy = LearnedDt(self.network, cfg.feature_type, cfg.history_len, gravity, cfg.eps)
        self._set_normalization()
        if cfg.compile:
            self.policy.network = torch.compile(self.network)
        self.optimizer = make_optimizer(cfg, self.network.parameters())
        self.orbits = Orbits.start(self.initial, self.policy)
        self.buffer = ReplayBuffer(REPLAY_CAPACITY)
        self.metrics: list[dict] = []
        self.trajectory = TrainTrajectory()
        self.epoch = -1

    def _set_normalization(self) -> None:
        cfg, net = self.cfg, self.network
        width = net.input_shift.shape[0]
        if not cfg.normalize_inputs:
            return
        if cfg.norm_mode == "manual":
            net.set_normalization(torch.zeros(width), torch.full((width,), cfg.norm_scale))
            return
        with torch.no_grad():
            rows = empty_rows(self.initial.batch_size, cfg.history_len, cfg.feature_type, self.initial.position)
            x = self.policy.inputs(self.initial, rows)
        std = x.std(0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(x[0])
        net.set_normalization(x.mean(0), torch.where(std > 1e-6, std, torch.ones_like(std)))

    # phase 1 -------------------------------------------------------------------------------
    def collect(self, stats: EpochStats) -> None:
        cfg = self.cfg
        for step in range(cfg.steps_per_epoch):
            self.orbits.restart_if_all_paused()
            pending = (~self.orbits.paused).nonzero().squeeze(1)
            retrains = 0
            while pending.numel():
                self.reporter.cancel.raise_if_cancelled()
                o = self.orbits
                state, rows = o.state.select(pending), o.rows[pending]
                att = attempt(self.policy, state, rows, cfg)
                ok = att.accepted(cfg.energy_threshold)
                stats.attempts += pending.numel()
                if bool(ok.any()):
                    self._accept(pending, att, ok, state, rows, stats, step, retrains)
                rejected = ~ok
                if not bool(rejected.any()):
                    break
                at_floor = rejected & (att.dt.detach() <= cfg.dt_bound * (1 + 1e-9))
                if bool(at_floor.any()):
                    self._restart_unresolvable(pending[at_floor], att.rel_dE[at_floor], stats)
                trainable = rejected & ~at_floor
                if bool(trainable.any()):
                    if cfg.max_retrain_steps and retrains >= cfg.max_retrain_steps:
                        raise TrainingStalled(self._stall_message(att, trainable))
                    loss = self._optimize(att.loss[trainable].mean())
                    retrains += 1
                    stats.retrains += 1
                    self._report_rejection(att, trainable, loss, step, retrains)
                pending = pending[rejected]

    def _restart_unresolvable(self, index: torch.Tensor, rel_dE: torch.Tensor, stats: EpochStats) -> None:
        """Systems rejected even at the smallest step a policy may take (``dt_bound``) are in an
        encounter no retraining can resolve (two point masses all but colliding): they start
        over from their initial conditions instead of stalling the run. At the initial conditions
        themselves, nothing is left to restart: that is a stall."""
        if bool((self.orbits.state.time[index] == self.orbits.initial.time[index]).any()):
            raise TrainingStalled(f"epoch {self.epoch}: the initial conditions of system(s) {index.tolist()} "
                                  f"are rejected even at dt = dt_bound = {self.cfg.dt_bound:g} (|dE/E| = "
                                  f"{float(rel_dE.detach().max()):.3e}); lower 'dt_bound' or raise 'energy_threshold'")
        self.orbits.restart(index)
        stats.orbit_restarts += index.numel()
        log.warning("epoch %d: system(s) %s rejected at dt = dt_bound = %g (|dE/E| up to %.2e): an encounter "
                    "no step can resolve; restarting from the initial conditions", self.epoch, index.tolist(),
                    self.cfg.dt_bound, float(rel_dE.detach().max()))

    def _accept(self, pending, att, ok, state, rows, stats, step, retrains) -> None:
        self.buffer.add(state.select(ok), rows[ok])
        self.orbits.advance(pending, att, ok, self.cfg.stop_at_period)
        stats.add_accepted(att, ok)
        rel_dE, rel_dL, dt = (t[ok].detach() for t in (att.rel_dE, att.rel_dL, att.dt))
        self.reporter.emit(StepAccepted(self.epoch, step, float(rel_dE.max()), float(rel_dL.max()),
                                        float(dt.mean()), retrains))
        self._record_trajectory(rel_dE, rel_dL, dt)

    def _record_trajectory(self, rel_dE, rel_dL, dt) -> None:
        """Keep every orbit's state after an accepted step (the cumulative training trajectory)."""
        s = self.orbits.state
        with torch.no_grad():
            energy = self.policy.gravity.energy(s)
        mean_dt = float(dt.mean())
        state = {"time": s.time.cpu(), "position": s.position.cpu(), "energy": energy.cpu(),
                 "angular_momentum": angular_momentum(s).cpu()}
        self.trajectory.append(self.epoch, mean_dt, state)
        self.reporter.emit(TrajectoryChunk("train", len(self.trajectory) - 1, state["time"].numpy()[None],
                                           np.full((1, 1), mean_dt), state["position"].numpy()[None],
                                           np.full((1, 1), float(rel_dE.max())), np.full((1, 1), float(rel_dL.max())),
                                           progress=(self.epoch + 1) / self.cfg.epochs))

    def _report_rejection(self, att, rejected, loss, step, retrain) -> None:
        rel_dE, rel_dL, dt = (t[rejected].detach() for t in (att.rel_dE, att.rel_dL, att.dt))
        self.reporter.emit(StepRejected(self.epoch, step, float(rel_dE.max()), float(rel_dL.max()),
                                        float(dt.mean()), loss, retrain))
        if self.cfg.debug and retrain % self.cfg.retrain_log_every == 0:
            log.debug("epoch %d step %d: retrain %d, max|dE/E| %.3e, loss %.4g", self.epoch, step, retrain,
                      float(rel_dE.max()), loss)

    def _stall_message(self, att: Attempt, rejected: torch.Tensor) -> str:
        worst = float(att.rel_dE[rejected].detach().max())
        return (f"epoch {self.epoch}: a state was still rejected after max_retrain_steps = "
                f"{self.cfg.max_retrain_steps} retrain iterations (|dE/E| = {worst:.3e} > energy_threshold = "
                f"{self.cfg.energy_threshold:g}); raise 'energy_threshold' or 'max_retrain_steps', or lower 'eps'")

    def _optimize(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # phase 2 -------------------------------------------------------------------------------
    def replay(self, stats: EpochStats) -> None:
        cfg = self.cfg
        if len(self.buffer) < cfg.min_replay_size:
            return
        best, since_best = math.inf, 0
        for it in range(cfg.replay_steps):
            self.reporter.cancel.raise_if_cancelled()
            state, rows = self.buffer.sample(cfg.replay_batch_size, self.generator)
            att = attempt(self.policy, state, rows, cfg, advance=False)
            passed = att.loss.detach() <= cfg.rel_loss_bound
            stats.replay_pass_rate = float(passed.double().mean())
            stats.replay_loss = float(att.loss.detach().mean())
            best, since_best = (stats.replay_loss, 0) if stats.replay_loss < 0.99 * best else (best, since_best + 1)
            if bool(passed.all()) or since_best >= REPLAY_PATIENCE:
                break
            self._optimize(att.loss.mean())
            stats.replay_iterations += 1
            if cfg.debug and (it + 1) % cfg.debug_replay_every == 0:
                log.debug("epoch %d replay %d: loss %.4g, pass rate %.2f", self.epoch, it + 1, stats.replay_loss,
                          stats.replay_pass_rate)

    # the rollout objective -----------------------------------------------------------------
    def rollouts(self, stats: EpochStats) -> None:
        """``steps_per_epoch`` optimizer steps of the rollout objective (:mod:`nbody_engine.learning.rollout`),
        each on the whole training family at freshly drawn accuracies."""
        cfg = self.cfg
        for _ in range(cfg.steps_per_epoch):
            self.reporter.cancel.raise_if_cancelled()
            eta = sample_eta(self.initial.batch_size, cfg.rollout_eta, self.generator, self.initial.time)
            result = rollout_step(self.policy, self.optimizer, self.initial, eta, cfg.rollout_periods,
                                  cfg.rollout_lambda, cfg.rollout_clip, self.policy.gravity)
            stats.add_rollout(result)

    def run_epoch(self) -> dict:
        self.epoch += 1
        start = wallclock.perf_counter()
        stats = EpochStats()
        self.network.train()
        if self.cfg.objective == "rollout":
            self.rollouts(stats)
        else:
            self.collect(stats)
            self.replay(stats)
        metrics = stats.metrics(wallclock.perf_counter() - start, len(self.buffer))
        self.metrics.append(metrics)
        return metrics

    # checkpoints ---------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Everything needed to continue exactly from the end of the current epoch (copied),
        taken every epoch; the trajectory is its length here, since rows are only appended
        (:meth:`checkpoint` saves them)."""
        clone = lambda d: {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in d.items()}  # noqa: E731
        return {
            "epoch": self.epoch,
            "model": clone(self.network.state_dict()),
            "optimizer": _clone_nested(self.optimizer.state_dict()),
            "config": config_values(self.cfg),
            "train_ic": {"mass": self.initial.mass.cpu(), "position": self.initial.position.cpu(),
                         "velocity": self.initial.velocity.cpu()},
            "metrics": list(self.metrics),
            "trajectory": len(self.trajectory),
            "trainer": {"orbits": clone(self.orbits.state_dict()), "buffer": self.buffer.state_dict(),
                        "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def checkpoint(self, snapshot: dict, directory: Path) -> dict:
        """What a checkpoint of ``snapshot`` in ``directory`` holds; the trajectory's rows up to
        the snapshot go to the trajectory file there first."""
        return {**snapshot, "trajectory": self.trajectory.save(directory, snapshot["trajectory"])}

    def restore(self, ckpt) -> None:
        """Continue from a loaded checkpoint (:class:`nbody_engine.runs.checkpoints.Checkpoint`);
        a trainer state that is not what :meth:`snapshot` writes is an InputError naming the file."""
        data = ckpt.data
        self.epoch = int(data["epoch"])
        load_weights(self.network, data["model"], ckpt.path)
        self.metrics = list(data["metrics"])
        self.trajectory = TrainTrajectory.from_checkpoint(data.get("trajectory"), ckpt.path)
        try:
            self.optimizer.load_state_dict(data["optimizer"])
            self._restore_trainer(data["trainer"])
        except (KeyError, TypeError, AttributeError, ValueError, RuntimeError, IndexError):
            raise InputError(f"checkpoint '{ckpt.path}' holds a trainer state (what resuming needs) that is not what "
                             "this tool writes; resume from an earlier checkpoint, or train again without resume"
                             ) from None

    def _restore_trainer(self, t: dict) -> None:
        """The orbits, replay buffer and random generators of a snapshot's ``trainer``; shapes that
        differ from this run's raise ValueError before anything is changed."""
        current = self.orbits.state_dict()
        orbits, buffer = dict(t["orbits"]), dict(t["buffer"])
        if set(orbits) != set(current) or any(tuple(orbits[k].shape) != tuple(v.shape) for k, v in current.items()):
            raise ValueError("orbits")
        if buffer and (set(buffer) != {"mass", "position", "velocity", "rows"}
                       or tuple(buffer["position"].shape[1:]) != tuple(current["position"].shape[1:])
                       or tuple(buffer["rows"].shape[1:]) != tuple(current["rows"].shape[1:])
                       or len({len(v) for v in buffer.values()}) != 1):
            raise ValueError("buffer")
        generator, torch_rng = t["generator"].clone(), t["torch_rng"].clone()
        self.generator.set_state(generator)
        torch.set_rng_state(torch_rng)
        self.orbits.load_state_dict({k: v.to(current[k]) for k, v in orbits.items()})
        self.buffer.load_state_dict({k: v.to(self.initial.position) for k, v in buffer.items()})
        if t["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(t["cuda_rng"])


def _clone_nested(value):
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone_nested(v) for v in value]
    return value


def make_optimizer(cfg: Config, parameters) -> torch.optim.Optimizer:
    # fused: one kernel per parameter instead of a dozen small operations in every replay iteration
    if cfg.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@dataclass
class EpochStats:
    attempts: int = 0
    accepted: int = 0
    retrains: int = 0
    replay_iterations: int = 0
    orbit_restarts: int = 0
    rollouts: int = 0  # optimizer steps of the rollout objective
    replay_pass_rate: float = float("nan")
    replay_loss: float = float("nan")

    def __post_init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = {"loss": [], "rel_dE": [], "rel_dL": [], "dt": []}

    def add_accepted(self, att: Attempt, ok: torch.Tensor) -> None:
        self.accepted += int(ok.sum())
        for key, t in (("loss", att.loss), ("rel_dE", att.rel_dE), ("rel_dL", att.rel_dL), ("dt", att.dt)):
            self.values[key].append(t[ok].detach())

    def add_rollout(self, result: RolloutResult) -> None:
        self.attempts += result.loss.shape[0]
        self.rollouts += 1
        self.values["loss"].append(result.loss.detach())
        self.values["rel_dE"].append(result.max_rel_dE)

    def metrics(self, epoch_time: float, buffer_size: int) -> dict:
        v = {k: torch.cat(t).double() if t else torch.full((1,), float("nan"), dtype=torch.float64)
             for k, t in self.values.items()}
        return {
            "loss": float(v["loss"].mean()),
            "rel_dE_mean": float(v["rel_dE"].mean()), "rel_dE_max": float(v["rel_dE"].max()),
            "rel_dL_mean": float(v["rel_dL"].mean()), "rel_dL_max": float(v["rel_dL"].max()),
            "dt_mean": float(v["dt"].mean()), "dt_min": float(v["dt"].min()), "dt_max": float(v["dt"].max()),
            "accepted_steps": self.accepted, "attempts": self.attempts,
            "retrain_iterations": self.retrains, "orbit_restarts": self.orbit_restarts,
            # a rollout epoch accepts nothing: its rate is undefined, not 0
            "acceptance_rate": self.accepted / self.attempts if self.attempts and not self.rollouts else float("nan"),
            "replay_iterations": self.replay_iterations, "replay_pass_rate": self.replay_pass_rate,
            "replay_loss": self.replay_loss, "replay_buffer_size": buffer_size, "epoch_time_s": epoch_time,
            **({"rollout_steps": self.rollouts} if self.rollouts else {}),
        }
