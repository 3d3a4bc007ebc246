"""Is the learned stepper worth it? The learned policy of a checkpoint against two baselines at
several ``eps``, on held-out initial conditions, each for ``Nperiod`` periods: the analytic
policy (:func:`~nbody_engine.policies.pairwise_timescale`, what ``integrator_mode = "analytic"``
runs) and the classic criterion ``eps * min_i sqrt(r_i,nearest / |a_i|)``
(:func:`~nbody_engine.policies.nearest_neighbour_timescale`, upstream's and the literature's).
With ``time_symmetric`` a third: the time-symmetrized analytic policy
(:class:`~nbody_engine.policies.TimeSymmetricDt`), whose energy error does not drift; it
evaluates the forces twice per step, so equal steps are not equal cost (compare wall times).

Per policy and system: steps per period, max and final |dE/E|, max |dL/L| and wall time;
written to ``data/<save_name>/eval/`` as ``table.csv``, ``table.json`` and a Pareto plot
``pareto.png`` (steps per period against max |dE/E|: lower left is better).
"""

from __future__ import annotations

import csv
import io
import math

import matplotlib
import numpy as np
import torch
from matplotlib.lines import Line2D

from .config import Config
from .errors import InputError
from .events import Reporter, RunFinished, RunStarted
from .initial_conditions import kepler_orbit, load_ic_file
from .integrate import StopRule, period_of, simulate
from .runtime import gravity_of, torch_setup
from .model import learned_policy_from_checkpoint
from .physics import State
from .plots import new_figure, relative_errors, save_figure
from .policies import AnalyticDt, ClassicDt, TimeSymmetricDt
from .runs import RunDirectory, write_json, write_text

SYMMETRIZED = "analytic-symmetric"
BASELINE_STYLES = {"analytic": "o-", "classic": "s--", SYMMETRIZED: "^:"}  # marker, then line style
COLUMNS = ("policy", "eps", "system", "e", "steps_per_period", "max_rel_dE", "final_rel_dE", "max_rel_dL",
           "wall_time_s")


def held_out_systems(cfg: Config, device, dtype) -> tuple[list[State], list[float | None]]:
    """One state per evaluated system, and its eccentricity (None for IC-file systems)."""
    if cfg.ic_path:
        batch = load_ic_file(cfg.ic_path, cfg.dim, dtype, device)
        return [batch.select(slice(i, i + 1)) for i in range(batch.batch_size)], [None] * batch.batch_size
    bad = [e for e in cfg.eval_e if not 0 <= e < 1]
    if bad:
        raise InputError(f"'eval_e' holds {bad}: eccentricities of bound orbits lie in [0, 1)")
    return ([kepler_orbit(e, cfg.eval_a, mass=cfg.mass, dim=cfg.dim, dtype=dtype, device=device) for e in cfg.eval_e],
            list(cfg.eval_e))


def _stop(cfg: Config, state: State) -> StopRule:
    period = period_of(state.mass, state.position, state.velocity)
    if bool(torch.isfinite(period).all()) and cfg.Nperiod > 0:
        return StopRule(t_end=cfg.Nperiod * period)
    if cfg.duration is not None:
        return StopRule(t_end=torch.full_like(state.time, cfg.duration))
    raise InputError("evaluate runs each system for 'Nperiod' periods, which needs bound two-body systems; "
                     "for other ICs set 'duration'")


def _row(policy: str, eps, index: int, e, traj, period: float) -> dict:
    rel_dE, rel_dL = relative_errors(traj.energy, traj.angular_momentum)
    steps = int(traj.steps[0])
    periods = float(traj.time[-1, 0]) / period if math.isfinite(period) else float("nan")
    return {"policy": policy, "eps": eps, "system": index, "e": e,
            "steps_per_period": steps / periods if periods else float("nan"),
            "max_rel_dE": float(rel_dE.max()), "final_rel_dE": float(rel_dE[-1, 0]),
            "max_rel_dL": float(np.nanmax(rel_dL)) if np.isfinite(rel_dL).any() else float("nan"),
            "wall_time_s": traj.wall_time_s}


