"""Is the learned stepper worth it? ``nbody-runner evaluate``: a checkpoint's learned policy
against strong baselines on a problem suite, with a reference trajectory for every problem.

- :mod:`.problems`: the suite (``eval_suite``): held-out Kepler orbits, hierarchical triples,
  a binary-single scattering, Burrau's Pythagorean problem, a small cold cluster; opt-in,
  unequal-mass binaries, planetary systems and 64-body Plummer spheres (:mod:`.systems`);
- :mod:`.reference`: REBOUND's IAS15 (or our converged run) for where each system truly ends;
- :mod:`.baselines`: fixed, classic, analytic, time-symmetric and drift-corrected analytic steps,
  each over a sweep of its knob (``eval_eps``);
- :mod:`.metrics`: energy, angular momentum and position errors, force evaluations, steps, time;
- :mod:`.verdicts`: the learned policy against each baseline at equal force evaluations and
  equal wall time, per system and as each ratio's median and range over a problem's family;
- :mod:`.report`: ``data/<save_name>/eval/`` gets ``table.csv``, ``table.json`` and ``pareto.png``.

Every knob value of a baseline and every system of a problem run as one batched simulation (a
policy's knob is a tensor, one value per system), so the sweep costs about as many steps as its
finest setting alone.
"""

from __future__ import annotations

import time as wallclock

import torch

from ..config.errors import InputError, NonFiniteStateError
from ..config.loading import Config, adopt_ic_file
from ..events import PolicyMeasured, Reporter, RunFinished, RunStarted
from ..integrators.loop import StopRule, simulate
from ..integrators.ttl import TimeTransformedLeapfrog
from ..learning.network import LearnedDt
from ..learning.time_transform import LearnedOmega, OmegaNetwork
from ..physics.gravity import Gravity, State
from ..physics.runtime import torch_setup
from ..runs.checkpoints import load_checkpoint
from ..runs.directory import RunDirectory
from ..runs.trained_policy import checked_omega_network, learned_policy_from_checkpoint
from .baselines import BASELINES
from .competitors import WHFAST, whfast_rows
from .long_run import LONG_POLICIES, attach, equal_cost_eps, long_eps, long_metrics
from .metrics import reference_rows, rows_of
from .problems import Problem, SUITE, problems_of, training_family
from .reference import rebound_available, reference_for
from .report import long_text, table_text, write_evaluation
from .verdicts import all_verdicts, learned_versus, ratio_statistics, verdict_text

__all__ = ["SUITE", "run_evaluation", "learned_versus", "long_text", "table_text", "verdict_text"]

COST_STEPS = 64  # steps of one system that measure a policy's time per step


def run_evaluation(cfg: Config, reporter: Reporter | None = None, data_dir=None) -> dict:
    """Run the comparison described in the module docstring; returns the rows, the verdicts,
    the reference used per problem and the paths written."""
    adopt_ic_file(cfg, "evaluate")
    run = RunDirectory(cfg.save_name, data_dir)
    with run.lock():
        return _evaluate_into(run, cfg, reporter or Reporter())


def _evaluate_into(run: RunDirectory, cfg: Config, reporter: Reporter) -> dict:
    if not cfg.model_path:
        raise InputError("evaluate needs 'model_path' (--model-path), the checkpoint whose policy is evaluated, "
                         "or the 'save_name' of the training that wrote it")
    device, dtype = torch_setup(cfg)
    checkpoints = [cfg.model_path, *cfg.eval_model_paths]
    learned = [_learned(cfg, path, device) for path in checkpoints]
    problems = problems_of(cfg, dtype, device)
    reporter.emit(RunStarted("evaluate", cfg.save_name, len(problems) * (len(BASELINES) + 2)))
    rows, references, extended = [], {}, {}
    for problem in problems:
        reference = reference_for(problem, cfg.eval_reference, cfg.eps)
        references[problem.name] = reference.name
        mine, extended[problem.name] = _problem_rows(problem, learned, cfg.eval_eps, reference, reporter)
        _long_runs(problem, mine, learned, long_eps(cfg.eval_eps, cfg.eps), cfg.eval_long_periods, reporter)
        rows += reference_rows(problem, reference) + mine
        if problem.kepler_split and rebound_available():
            rows += whfast_rows(problem, cfg.eval_eps, reference)
    trained = [load_checkpoint(path).config for path in checkpoints]
    families = {(p.name, k): training_family(p, config) for p in problems for k, config in enumerate(trained)}
    for row in rows:  # a baseline's row: in or out of the first checkpoint's family
        row["family"] = families[(row["problem"], row.get("checkpoint") or 0)][row["system"]]
    competitors = [b.name for b in BASELINES] + ([WHFAST] if any(r["policy"] == WHFAST for r in rows) else [])
    verdicts = all_verdicts(rows, competitors)
    statistics = ratio_statistics(verdicts)
    notes = [p.unit_note for p in problems if p.unit_note]
    if not rebound_available():
        notes.append("IAS15 and WHFast rows absent: rebound is not installed (pip install 'nbody-explorer[reference]')")
    notes += [f"{problem}: the {name} sweep was extended to eps {', '.join(f'{e:g}' for e in added)} to bracket "
              f"the learned policy's cost" for problem, by_name in extended.items() for name, added in by_name.items()]
    outputs = write_evaluation(rows, verdicts, statistics, references, run.root / "eval", checkpoints, notes)
    result = {"rows": rows, "verdicts": verdicts, "statistics": statistics, "references": references, "notes": notes,
              "outputs": outputs}
    reporter.emit(RunFinished("evaluate", result))
    return result


