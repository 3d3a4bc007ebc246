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
whole rollouts of the training family (:mod:`nbody_engine.rollout`).

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

from .budget import REPLAY_CAPACITY
from .checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from .config import Config, config_values
from .drawing import draw
from .errors import InputError, RunCancelled, Terminated, TrainingStalled
from .events import (CheckpointWritten, EpochFinished, MetricsFileSink, Reporter, RunCancelledEvent, RunFailed,
                     RunFinished, RunStarted, StepAccepted, StepRejected, TrajectoryChunk, json_line)
from .features import empty_rows, history_row, push_row
from .initial_conditions import check_start, kepler_family, load_ic_file, random_system
from .integrate import Gravity, leapfrog_step, period_of, relative_change, total_energy
from .model import LearnedDt, build_network, load_weights
from .movie import check_encoder, write_run_movie
from .physics import State, angular_momentum, kinetic_energy, kinetic_energy_of
from .policies import two_body_timescale
from .replay import ReplayBuffer
from .rollout import RolloutResult, periods_of, rollout_step, sample_eta
from .runs import RunDirectory, write_npz, write_text
from .runtime import gravity_of, resolve_seed, torch_setup
from .train_trajectory import TrainTrajectory
from .two_body import Binaries, Leapfrogged, relative_leapfrog, relative_start

log = logging.getLogger("nbody_engine.train")

CHECKPOINT_EVERY = 10
REPLAY_PATIENCE = 50  # replay also stops once its loss has not improved by 1% for this many iterations
NONFINITE_PENALTY = 1e3
ROUNDOFF = 1e3  # errors below ROUNDOFF * machine epsilon are rounding, not the step's doing


# --- losses -------------------------------------------------------------------------------

def band_loss(error: torch.Tensor, lower: float | tuple[float, ...], upper: float | tuple[float, ...],
              floor: float) -> torch.Tensor:
    """Squared distance in log10 space of ``error`` (B,) outside ``[lower, upper]``; or of
    ``error`` (B, K) outside one band per column (``lower``, ``upper``: K numbers each), which
    costs training one pass instead of K.

    Errors at or below ``floor`` (round-off) count as inside the band: they carry no signal.
    """
    log_err = torch.log10(error.clamp_min(floor))
    below = torch.relu(_log10(lower, error) - log_err) * (error > floor)
    above = torch.relu(log_err - _log10(upper, error))
    return below**2 + above**2


def _log10(bound: float | tuple[float, ...], like: torch.Tensor) -> float | torch.Tensor:
    if isinstance(bound, tuple):
        return like.new_tensor([math.log10(b) for b in bound])
    return math.log10(bound)