def evaluate(cfg: Config, reporter: Reporter | None = None, data_dir=None) -> dict:
    """Run the comparison described in the module docstring; returns the table and file paths."""
    run = RunDirectory(cfg.save_name, data_dir)
    with run.lock():
        return _evaluate_into(run, cfg, reporter or Reporter())


def _evaluate_into(run: RunDirectory, cfg: Config, reporter: Reporter) -> dict:
    if not cfg.model_path:
        raise InputError("evaluate needs 'model_path' (--model-path), the checkpoint whose policy is evaluated, "
                         "or the 'save_name' of the training that wrote it")
    bad = [eps for eps in cfg.eval_eps if not eps > 0]
    if bad:
        raise InputError(f"'eval_eps' holds {bad}: the baselines' eps values must be positive")
    device, dtype = torch_setup(cfg)
    learned, _ = learned_policy_from_checkpoint(cfg, device, as_trained=True)
    gravity = gravity_of(cfg)
    systems, eccentricities = held_out_systems(cfg, device, dtype)
    baselines = baseline_policies(cfg, gravity)
    policies = [("learned", None, learned)] + [(name, eps, make(eps))
                                               for name, make in baselines.items() for eps in cfg.eval_eps]
    reporter.emit(RunStarted("evaluate", cfg.save_name, len(policies) * len(systems)))
    rows = []
    for i, (state, e) in enumerate(zip(systems, eccentricities)):
        period = float(period_of(state.mass, state.position, state.velocity)[0])
        for name, eps, policy in policies:
            reporter.cancel.raise_if_cancelled()
            traj = simulate(state, policy, gravity, _stop(cfg, state), reporter, phase="evaluate")
            rows.append(_row(name, eps, i, e, traj, period))
    verdicts = [learned_versus(rows, i, name) for i in range(len(systems)) for name in baselines]
    outputs = write_evaluation(rows, verdicts, run.root / "eval", cfg.model_path)
    result = {"rows": rows, "verdicts": verdicts, "outputs": outputs}
    reporter.emit(RunFinished("evaluate", result))
    return result


def baseline_policies(cfg: Config, gravity) -> dict:
    """The baselines by name, each a function of eps that returns its policy."""
    made = {"analytic": lambda eps: AnalyticDt(eps, gravity.softening),
            "classic": lambda eps: ClassicDt(eps, gravity)}
    if cfg.time_symmetric:
        made[SYMMETRIZED] = lambda eps: TimeSymmetricDt(AnalyticDt(eps, gravity.softening), gravity)
    return made


def learned_versus(rows: list[dict], system: int, baseline: str) -> dict:
    """The learned policy's max |dE/E| against the ``baseline`` policy's at the same steps per
    period, interpolated log-log between the eps values that bracket it (None outside them).
    ``ratio < 1`` means the learned policy beats the criterion at equal cost."""
    mine = [r for r in rows if r["system"] == system]
    learned = next(r for r in mine if r["policy"] == "learned")
    curve = sorted((r["steps_per_period"], r["max_rel_dE"]) for r in mine if r["policy"] == baseline)
    steps = learned["steps_per_period"]
    baseline_error = None
    for (s0, e0), (s1, e1) in zip(curve, curve[1:]):
        if s0 <= steps <= s1 and min(s0, e0, s1, e1) > 0:
            w = math.log(steps / s0) / math.log(s1 / s0) if s1 > s0 else 0.0
            baseline_error = math.exp(math.log(e0) + w * math.log(e1 / e0))
    ratio = learned["max_rel_dE"] / baseline_error if baseline_error else None
    return {"system": system, "e": learned["e"], "baseline": baseline, "steps_per_period": steps,
            "learned_max_rel_dE": learned["max_rel_dE"], "baseline_max_rel_dE_at_same_steps": baseline_error,
            "ratio": ratio}