def _learned(cfg: Config, path: str, device) -> LearnedDt | OmegaNetwork:
    """The learned dt policy of the checkpoint at ``path``, or its learned time transformation's
    network (ml_ttl)."""
    ckpt = load_checkpoint(path)
    if ckpt.config["integrator_mode"] == "ml_ttl":
        return checked_omega_network(ckpt).to(device=device)
    with cfg.param.update(model_path=path):
        return learned_policy_from_checkpoint(cfg, device, as_trained=True)[0]


def _problem_rows(problem: Problem, checkpoints: list[LearnedDt | OmegaNetwork], eps: list[float], reference,
                  reporter: Reporter) -> tuple[list[dict], dict[str, list[float]]]:
    """Each checkpoint's learned rows (``checkpoint``: its index), then every baseline's over
    ``eps`` (extended to bracket the learned policies' costs, :func:`_bracketing`), on one
    problem; and the eps each sweep was extended by."""
    gravity = Gravity(problem.softening)
    knob = torch.tensor(eps, dtype=problem.state.position.dtype, device=problem.state.position.device)
    rows = []
    for k, learned in enumerate(checkpoints):
        rows += [row | {"checkpoint": k} for row in _learned_rows(problem, learned, eps, reference, reporter)]
    learned_rows = list(rows)
    extended = {}
    for baseline in BASELINES:
        make = lambda values, unit, b=baseline: b.make(values, unit, gravity)  # noqa: E731
        curve = _measured(problem, baseline.name, list(eps), make, reference, reporter, knob)
        added = _bracketing(problem, baseline.name, make, curve, learned_rows, reference, reporter)
        if added:
            extended[baseline.name] = sorted({r["eps"] for r in added})
        rows += curve + added
    return rows, extended


def _learned_rows(problem: Problem, learned: LearnedDt | OmegaNetwork, eps: list[float], reference,
                  reporter: Reporter) -> list[dict]:
    """One checkpoint's rows: one point, or a curve over ``eps`` for a network that takes the
    accuracy asked for, or for a learned time transformation, whose knob is the fictitious step
    ``h = eps Omega(q0) tau(q0)``."""
    knob = torch.tensor(eps, dtype=problem.state.position.dtype, device=problem.state.position.device)
    make = lambda eta, _unit: _learned_policy(learned, Gravity(problem.softening), eta)  # noqa: E731
    if _takes_eps(learned):
        return _measured(problem, "learned", list(eps), make, reference, reporter, knob)
    return _measured(problem, "learned", [None], make, reference, reporter)


def _takes_eps(learned: LearnedDt | OmegaNetwork) -> bool:
    """Whether the learned policy has an accuracy knob (a curve over eps, as a baseline has)."""
    return isinstance(learned, OmegaNetwork) or learned.network.conditioned


def _learned_policy(learned: LearnedDt | OmegaNetwork, gravity: Gravity, eps: torch.Tensor | None):
    if isinstance(learned, OmegaNetwork):
        return TimeTransformedLeapfrog(LearnedOmega(learned, gravity.softening), gravity, eps=eps)
    return LearnedDt(learned.network, learned.feature_type, learned.history_len, gravity, eps)