def step_loss(rel_dE: torch.Tensor, rel_dL: torch.Tensor, dt: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Per-system loss (B,): energy band plus angular-momentum band. A non-finite error costs
    NONFINITE_PENALTY, with a gradient that shrinks that system's dt.

    Above ``energy_threshold`` the energy error's gradient is taken from the leapfrog's order,
    ``|dE/E| ~ dt^2``, instead of from backpropagation: that far outside the band an attempt
    has stepped through a pericentre or an encounter with a step far too long, the error is a
    chaotic function of dt, and its true gradient can point either way, so a rejected state
    could be retrained forever without its step getting shorter."""
    floor = ROUNDOFF * torch.finfo(rel_dE.dtype).eps
    finite = torch.isfinite(rel_dE) & torch.isfinite(rel_dL)
    order_two = torch.where(finite, rel_dE.detach(), 0.0) * (dt / dt.detach()) ** 2
    rel_dE = torch.where(rel_dE.detach() > cfg.energy_threshold, order_two, rel_dE)
    safe_E = torch.where(finite, rel_dE, torch.ones_like(rel_dE))
    safe_L = torch.where(finite, rel_dL, torch.ones_like(rel_dL))
    bands = band_loss(torch.stack([safe_E, safe_L], -1), (cfg.E_lower, cfg.L_lower), (cfg.E_upper, cfg.L_upper),
                      floor)
    return torch.where(finite, bands[:, 0] + bands[:, 1], NONFINITE_PENALTY * dt / dt.detach())


# --- one attempt ------------------------------------------------------------------------

@dataclass
class Attempt:
    """The outcome of integrating each system ``n_steps`` steps with its predicted dt (the state
    reached is None in replay, which does not advance)."""

    dt: torch.Tensor
    rel_dE: torch.Tensor
    rel_dL: torch.Tensor
    loss: torch.Tensor
    after: State | None
    new_rows: torch.Tensor | None

    def accepted(self, threshold: float) -> torch.Tensor:
        return torch.isfinite(self.rel_dE) & torch.isfinite(self.rel_dL) & (self.rel_dE <= threshold)


def attempt(policy: LearnedDt, state: State, rows: torch.Tensor | None, cfg: Config, advance: bool = True) -> Attempt:
    """Integrate each system ``n_steps`` steps with its predicted dt; ``advance = False`` (replay)
    skips the history row the orbit would carry on with. Binaries take the relative
    coordinates of :mod:`.two_body`: a third of the operations to step and to differentiate."""
    gravity = policy.gravity
    with_row = bool(policy.history_len and advance)
    if Binaries.cover(state.mass, gravity):
        binaries = Binaries(state.mass, gravity.softening)
        start, acc, pot = relative_start(binaries, state)
        speed = torch.linalg.vector_norm(start.u, dim=-1, keepdim=True)
        tau = two_body_timescale(start.distance, speed, binaries.total.reciprocal()).view(-1)
        dt = policy.dt_from(state, rows, acc, pot, tau)
        run = relative_leapfrog(binaries, state, start, dt, cfg.n_steps, ends=1 + with_row if advance else 0)
    else:
        acc, pot = gravity(state)
        dt = policy.dt_from(state, rows, acc, pot)
        run = _leapfrog_run(state, dt, cfg.n_steps, gravity, acc, pot)
    rel_dE = relative_change(run.energies, run.energy0, vector=False).amax(0)
    rel_dL = relative_change(run.angular_momentum, run.angular_momentum0)
    new_rows = None
    if with_row:
        with torch.no_grad():
            row = history_row(policy.feature_type, run.before, run.acc_before, run.potential_before, run.after,
                              run.acc, dt, gravity.softening)
            new_rows = push_row(rows, row)
    return Attempt(dt, rel_dE, rel_dL, step_loss(rel_dE, rel_dL, dt, cfg), run.after, new_rows)


def _leapfrog_run(state: State, dt: torch.Tensor, n_steps: int, gravity: Gravity, acc: torch.Tensor,
                  pot: torch.Tensor) -> Leapfrogged:
    """:class:`~nbody_engine.two_body.Leapfrogged` by the general step (any N, an external field)."""
    energy0, angular0 = kinetic_energy(state) + pot, angular_momentum(state)
    s = state
    velocities, potentials = [], []
    for _ in range(n_steps):
        before, acc_before, pot_before = s, acc, pot
        s, acc, pot = leapfrog_step(s, dt, acc, gravity)
        velocities.append(s.velocity)
        potentials.append(pot)
    # the energy after every sub-step, in one pass over them all: (n_steps, B)
    energies = kinetic_energy_of(state.mass, torch.stack(velocities)) + torch.stack(potentials)
    return Leapfrogged(energy0, energies, angular0, angular_momentum(s), s, acc, pot, before, acc_before, pot_before)


# --- the systems being trained on --------------------------------------------------------

@dataclass
class Orbits:
    """Where each training system stands: state, history rows, initial conditions, period and
    whether it is paused (``stop_at_period``)."""

    state: State
    rows: torch.Tensor
    initial: State
    period: torch.Tensor
    paused: torch.Tensor

    @classmethod
    def start(cls, initial: State, policy: LearnedDt) -> Orbits:
        rows = empty_rows(initial.batch_size, policy.history_len, policy.feature_type, initial.position)
        period = period_of(initial.mass, initial.position, initial.velocity)
        return cls(initial, rows, initial, period, torch.zeros_like(initial.time, dtype=torch.bool))

    def restart_if_all_paused(self) -> None:
        if bool(self.paused.all()):
            self.restart(torch.arange(self.initial.batch_size, device=self.paused.device))

    def restart(self, index: torch.Tensor) -> None:
        """Put the systems ``index`` back at their initial conditions, with an empty history."""
        init = self.initial
        self.state = State(self.state.mass, self.state.position.index_copy(0, index, init.position[index]),
                           self.state.velocity.index_copy(0, index, init.velocity[index]),
                           self.state.time.index_copy(0, index, init.time[index]))
        self.rows = self.rows.index_fill(0, index, 0.0)
        self.paused = self.paused.index_fill(0, index, False)

    def advance(self, index: torch.Tensor, att: Attempt, keep: torch.Tensor, stop_at_period: bool) -> None:
        """Move the systems ``index[keep]`` to their accepted states."""
        idx = index[keep]
        after = att.after.select(keep).detach()
        self.state = State(self.state.mass, self.state.position.index_copy(0, idx, after.position),
                           self.state.velocity.index_copy(0, idx, after.velocity),
                           self.state.time.index_copy(0, idx, after.time))
        if att.new_rows is not None:
            self.rows = self.rows.index_copy(0, idx, att.new_rows[keep].detach())
        if stop_at_period:
            self.paused = self.paused | (self.state.time >= self.period)

    def state_dict(self) -> dict:
        return {"position": self.state.position, "velocity": self.state.velocity, "time": self.state.time,
                "rows": self.rows, "paused": self.paused}

    def load_state_dict(self, d: dict) -> None:
        self.state = State(self.initial.mass, d["position"], d["velocity"], d["time"])
        self.rows, self.paused = d["rows"], d["paused"]


def training_initial_state(cfg: Config, generator: torch.Generator, device, dtype) -> State:
    """``ic_path`` if given; else ``num_orbits`` Kepler orbits for two bodies, random systems for more."""
    if cfg.ic_path:
        return load_ic_file(cfg.ic_path, cfg.dim, dtype, device)
    if cfg.num_particles == 2:
        return kepler_family(cfg.num_orbits, (cfg.e_min, cfg.e_max), (cfg.a_min, cfg.a_max), mass=cfg.mass,
                             dim=cfg.dim, generator=generator, dtype=dtype, device=device)
    return random_system(cfg.num_particles, cfg.dim, num_systems=cfg.num_orbits, mass=cfg.mass,
                         pos_scale=cfg.pos_scale, vel_scale=cfg.vel_scale, generator=generator, dtype=dtype,
                         device=device)


def training_source(cfg: Config) -> str:
    """Where training's systems come from, as a message names them."""
    if cfg.ic_path:
        return f"IC file '{cfg.ic_path}'"
    if cfg.num_particles == 2:
        return "the sampled Kepler orbits (mass, e_min/e_max, a_min/a_max)"
    return "the random systems (num_particles, mass, pos_scale, vel_scale)"


# --- the trainer --------------------------------------------------------------------------

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
            energy = total_energy(s, self.policy.gravity)
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
        """``steps_per_epoch`` optimizer steps of the rollout objective (:mod:`nbody_engine.rollout`),
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

    def restore(self, ckpt: Checkpoint) -> None:
        data, device = ckpt.data, self.initial.position.device
        self.epoch = int(data["epoch"])
        load_weights(self.network, data["model"], ckpt.path)
        self.optimizer.load_state_dict(data["optimizer"])
        self.metrics = list(data["metrics"])
        self.trajectory = TrainTrajectory.from_checkpoint(data.get("trajectory"), ckpt.path)
        t = data["trainer"]
        self.orbits.load_state_dict({k: v.to(device) for k, v in t["orbits"].items()})
        self.buffer.load_state_dict({k: v.to(device) for k, v in t["buffer"].items()})
        self.generator.set_state(t["generator"])
        torch.set_rng_state(t["torch_rng"])
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
    # fused: one kernel per parameter instead of a dozen small operations, ~10% of a replay iteration
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


# --- the job ------------------------------------------------------------------------------

def _resume_point(cfg: Config, run: RunDirectory):
    """The checkpoint to resume from, or None when starting fresh."""
    if not cfg.resume:
        return None
    found = run.checkpoints()
    if not found:
        raise InputError(f"'resume' is set but '{run.model_dir}' holds no checkpoint; train without resume first")
    ckpt = load_checkpoint(found[-1])
    for key in ("num_particles", "dim", "feature_type", "history_len", "hidden_dims", "activation", "fourier_dim",
                "num_orbits", "seed", "optimizer"):
        if key == "seed" and "seed" not in getattr(cfg, "given_keys", ()):
            continue  # no seed asked for: the run goes on with the checkpoint's
        if ckpt.config[key] != getattr(cfg, key):
            raise InputError(f"cannot resume from '{found[-1]}': it was trained with {key} = {ckpt.config[key]!r},"
                             f" the config says {getattr(cfg, key)!r}")
    return ckpt


def run_training(cfg: Config, reporter: Reporter | None = None, data_dir=None) -> dict:
    """Train ``cfg``; write checkpoints, metrics.jsonl, config.toml and train_trajectory.npz.

    Returns ``{"checkpoint": path of the last checkpoint, "epochs": epochs completed, ...}``.
    """
    run = RunDirectory(cfg.save_name, data_dir)
    with run.lock():
        return _train_into(run, cfg, reporter)


def _train_into(run: RunDirectory, cfg: Config, reporter: Reporter | None) -> dict:
    reporter = Reporter([*(reporter.sinks if reporter else []), MetricsFileSink(run.metrics_path)],
                        reporter.cancel if reporter else None)
    resume_from = _resume_point(cfg, run)
    if resume_from is not None:
        cfg.seed = resume_from.config["seed"]
    device, dtype = torch_setup(cfg)
    if cfg.movie:
        check_encoder()
    resolve_seed(cfg)
    trainer = Trainer(cfg, reporter, device, dtype, gravity_of(cfg))
    if resume_from is not None:
        trainer.restore(resume_from)
        _rewrite_metrics(run, trainer.metrics)
    elif run.metrics_path.exists():
        run.metrics_path.unlink()
    reporter.emit(RunStarted("train", cfg.save_name, cfg.epochs, config_values(cfg)))
    return _train_loop(trainer, run, reporter)


def _rewrite_metrics(run: RunDirectory, metrics: list[dict]) -> None:
    write_text(run.metrics_path, "".join(json_line({"epoch": i, **m}) for i, m in enumerate(metrics)))


def _train_loop(trainer: Trainer, run: RunDirectory, reporter: Reporter) -> dict:
    cfg = trainer.cfg
    start = wallclock.perf_counter()
    last_saved = None
    snapshot = trainer.snapshot() if trainer.epoch >= 0 else None
    try:
        while trainer.epoch + 1 < cfg.epochs:
            metrics = trainer.run_epoch()
            snapshot = trainer.snapshot()
            reporter.emit(EpochFinished(trainer.epoch, metrics))
            out_of_time = cfg.duration is not None and wallclock.perf_counter() - start >= cfg.duration
            last = trainer.epoch + 1 == cfg.epochs or out_of_time
            if (trainer.epoch + 1) % CHECKPOINT_EVERY == 0 or last:
                last_saved = _save(run, trainer.checkpoint(snapshot, run.model_dir), reporter)
            if out_of_time:
                log.info("duration budget of %gs used up after epoch %d", cfg.duration, trainer.epoch)
                break
    except (RunCancelled, KeyboardInterrupt, TrainingStalled) as stop:
        if snapshot is not None:
            last_saved = _save(run, trainer.checkpoint(snapshot, run.model_dir), reporter)
        _write_outputs(run, trainer)
        if isinstance(stop, TrainingStalled):
            reporter.emit(RunFailed("train", str(stop)))
        else:
            reporter.emit(RunCancelledEvent("train", _stop_reason(stop)))
        raise
    except Exception as err:
        reporter.emit(RunFailed("train", str(err)))
        raise
    _write_outputs(run, trainer)
    result = {"checkpoint": str(last_saved) if last_saved else None, "epochs": trainer.epoch + 1,
              "wall_time_s": wallclock.perf_counter() - start,
              "final_metrics": trainer.metrics[-1] if trainer.metrics else {}}
    reporter.emit(RunFinished("train", result))
    return result


def _stop_reason(stop: BaseException) -> str:
    if isinstance(stop, Terminated):
        return "terminated (SIGTERM)"
    return "interrupted (Ctrl-C)" if isinstance(stop, KeyboardInterrupt) else "stopped by request"


def _save(run: RunDirectory, payload: dict, reporter: Reporter):
    path = save_checkpoint(run.checkpoint_path(payload["epoch"]), payload)
    reporter.emit(CheckpointWritten(payload["epoch"], str(path)))
    return path


def _write_outputs(run: RunDirectory, trainer: Trainer) -> None:
    """The cumulative training trajectory (every accepted state of every orbit), the training
    report PNG and, with ``movie``, the training movie."""
    if not len(trainer.trajectory):
        return
    arrays = trainer.trajectory.arrays()
    cfg = trainer.cfg
    report = draw("training_report", trainer.metrics, arrays["position"][:, :1], run.root / "train_report.png",
                  f"training '{cfg.save_name}'")
    write_npz(run.root / "train_trajectory.npz", {**arrays, "mass": trainer.initial.mass.cpu().numpy()})
    report()
    if cfg.movie:
        write_run_movie(run.movie_path(cfg.movie_dir, "train"), arrays, f"training '{cfg.save_name}'", cfg)