def verdict_text(verdicts: list[dict]) -> str:
    lines = []
    for v in verdicts:
        label = f"e = {v['e']:.2f}" if v["e"] is not None else f"system {v['system']}"
        if v["ratio"] is None:
            lines.append(f"{label}: learned at {v['steps_per_period']:.1f} steps/period lies outside the "
                         f"{v['baseline']} eps range; widen eval_eps to compare at equal cost")
        else:
            lines.append(f"{label}: at {v['steps_per_period']:.1f} steps/period, learned max|dE/E| "
                         f"{v['learned_max_rel_dE']:.2e} vs {v['baseline']} "
                         f"{v['baseline_max_rel_dE_at_same_steps']:.2e} "
                         f"(ratio {v['ratio']:.2f}; < 1: learned is better)")
    return "\n".join(lines)


def table_text(rows: list[dict]) -> str:
    """The table as aligned text for the console."""
    head = f"{'policy':>18} {'eps':>6} {'e':>5} {'steps/period':>13} {'max|dE/E|':>10} {'final|dE/E|':>11} " \
           f"{'max|dL/L|':>10} {'wall s':>7}"
    lines = [head]
    for r in rows:
        eps = f"{r['eps']:.3g}" if r["eps"] is not None else "-"
        e = f"{r['e']:.2f}" if r["e"] is not None else str(r["system"])
        lines.append(f"{r['policy']:>18} {eps:>6} {e:>5} {r['steps_per_period']:13.1f} {r['max_rel_dE']:10.2e} "
                     f"{r['final_rel_dE']:11.2e} {r['max_rel_dL']:10.2e} {r['wall_time_s']:7.2f}")
    return "\n".join(lines)


def write_evaluation(rows: list[dict], verdicts: list[dict], directory, model_path: str) -> dict[str, str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    paths = {"csv": directory / "table.csv", "json": directory / "table.json", "pareto": directory / "pareto.png"}
    write_text(paths["csv"], buffer.getvalue())
    write_json(paths["json"], {"model_path": model_path, "rows": [_json_ready(r) for r in rows],
                               "learned_versus_baselines": [_json_ready(v) for v in verdicts]})
    pareto_plot(rows, paths["pareto"])
    return {k: str(v) for k, v in paths.items()}


def _json_ready(row: dict) -> dict:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def pareto_plot(rows: list[dict], path) -> None:
    """Steps per period against max |dE/E|: per system (a colour), one curve over eps per
    baseline (analytic solid, classic dashed, time-symmetrized analytic dotted) and the learned
    point (a star)."""
    fig, ax = new_figure(1, (7.5, 4.8))
    colors = matplotlib.colormaps["viridis"]
    systems = sorted({r["system"] for r in rows})
    styles = {name: style for name, style in BASELINE_STYLES.items() if any(r["policy"] == name for r in rows)}
    handles = []
    for k, system in enumerate(systems):
        color = colors(k / max(1, len(systems) - 1))
        mine = [r for r in rows if r["system"] == system]
        label = f"e = {mine[0]['e']:.2f}" if mine[0]["e"] is not None else f"system {system}"
        handles.append(Line2D([], [], color=color, lw=6, label=label))
        for baseline, style in styles.items():
            curve = sorted((r for r in mine if r["policy"] == baseline), key=lambda r: r["steps_per_period"])
            ax.loglog([r["steps_per_period"] for r in curve], [r["max_rel_dE"] for r in curve], style, color=color,
                      ms=4, lw=1)
            for r in curve if baseline == "analytic" else ():
                ax.annotate(f"{r['eps']:g}", (r["steps_per_period"], r["max_rel_dE"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points", color=color)
        for r in (r for r in mine if r["policy"] == "learned"):
            ax.loglog(r["steps_per_period"], r["max_rel_dE"], "*", ms=14, color=color, markeredgecolor="k")
    handles += [Line2D([], [], color="k", linestyle=style[1:], marker=style[0], ms=4, lw=1, label=baseline)
                for baseline, style in styles.items()]
    handles.append(Line2D([], [], color="w", marker="*", ms=14, markerfacecolor="grey", markeredgecolor="k",
                          label="learned"))
    ax.set_xlabel("steps per period")
    ax.set_ylabel("max |dE/E|")
    ax.set_title("learned vs the baseline criteria (numbers: the analytic policy's eps); lower left is better",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    save_figure(fig, path)