def _long_runs(problem: Problem, rows: list[dict], checkpoints: list[LearnedDt | OmegaNetwork], eps: float,
               periods: float, reporter: Reporter) -> None:
    """The long-run metrics (:mod:`.long_run`) of LONG_POLICIES onto their rows: each checkpoint's
    learned policy (at ``eps`` where it has the knob), each baseline, system by system, at the knob
    value of its sweep that costs what the first checkpoint does (:func:`.long_run.equal_cost_eps`)."""
    gravity = Gravity(problem.softening)
    systems = range(problem.state.batch_size)
    knob = lambda at: problem.state.position.new_tensor([at[b] for b in systems])  # noqa: E731
    for k, learned in enumerate(checkpoints):
        at = dict.fromkeys(systems, eps if _takes_eps(learned) else None)
        make = lambda _unit, learned=learned, at=at: _learned_policy(  # noqa: E731
            learned, gravity, None if at[0] is None else knob(at))
        attach(rows, "learned", at, long_metrics(problem, make, periods, reporter), k)
    first = {r["system"]: r["evals_per_period"] for r in rows if r["policy"] == "learned" and r["checkpoint"] == 0
             and r["eps"] == (eps if _takes_eps(checkpoints[0]) else None)}
    for baseline in (b for b in BASELINES if b.name in LONG_POLICIES):
        at = equal_cost_eps(rows, baseline.name, first)
        make = lambda unit, b=baseline, at=at: b.make(knob(at), unit, gravity)  # noqa: E731
        attach(rows, baseline.name, at, long_metrics(problem, make, periods, reporter))


EXTENSIONS = 3  # times a sweep is extended on each side, each time by a factor SWEEP_FACTOR in eps
SWEEP_FACTOR = 4.0
LARGEST_EPS = 2.0  # beyond this no step size rule resolves an orbit


def _bracketing(problem: Problem, name: str, make, curve: list[dict], learned: list[dict], reference,
                reporter: Reporter) -> list[dict]:
    """Rows at eps beyond the sweep's ends, run until every system's sweep spans the costs of
    its ``learned`` rows (or EXTENSIONS times a side, or eps beyond LARGEST_EPS, or a run that
    is no longer finite): without them a learned point outside the sweep has no verdict."""
    added: list[dict] = []
    for finer in (True, False):
        for _ in range(EXTENSIONS):
            rows = curve + added
            if not _beyond(rows, learned, finer):
                break
            known = [r["eps"] for r in rows]
            eps = min(known) / SWEEP_FACTOR if finer else max(known) * SWEEP_FACTOR
            if eps > LARGEST_EPS:
                break
            try:
                added += _measured(problem, name, [eps], make, reference, reporter, problem.state.position.new_tensor(
                    [eps]))
            except NonFiniteStateError:
                break
    return added


def _beyond(rows: list[dict], learned: list[dict], costlier: bool) -> bool:
    """Whether a learned point costs more (``costlier``) or less than every row of its system."""
    for point in learned:
        costs = [r["force_evals"] for r in rows if r["system"] == point["system"]]
        if (point["force_evals"] > max(costs)) if costlier else (point["force_evals"] < min(costs)):
            return True
    return False


def _tiled(state: State, copies: int) -> State:
    """``copies`` copies of the batch one after another: system b of copy k is system k * B + b."""
    return State(*(t.repeat(copies, *[1] * (t.dim() - 1)) for t in (state.mass, state.position, state.velocity,
                                                                      state.time)))


def _measured(problem: Problem, name: str, eps: list, make, reference, reporter: Reporter,
              knob: torch.Tensor | None = None) -> list[dict]:
    """Rows of policy ``name`` over every knob value and system of ``problem``, in one batch.
    ``make(knob, unit)`` gives the policy of systems with one knob value and time unit each."""
    reporter.cancel.raise_if_cancelled()
    reporter.emit(PolicyMeasured(problem.name, name))
    systems = problem.state.batch_size
    copies = len(eps)
    per_column = None if knob is None else knob.repeat_interleave(systems)
    state = _tiled(problem.state, copies)
    gravity = Gravity(problem.softening)
    policy = make(per_column, problem.time_unit.repeat(copies))
    try:
        traj = simulate(state, policy, gravity, StopRule(t_end=problem.t_end.repeat(copies)), reporter,
                        phase="evaluate")
    except NonFiniteStateError as err:
        raise NonFiniteStateError(f"evaluate, problem '{problem.name}', policy '{name}': {err}") from None
    first = problem.state.select(slice(0, 1))
    alone = make(None if knob is None else knob[:1], problem.time_unit[:1])
    return rows_of(problem, name, eps, traj, reference, _seconds_per_step(first, alone, gravity))


def _seconds_per_step(state: State, policy, gravity: Gravity) -> float:
    """A policy's wall time per step on one system."""
    start = wallclock.perf_counter()
    simulate(state, policy, gravity, StopRule(max_steps=COST_STEPS))
    return (wallclock.perf_counter() - start) / COST_STEPS
