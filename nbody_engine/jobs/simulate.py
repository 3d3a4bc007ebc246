"""The simulation job: a resolved Config in, a finished ``sim/<label>/`` out, progress
reported as events. The headless runner and the explorer both call :func:`run_simulation`;
neither re-implements what happens inside.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config.errors import InputError, RunCancelled
from ..config.loading import Config, build_config, check_multi_orbit, config_values
from ..events import Reporter, RunCancelledEvent, RunFailed, RunFinished, RunStarted, json_safe
from ..integrators.leapfrog import leapfrog_step
from ..integrators.loop import StopRule, Trajectory, period_of, simulate
from ..integrators.policies import analytic_or_fixed, pairwise_timescale
from ..integrators.ttl import LogHamiltonian, TimeTransformedLeapfrog
from ..physics.gravity import State, relative_errors
from ..physics.initial_conditions import check_start, kepler_family, load_ic_file, random_system
from ..physics.runtime import gravity_of, resolve_seed, torch_setup
from ..reporting.curves import simulation_curves
from ..reporting.drawing import draw
from ..reporting.movie import check_encoder, write_run_movie
from ..runs.checkpoints import load_checkpoint
from ..runs.directory import RunDirectory, write_json, write_npz
from ..runs.trained_policy import learned_policy_from_checkpoint, learned_ttl_from_checkpoint

DEFAULT_STEPS = 1000


def simulation_initial_state(cfg: Config, generator: torch.Generator, device, dtype,
                             train_ic: State | None = None) -> State:
    """The systems a simulation starts from, by the spec's rules: checkpoint ICs
    (``use_train_ic``), an IC file (``ic_path``), sampled Kepler orbits (``multi_orbit_sim``,
    appended to the checkpoint ICs when both are asked for), or one random system."""
    parts: list[State] = []
    if cfg.use_train_ic:
        if train_ic is None:
            raise InputError("'use_train_ic' needs a 'model_path' checkpoint that stores training ICs")
        parts.append(train_ic.to(device=device, dtype=dtype))
    elif cfg.ic_path:
        parts.append(load_ic_file(cfg.ic_path, cfg.dim, dtype, device))
    if cfg.multi_orbit_sim:
        check_multi_orbit(cfg)
        parts.append(kepler_family(cfg.num_orbits, (cfg.e_min, cfg.e_max), (cfg.a_min, cfg.a_max), mass=cfg.mass,
                                   dim=cfg.dim, generator=generator, dtype=dtype, device=device))
    if not parts:
        parts.append(random_system(cfg.num_particles, cfg.dim, mass=cfg.mass, pos_scale=cfg.pos_scale,
                                   vel_scale=cfg.vel_scale, generator=generator, dtype=dtype, device=device))
    return concatenate_states(parts)


def systems_source(cfg: Config) -> str:
    """Where a simulation's systems come from, as a message names them."""
    if cfg.use_train_ic:
        return f"the training systems stored in checkpoint '{cfg.model_path}'"
    if cfg.ic_path:
        return f"IC file '{cfg.ic_path}'"
    if cfg.multi_orbit_sim:
        return "the sampled Kepler orbits (mass, e_min/e_max, a_min/a_max)"
    return "the random system (num_particles, mass, pos_scale, vel_scale)"


def check_first_step(policy, state: State, gravity, cfg: Config) -> None:
    """One trial step of ``policy`` from ``state`` (not recorded): a step that leaves the state
    non-finite at once is a setting, not a simulation, to report (``dt = 1e300``)."""
    with torch.inference_mode():
        if isinstance(policy, TimeTransformedLeapfrog):
            dt, after = policy.first_step(state)
            acc_after, _ = gravity(after, with_potential=False)
        else:
            acc, _ = gravity(state, with_potential=False)
            dt = policy.dt(state, policy.init(state), acc)
            after, acc_after, _ = leapfrog_step(state, dt, acc, gravity, with_potential=False)
        finite = all(bool(torch.isfinite(t).all()) for t in (dt, after.position, after.velocity, acc_after))
        if finite:
            return
        longest = float(dt.max())
        scale = float(pairwise_timescale(state, gravity.softening).min())
    key = "dt" if cfg.integrator_mode == "analytic" and cfg.dt > 0 else \
        "eps" if cfg.integrator_mode in ("analytic", "ttl", "ml_ttl") else "model_path"
    raise InputError(f"the first step (dt = {longest:.3g}) already makes the state non-finite; the systems' "
                     f"shortest time scale is {scale:.3g}: '{key}' = {getattr(cfg, key)} is far too large for them")


def concatenate_states(parts: list[State]) -> State:
    shapes = {p.position.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise InputError(f"initial conditions of different shapes cannot share a batch: {sorted(shapes)}")
    return State(*(torch.cat(ts) for ts in zip(*((p.mass, p.position, p.velocity, p.time) for p in parts))))


def stop_rule(cfg: Config, state: State) -> StopRule:
    """The first limit that is set: ``steps > 0``, ``duration``, ``Nperiod`` periods (two-body
    bound orbits), else 1000 steps."""
    if cfg.steps > 0:
        return StopRule(max_steps=cfg.steps)
    if cfg.duration is not None:
        return StopRule(t_end=torch.full_like(state.time, cfg.duration))
    period = period_of(state.mass, state.position, state.velocity)
    if cfg.Nperiod > 0 and bool(torch.isfinite(period).all()):
        return StopRule(t_end=cfg.Nperiod * period)
    return StopRule(max_steps=DEFAULT_STEPS)


def summarize(traj: Trajectory, period: np.ndarray, dim: int) -> dict:
    """The run's summary: steps and force evaluations; energy, momentum and angular momentum
    initial, final and residual (final - initial; for vectors the norm of the difference); max
    |dE/E|; wall time.
    One system gives scalars, a batch gives one list entry per system."""
    E, P, L = traj.energy, traj.momentum, traj.angular_momentum
    rel_dE, rel_dL = relative_errors(E, L)
    L_change = L[-1] - L[0]
    summary = {
        "steps": traj.steps,
        "force_evals": traj.force_evals,
        "time_final": traj.time[-1],
        "energy_initial": E[0], "energy_final": E[-1], "energy_residual": E[-1] - E[0],
        "rel_energy_error_final": rel_dE[-1],
        "max_rel_energy_error": rel_dE.max(0),
        "momentum_initial": P[0], "momentum_final": P[-1],
        "momentum_residual": np.linalg.norm(P[-1] - P[0], axis=-1),
        "angular_momentum_initial": L[0], "angular_momentum_final": L[-1],
        "angular_momentum_residual": np.abs(L_change) if dim == 2 else np.linalg.norm(L_change, axis=-1),
        "max_rel_angular_momentum_error": rel_dL.max(0),
        "dt_min": np.where(traj.dt[1:] > 0, traj.dt[1:], np.inf).min(0),
        "dt_max": traj.dt[1:].max(0),
    }
    if np.isfinite(period).all():
        summary["period"] = period
        summary["steps_per_period"] = traj.steps / (traj.time[-1] / period)
    single = traj.energy.shape[1] == 1
    out = {k: json_safe(v[0] if single else v) for k, v in summary.items()}
    out["num_systems"] = int(traj.energy.shape[1])
    out["wall_time_s"] = traj.wall_time_s
    out["stepper"] = traj.path
    return out


def _write_simulation_outputs(cfg: Config, run: RunDirectory, traj: Trajectory, period, summary: dict) -> dict:
    """trajectory.npz, summary.json, report.png and (with ``movie``) the movie; returns their paths."""
    label = sim_label(cfg)
    out_dir = run.sim_dir(label)
    outputs = {"summary": out_dir / "summary.json", "trajectory": out_dir / "trajectory.npz",
               "report": out_dir / "report.png"}
    arrays = traj.arrays()
    report = draw("simulation_report", simulation_curves(arrays), outputs["report"],
                  f"{label} simulation '{cfg.save_name}'")
    write_npz(outputs["trajectory"], {**arrays, "period": period})
    write_json(outputs["summary"], summary)
    report()
    if cfg.movie:
        outputs["movie"] = write_run_movie(run.movie_path(cfg.movie_dir, label), arrays,
                                           f"{label} '{cfg.save_name}'", cfg)
    return {k: str(v) for k, v in outputs.items()}


def sim_label(cfg: Config) -> str:
    return cfg.integrator_mode + ("_multi" if cfg.multi_orbit_sim else "")


def run_simulation(cfg: Config, reporter: Reporter | None = None, data_dir=None) -> dict:
    """Simulate ``cfg`` and write its run directory; returns the summary (with ``outputs``)."""
    run = RunDirectory(cfg.save_name, data_dir)
    with run.lock():
        return _simulate_into(run, cfg, reporter or Reporter())


def _simulate_into(run: RunDirectory, cfg: Config, reporter: Reporter) -> dict:
    device, dtype = torch_setup(cfg)
    if cfg.movie:
        check_encoder()
    generator = torch.Generator().manual_seed(resolve_seed(cfg))
    policy, train_ic = simulation_policy(cfg, device)
    state = simulation_initial_state(cfg, generator, device, dtype, train_ic)
    gravity = gravity_of(cfg)
    check_start(state, gravity, systems_source(cfg))
    check_first_step(policy, state, gravity, cfg)
    stop = stop_rule(cfg, state)
    period = period_of(state.mass, state.position, state.velocity).cpu().numpy()
    reporter.emit(RunStarted("simulate", cfg.save_name, stop.max_steps or 0, config_values(cfg)))
    try:
        traj = simulate(state, policy, gravity, stop, reporter, compile=cfg.compile,
                        record_every=cfg.record_every)
    except RunCancelled:
        reporter.emit(RunCancelledEvent("simulate"))
        raise
    except Exception as err:
        reporter.emit(RunFailed("simulate", str(err)))
        raise
    summary = summarize(traj, period, cfg.dim)
    summary["outputs"] = _write_simulation_outputs(cfg, run, traj, period, summary)
    reporter.emit(RunFinished("simulate", summary))
    return summary


def simulation_policy(cfg: Config, device):
    """The dt policy (or the time-transformed leapfrog) ``integrator_mode`` asks for, and the
    training ICs of its checkpoint (if any)."""
    if cfg.integrator_mode in ("analytic", "ttl"):
        if cfg.use_train_ic and not cfg.model_path:
            raise InputError("'use_train_ic' needs 'model_path' (the checkpoint holding the training ICs)")
        train_ic = None
        if cfg.model_path and cfg.use_train_ic:
            train_ic = load_checkpoint(cfg.model_path).train_ic
        if cfg.integrator_mode == "ttl":
            return TimeTransformedLeapfrog(LogHamiltonian(), gravity_of(cfg), eps=cfg.eps), train_ic
        return analytic_or_fixed(cfg.dt, cfg.eps, gravity_of(cfg), cfg.time_symmetric), train_ic
    if cfg.integrator_mode == "ml_ttl":
        return learned_ttl_from_checkpoint(cfg, device)
    return learned_policy_from_checkpoint(cfg, device)


def baseline_mode(integrator_mode: str) -> str | None:
    """The classical scheme a simulation of ``integrator_mode`` is compared with: log-H (``ttl``)
    for the learned time transformation (an untrained one is log-H, so it is judged against it),
    the analytic step for the others, none for the analytic step itself."""
    return {"analytic": None, "ml_ttl": "ttl"}.get(integrator_mode, "analytic")


def compare_with_baseline(cfg: Config, reporter: Reporter | None = None, data_dir=None) -> dict:
    """Simulate what ``cfg`` simulated (same seed, initial conditions and stop rule) with its
    :func:`baseline_mode`, for a side-by-side comparison."""
    twin = build_config(config_values(cfg) | {"integrator_mode": baseline_mode(cfg.integrator_mode)})
    return run_simulation(twin, reporter, data_dir)
